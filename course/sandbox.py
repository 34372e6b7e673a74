"""Run a student's notebook kernel in a sandbox: bubblewrap (``bwrap``) and resource limits.

nbgrader executes a submission in a Jupyter kernel. Grading starts that kernel from a kernelspec whose
``argv`` is this module (``python -m course.sandbox [limits] -- -f {connection_file}``): it sets the
limits on itself (address space, CPU time, file size; they are inherited) and then replaces itself with

    bwrap [an empty filesystem with /usr, Python and labkit read-only, the notebook's folder and the
           kernel's connection folder writable, a private /tmp] -- python -m ipykernel_launcher -f ...

with new user, network, PID, IPC and UTS namespaces: the kernel runs as ``nobody`` without
capabilities, sees neither the repository (``solutions/``), the gradebook nor any other student's work,
and has no network. The kernel talks to nbgrader over Unix sockets in the connection folder (the
``ipc`` transport), which a kernel without a network can still reach. Where bubblewrap is missing or
cannot create namespaces, the kernel runs with the limits but without the sandbox, and grading says so.
"""
from __future__ import annotations

import argparse
import ctypes
import functools
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

KERNEL_NAME = "course-sandbox"
REPO_ROOT = Path(__file__).resolve().parent.parent
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
_SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives",
                 "/etc/fonts", "/etc/localtime", "/etc/mime.types")
_NOBODY = "65534"


@dataclass(frozen=True)
class Limits:
    """What one student's kernel may use."""

    memory_mb: int = 4096  # address space (RLIMIT_AS): a bigger allocation raises MemoryError
    cpu_seconds: int = 900  # CPU time (RLIMIT_CPU): then the kernel is killed
    file_size_mb: int = 256  # the largest file it may write (RLIMIT_FSIZE)

    def as_args(self) -> list[str]:
        """The limits as ``python -m course.sandbox`` options."""
        return [f"--memory-mb={self.memory_mb}", f"--cpu-seconds={self.cpu_seconds}",
                f"--file-size-mb={self.file_size_mb}"]


