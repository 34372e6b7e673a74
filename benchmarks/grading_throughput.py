"""How fast a class is graded: seconds per notebook, and class throughput with one worker against several.

    .venv/bin/python benchmarks/grading_throughput.py                       # ps01, 20 students, 1 and 2 workers
    .venv/bin/python benchmarks/grading_throughput.py --assignment ps04 --students 40 --workers 1 4 8

Grades ``students`` copies of a problem set's solution (from ``solutions/``) with the full pipeline --
sandbox, guard, feedback, gradebook, CSV -- once per worker count. A class of one is graded first: it
starts the process that imports nbgrader, so that the timed runs compare alike, and its time is the fixed
cost of a run. Wall-clock times depend on what else the machine is doing; the CPU seconds per notebook
(kernels included) much less so, which is why both are printed, with the load average.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from course.grade import REPO_ROOT, GradingConfig, grade_class, resolve_assignment  # noqa: E402


def _load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def grade_and_time(assignment: str, students: int, output: Path, workers: int) -> tuple[float, float]:
    """Grade ``students`` copies of the solution; return (wall seconds, CPU seconds of grading them)."""
    solution = {p.stem: p for p in sorted((REPO_ROOT / "solutions" / assignment).glob("*.ipynb"))}
    submissions = {f"student{i:03d}": solution for i in range(students)}
    result = grade_class(assignment, submissions, output=output, config=GradingConfig(workers=workers, canary=False))
    assert all(r.total == r.max_score for r in result.results), f"the solution of {assignment} should score full marks"
    return result.seconds, result.cpu_seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--assignment", default="ps01", help="psNN or its folder in solutions/ (default ps01)")
    parser.add_argument("--students", type=int, default=20, help="class size (default 20)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (default 1 2)")
    args = parser.parse_args(argv)
    assignment = resolve_assignment(args.assignment)
    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; {assignment}, "
          f"{args.students} students; load average {_load()} at the start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        fixed, _ = grade_and_time(assignment, 1, Path(tmp) / "one", workers=1)
        print(f"a class of one: {fixed:.1f} s (the fixed cost of a run: release, gradebooks, one notebook)", flush=True)
        rows = []
        for workers in args.workers:
            wall, cpu = grade_and_time(assignment, args.students, Path(tmp) / f"workers-{workers}", workers)
            rows.append((workers, wall, cpu))
            print(f"  {workers} worker(s): {wall:.1f} s (load average {_load()})", flush=True)
    print(f"\n{'workers':>7} {'wall s':>8} {'s/notebook':>11} {'notebooks/min':>14} {'CPU s/notebook':>15} {'speed-up':>9}")
    for workers, wall, cpu in rows:
        print(f"{workers:7d} {wall:8.1f} {wall / args.students:11.2f} {60 * args.students / wall:14.1f} "
              f"{cpu / args.students:15.2f} {rows[0][1] / wall:8.2f}x")
    print(f"load average at the end: {_load()}")


if __name__ == "__main__":
    main()
