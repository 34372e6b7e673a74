"""Command line for instructors: release the problem sets, grade a class, re-export its grades.

    python -m course release
    python -m course grade ps01 submissions.zip          # or a folder; see course/collect.py
    python -m course export ps01                         # after manual grading in formgrader

``grade`` exits with 0 whenever the pipeline worked, however badly students did or however broken their
notebooks were (those are in the CSV and the summary); 1 when the pipeline itself failed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course.grade import REPO_ROOT, GradingConfig, GradingError, export_class, grade_class, resolve_assignment
from course.nbgrader_course import release_all
from course.sandbox import Limits, sandbox_problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    release = commands.add_parser("release", help="regenerate every problem set in exercises/ from solutions/")
    release.add_argument("--root", type=Path, default=REPO_ROOT, help="the course (default: this repository)")

    grade = commands.add_parser("grade", help="autograde a folder or zip of submissions, with feedback and a CSV")
    grade.add_argument("assignment", help="psNN, or the problem set's folder name")
    grade.add_argument("submissions", type=Path, help="a folder (one per student, or flat LMS files) or a zip")
    grade.add_argument("--out", type=Path, help="output folder (default: grades/<assignment>)")
    grade.add_argument("--root", type=Path, default=REPO_ROOT, help="the course: solutions/ and nbgrader_config.py")
    grade.add_argument("--workers", type=int, default=GradingConfig().workers,
                       help="students graded at once (default: one per core)")
    grade.add_argument("--db", dest="db_url",
                       help="gradebook URL, e.g. postgresql://user:password@host/db (default: SQLite in the output)")
    grade.add_argument("--cell-timeout", type=float, help="seconds per cell (default: nbgrader_config.py's)")
    grade.add_argument("--notebook-timeout", type=float, default=GradingConfig.notebook_timeout, help="seconds per student")
    grade.add_argument("--memory-mb", type=int, default=Limits.memory_mb, help="memory limit of a student's kernel")
    grade.add_argument("--student", dest="students", action="append", help="grade only this student (repeatable)")
    grade.add_argument("--no-canary", dest="canary", action="store_false", help="do not grade the solution first")

    export = commands.add_parser("export", help="rewrite grades.csv from the gradebook (after manual grading)")
    export.add_argument("assignment", help="psNN, or the problem set's folder name")
    export.add_argument("--out", type=Path, help="the grading output folder (default: grades/<assignment>)")
    export.add_argument("--root", type=Path, default=REPO_ROOT, help="the course: solutions/")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "release":
            for folder in release_all(args.root):
                print(f"released {folder}")
        elif args.command == "grade":
            problem = sandbox_problem()
            if problem:  # now, before the class is graded; the summary repeats it
                print(f"{'!' * 78}\nWARNING: students' code will run WITHOUT a sandbox: {problem}\n{'!' * 78}",
                      file=sys.stderr, flush=True)
            config = GradingConfig(workers=args.workers, cell_timeout=args.cell_timeout,
                                   notebook_timeout=args.notebook_timeout, limits=Limits(memory_mb=args.memory_mb),
                                   db_url=args.db_url, canary=args.canary)
            result = grade_class(args.assignment, args.submissions, output=args.out, root=args.root, config=config,
                                 students=args.students)
            print(result.summary, end="")
        else:
            assignment = resolve_assignment(args.assignment, args.root)
            print(export_class(args.out or REPO_ROOT / "grades" / assignment, assignment))
    except GradingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