@functools.lru_cache(maxsize=1)
def sandbox_problem() -> str | None:
    """Why the sandbox cannot be used here, or ``None`` when bubblewrap works."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (or `make system-deps` as root)"
    probe = [*_bwrap_prefix(bwrap, writable=[]), "--", sys.executable, "-c", "pass"]
    result = subprocess.run(probe, capture_output=True, text=True)
    if result.returncode != 0:
        return f"bubblewrap cannot create a sandbox here: {result.stderr.strip() or f'exit {result.returncode}'}"
    return None


def install_kernelspec(jupyter_dir: Path, limits: Limits, sandbox: bool) -> Path:
    """Write the ``course-sandbox`` kernelspec into ``jupyter_dir/kernels`` (a ``JUPYTER_PATH`` entry)."""
    folder = Path(jupyter_dir) / "kernels" / KERNEL_NAME
    folder.mkdir(parents=True, exist_ok=True)
    mode = [] if sandbox else ["--no-bwrap"]
    spec = {
        "argv": [sys.executable, "-m", "course.sandbox", *limits.as_args(), *mode, "--", "-f", "{connection_file}"],
        "display_name": "Python 3 (grading sandbox)",
        "language": "python",
        "interrupt_mode": "message",  # a signal would reach bwrap, not the kernel behind it
        "env": {"PYTHONPATH": str(REPO_ROOT)},  # for the launcher; the kernel gets a clean environment
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1))
    return folder


def _bwrap_prefix(bwrap: str, writable: list[Path]) -> list[str]:
    """bwrap's arguments up to the command: namespaces, a read-only system and the given folders."""
    # --as-pid-1: the command is the namespace's first process, with no reaper of bwrap's in between; that reaper
    # is never waited for, so the CPU time of everything inside would be missing from the grader's accounting
    args = [bwrap, "--die-with-parent", "--unshare-all", "--as-pid-1", "--uid", _NOBODY, "--gid", _NOBODY,
            "--cap-drop", "ALL", "--hostname", "grading", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _SYSTEM_FILES:
        args += ["--ro-bind-try", path, path]
    for path in _python_dirs():
        args += ["--ro-bind", str(path), str(path)]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    return args


def _python_dirs() -> list[Path]:
    """The folders this interpreter, its packages and labkit live in (labkit may be an editable install)."""
    dirs = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    spec = importlib.util.find_spec("labkit")
    if spec is not None and spec.origin is not None:
        dirs.add(Path(spec.origin).resolve().parent)
    outside_system = [d for d in dirs if not any(str(d).startswith(s + "/") or str(d) == s for s in _SYSTEM_DIRS)]
    # Bind each folder once: drop those inside another one.
    return sorted(d for d in outside_system if not any(o != d and o in d.parents for o in outside_system))


def _kernel_env(home: str) -> dict[str, str]:
    """A small, fixed environment: deterministic hashing, one thread per library, no display."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "USER": "student", "LOGNAME": "student", "LANG": "C.UTF-8",
        "IPYTHONDIR": f"{home}/.ipython", "MPLCONFIGDIR": f"{home}/.matplotlib", "MPLBACKEND": "Agg",
        "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2",
    }
    if "NBGRADER_EXECUTION" in os.environ:  # nbgrader tells notebooks they are being autograded
        env["NBGRADER_EXECUTION"] = os.environ["NBGRADER_EXECUTION"]
    return env


def _log_to(path: Path) -> None:
    """Send the kernel's own stdout and stderr (start-up notes, a crash's last words) to a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _set_limits(limits: Limits) -> None:
    """Apply ``limits`` to this process (and so to the kernel it becomes); no core dumps."""
    mb = 1024 * 1024
    for name, value in ((resource.RLIMIT_AS, limits.memory_mb * mb), (resource.RLIMIT_CPU, limits.cpu_seconds),
                        (resource.RLIMIT_FSIZE, limits.file_size_mb * mb), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(name, (value, value))


def _die_with_parent() -> None:
    """Ask Linux to kill this process when its parent (the grader) dies, so no kernel outlives grading."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def sandboxed(command: list[str], cwd: Path, writable: list[Path]) -> list[str]:
    """``command`` wrapped in bwrap: it runs in ``cwd`` and can write only there, in ``writable`` and a private /tmp.

    Args:
        command: the program and its arguments, e.g. ``[sys.executable, "-c", "print(1)"]``.
        cwd: the folder it runs in (bound read-write at the same path).
        writable: other folders it may write (bound read-write at the same path).

    Returns:
        The bwrap command line; its environment is ``_kernel_env("/tmp/home")``, whatever the caller's.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise FileNotFoundError(sandbox_problem())
    args = _bwrap_prefix(bwrap, writable=[Path(cwd), *map(Path, writable)])
    args += ["--dir", "/tmp/home", "--chdir", str(cwd), "--clearenv"]
    for key, value in sorted(_kernel_env("/tmp/home").items()):
        args += ["--setenv", key, value]
    return [*args, "--", *command]


def kernel_command(kernel_args: list[str], cwd: Path, sandbox: bool) -> tuple[list[str], dict[str, str]]:
    """The command and environment that start an ipykernel for ``kernel_args`` (``-f <connection file>``)."""
    python = [sys.executable, "-m", "ipykernel_launcher", *kernel_args]
    connection_dir = Path(kernel_args[kernel_args.index("-f") + 1]).resolve().parent
    if sandbox:
        return sandboxed(python, cwd, [connection_dir]), {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    home = connection_dir / "home"
    home.mkdir(exist_ok=True)
    return python, _kernel_env(str(home))


def main(argv: list[str] | None = None) -> None:
    """The kernelspec's launcher: set the limits, then become the (sandboxed) kernel."""
    parser = argparse.ArgumentParser(prog="python -m course.sandbox", description=main.__doc__)
    parser.add_argument("--memory-mb", type=int, default=Limits.memory_mb)
    parser.add_argument("--cpu-seconds", type=int, default=Limits.cpu_seconds)
    parser.add_argument("--file-size-mb", type=int, default=Limits.file_size_mb)
    parser.add_argument("--no-bwrap", action="store_true", help="run without the sandbox (limits only)")
    parser.add_argument("kernel_args", nargs=argparse.REMAINDER, help="after --: ipykernel's arguments")
    args = parser.parse_args(argv)
    kernel_args = args.kernel_args[1:] if args.kernel_args[:1] == ["--"] else args.kernel_args
    limits = Limits(args.memory_mb, args.cpu_seconds, args.file_size_mb)
    command, env = kernel_command(kernel_args, Path.cwd(), sandbox=not args.no_bwrap)
    _log_to(Path(kernel_args[kernel_args.index("-f") + 1]).parent / "kernel.log")
    _die_with_parent()
    _set_limits(limits)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
