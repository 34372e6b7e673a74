"""How long does the book take to build? A cold build, a warm rebuild, and each chapter's execution time.

- ``cold``: a build into an empty folder, as on a fresh clone or after a change to labkit (`make book`
  then empties the execution cache): every chapter executes.
- ``warm``: the same build again, nothing changed: every chapter's outputs come from jupyter-cache, and
  only Sphinx's own work remains (all of it: `make book` passes --all, so that every build reports
  every warning).
- per chapter: the execution time jupyter-cache recorded for each notebook during the cold build. The
  design's budget is under a minute per chapter on two CPU cores.

Both builds run exactly as `make book` does (`--all -W -n --keep-going`); a build that fails (say, a chapter
with a warning) is still timed, and reported as failed. ``wall`` is elapsed time; ``cpu`` is the CPU time
of the build and the kernels it started, which a machine shared with other jobs disturbs much less.

Run: ``python benchmarks/book_timings.py [--output DIR]`` (default: a temporary folder, deleted after).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_cache import get_cache

ROOT = Path(__file__).resolve().parents[1]
CHAPTER_BUDGET_S = 60.0


@dataclass
class Build:
    wall_s: float
    cpu_s: float
    ok: bool


def build(output: Path) -> Build:
    """Run `jupyter-book build` into output/_build and time it."""
    command = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(ROOT), "--all", "-W", "-n",
               "--keep-going", "--path-output", str(output)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Build(wall, cpu, result.returncode == 0)


def chapter_times(output: Path) -> dict[str, float]:
    """Seconds each notebook took to execute, from jupyter-cache's records, slowest first."""
    records = get_cache(str(output / "_build" / ".jupyter_cache")).list_cache_records()
    times = {Path(record.uri).relative_to(ROOT).as_posix(): record.data.get("execution_seconds", float("nan"))
             for record in records}
    return dict(sorted(times.items(), key=lambda item: -item[1]))


def report(output: Path) -> None:
    load_before = os.getloadavg()
    cold = build(output)
    warm = build(output)
    load_after = os.getloadavg()

    print(f"machine: {os.cpu_count()} CPUs; load average (1 min) {load_before[0]:.1f} before, "
          f"{load_after[0]:.1f} after")
    for name, timing in (("cold build", cold), ("warm rebuild", warm)):
        status = "" if timing.ok else "  (build FAILED: warnings or errors; run `make book` to see them)"
        print(f"{name:13s} wall {timing.wall_s:7.1f} s   cpu {timing.cpu_s:7.1f} s{status}")
    print("\nchapter execution (cold build), slowest first:")
    for chapter, seconds in chapter_times(output).items():
        flag = f"  over the {CHAPTER_BUDGET_S:.0f} s budget" if seconds > CHAPTER_BUDGET_S else ""
        print(f"  {seconds:7.1f} s  {chapter}{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, help="build here (must be empty or absent) and keep the result")
    args = parser.parse_args()
    if args.output:
        if args.output.exists() and any(args.output.iterdir()):
            parser.error(f"{args.output} is not empty: a cold build needs an empty folder")
        report(args.output.resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="book-timings-") as output:
            report(Path(output))


if __name__ == "__main__":
    main()
