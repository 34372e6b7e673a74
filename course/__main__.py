"""Command line for instructors: ``python -m course release``."""
from __future__ import annotations

import argparse

from course.nbgrader_course import release_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("release", help="regenerate every problem set in exercises/ from solutions/")
    args = parser.parse_args(argv)
    if args.command == "release":
        for folder in release_all():
            print(f"released {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
