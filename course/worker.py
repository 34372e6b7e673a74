"""Grade one student, in a course directory and a process of its own.

``course.grade`` prepares a course directory per student (the assignment's source, a copy of a gradebook
that knows the assignment, the student's submission) and runs ``grade_student`` in a child process forked
from a server that has already imported nbgrader, so each student costs a fork, not an import. The child
runs nbgrader's autograde (the kernel sandboxed by ``course.sandbox``, guarded by ``course.kernel_guard``)
and generate_feedback, and writes a ``StudentResult`` as JSON. A child that overruns its time is killed by
the parent; its kernel dies with it.
"""
from __future__ import annotations

import os
import resource
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
from nbgrader.apps import NbGraderAPI
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, ClearOutput, DeduplicateIds, Execute,
                                    GetGrades, IgnorePattern, LimitOutput, OverwriteCells, OverwriteKernelspec)
from traitlets.config import Config, PyFileConfigLoader

from course import preprocessors as course_pp
from course.results import Part, StudentResult, failed, read_graded
from course.sandbox import KERNEL_NAME

GRADEBOOK = "gradebook.db"


@dataclass(frozen=True)
class Job:
    """Everything one child needs to grade one student."""

    assignment: str
    student: str
    course_id: str
    course_dir: Path  # source/<assignment>, gradebook.db, submitted/<student>/<assignment>/
    jupyter_dir: Path  # holds the sandbox kernelspec
    runtime_dir: Path  # the kernel's connection file and sockets: the sandbox binds this folder
    config_file: Path  # the course's nbgrader_config.py
    parts: tuple[Part, ...]
    cell_timeout: float
    memory_mb: int  # the kernel's limit, for messages
    grader_memory_mb: int  # this process's own limit (nbgrader holds the notebook's outputs)
    notes: tuple[str, ...] = ()

    @property
    def result_file(self) -> Path:
        return self.course_dir.parent / "result.json"

    @property
    def log_file(self) -> Path:
        return self.course_dir.parent / "grading.log"

    @property
    def usage_file(self) -> Path:
        return self.course_dir.parent / "cpu_seconds"


def nbgrader_config(config_file: Path, course_dir: Path, db_url: str) -> Config:
    """The course's nbgrader configuration, pointed at ``course_dir`` and ``db_url``."""
    config = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    config.CourseDirectory.root = str(course_dir)
    config.CourseDirectory.db_url = db_url
    return config


def autograde_config(job: Job) -> Config:
    """nbgrader's autograde and feedback, with the course's preprocessors and the sandboxed kernel."""
    config = nbgrader_config(job.config_file, job.course_dir, f"sqlite:///{job.course_dir / GRADEBOOK}")
    config.Execute.kernel_name = KERNEL_NAME
    config.Execute.timeout = int(job.cell_timeout)
    config.KernelManager.transport = "ipc"  # Unix sockets: the sandboxed kernel has no network
    config.KernelManager.ip = str(job.runtime_dir / "kernel-ipc")
    config.KernelManager.connection_file = str(job.runtime_dir / "kernel.json")
    config.Autograde.sanitize_preprocessors = [ClearOutput, DeduplicateIds, OverwriteKernelspec,
                                               course_pp.DropRetypedTestCells, OverwriteCells, CheckCellMetadata,
                                               course_pp.InsertGuard]
    config.Autograde.autograde_preprocessors = [Execute, course_pp.CollectGuardReports, IgnorePattern,
                                                ClearMetadataPreprocessor, LimitOutput,
                                                course_pp.SaveAutoGradesIgnoringStderr, AssignLatePenalties,
                                                CheckCellMetadata]
    config.GenerateFeedback.preprocessors = [GetGrades, course_pp.HideHiddenTests, CSSHTMLHeaderPreprocessor]
    return config


def _use_this_python() -> None:
    """nbgrader runs ``alembic`` and ``jupyter`` commands: find this interpreter's first."""
    bin_dir = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _quiet() -> None:
    """Silence the warnings nbgrader's own code raises on every submission (SQLAlchemy 2, nbformat)."""
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)
    warnings.filterwarnings("ignore", module="nbformat")


def grade_student(job: Job) -> None:
    """Child process: autograde and give feedback to ``job.student``; write the result to ``job.result_file``."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (job.grader_memory_mb * 1024**2, hard))
    _use_this_python()
    _quiet()
    os.environ.update({
        "JUPYTER_PATH": str(job.jupyter_dir),
        "JUPYTER_RUNTIME_DIR": str(job.runtime_dir),
        "JUPYTER_CONFIG_DIR": str(job.runtime_dir / "config"),  # no personal Jupyter settings
        "JUPYTER_DATA_DIR": str(job.runtime_dir / "data"),
        "JUPYTER_PLATFORM_DIRS": "1",
    })
    try:
        result = _grade(job)
    except MemoryError:
        reason = "grading ran out of memory: the notebook's output is too large"
        result = failed(job.student, list(job.parts), reason, job.notes)
    job.result_file.write_text(result.to_json())
    used = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]  # kernel included
    job.usage_file.write_text(str(sum(u.ru_utime + u.ru_stime for u in used)))


def _grade(job: Job) -> StudentResult:
    api = NbGraderAPI(config=autograde_config(job))
    graded = api.autograde(job.assignment, job.student, force=True, create=True)
    log = _scrub(graded.get("log", "") + graded.get("error", ""), job)
    job.log_file.write_text(log)
    if not graded["success"]:
        return failed(job.student, list(job.parts), _failure_reason(log), job.notes)
    result = read_graded(job.student, list(job.parts), f"sqlite:///{job.course_dir / GRADEBOOK}", job.course_id,
                         job.assignment, job.course_dir / "autograded" / job.student / job.assignment,
                         job.cell_timeout, job.memory_mb, job.notes)
    feedback = api.generate_feedback(job.assignment, job.student, force=True)
    if not feedback["success"]:
        with job.log_file.open("a") as log:
            log.write(_scrub(feedback.get("log", "") + feedback.get("error", ""), job))
        return StudentResult(result.student, result.status, result.parts, result.reason,
                             (*result.notes, "no feedback: generating it failed (see the log)"))
    return result


def _failure_reason(log: str) -> str:
    """What stopped nbgrader from grading a notebook, in words a student would understand."""
    if "DeadKernelError" in log or "Kernel died" in log:
        return "the kernel died while running the notebook (the code exited, crashed or was killed); nothing was graded"
    if "UnresponsiveKernelError" in log:
        return "the kernel stopped responding and could not be interrupted; nothing was graded"
    if "Kernel didn't respond" in log or "kernel failed to start" in log.lower():
        return "the notebook's kernel did not start (a grader problem: see the log)"
    if "nbgrader metadata may be corrupted" in log:
        return "the notebook's grading metadata is damaged (edited or duplicated cell ids?); nothing was graded"
    lines = [line for line in log.strip().splitlines() if line.strip()]
    return f"nbgrader could not grade the notebook: {lines[-1].strip() if lines else 'no log'}"


def _scrub(text: str, job: Job) -> str:
    """The log without this run's temporary paths, so that logs and reasons are the same run to run."""
    return text.replace(str(job.course_dir.parent), "<work>")


def copy_outputs(work_dir: Path, course_dir: Path, student: str, assignment: str) -> None:
    """Copy a student's submitted, autograded and feedback folders from ``work_dir`` into ``course_dir``."""
    for kind in ("submitted", "autograded", "feedback"):
        source = work_dir / kind / student / assignment
        target = course_dir / kind / student / assignment
        if target.exists():
            shutil.rmtree(target)
        if source.exists():
            shutil.copytree(source, target)


def _schema_version_in_process() -> None:
    """A new gradebook records its schema version, which nbgrader asks of an ``alembic`` subprocess (seconds of
    start-up, for a constant); ask alembic in this process instead."""
    import nbgrader
    import nbgrader.api
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(Path(nbgrader.__file__).parent / "alembic")).get_current_head()
    nbgrader.api.get_alembic_version = lambda: head


def prepare_course(config_file: Path, course_dir: Path, db_url: str, assignment: str) -> None:
    """Child process: release ``assignment`` in ``course_dir`` and enter it in the gradebook at ``db_url``."""
    _use_this_python()
    _quiet()
    _schema_version_in_process()
    api = NbGraderAPI(config=nbgrader_config(config_file, course_dir, db_url))
    result = api.generate_assignment(assignment, force=True)
    if not result["success"]:
        log = result.get("log", "") + result.get("error", "")
        raise RuntimeError(f"nbgrader generate_assignment {assignment} failed:\n{log}")
