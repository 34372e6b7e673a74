"""Plausible wrong answers for each problem set, one module per set (``psNN_<topic>.py``).

Each module defines ``WRONG_ANSWERS: dict[str, WrongAnswer]``: a name saying what the mistake is, and
the solution cells (by nbgrader ``grade_id``) rewritten to make it. ``tests/test_problem_sets.py`` grades
the solution with those cells swapped in and checks that the named test cells lose points.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nbformat


@dataclass(frozen=True)
class WrongAnswer:
    """A plausible mistake: new sources for some solution cells, and the graded parts that must catch it."""

    cells: dict[str, str]
    loses: tuple[str, ...]


def solution_editor(assignment: str, notebook: str) -> Callable[..., dict[str, str]]:
    """An ``edit(grade_id, (old, new), ...)`` that rewrites one solution cell of ``solutions/<assignment>``.

    Writing each mistake as a small edit of the solution keeps it in step with the solution; each ``old``
    must occur exactly once in the cell, so an edit that no longer applies fails loudly.
    """
    path = Path(__file__).resolve().parents[2] / "solutions" / assignment / notebook
    sources = {cell.metadata["nbgrader"]["grade_id"]: cell.source
               for cell in nbformat.read(path, as_version=4).cells if "nbgrader" in cell.metadata}

    def edit(grade_id: str, *replacements: tuple[str, str]) -> dict[str, str]:
        source = sources[grade_id]
        for old, new in replacements:
            count = source.count(old)
            if count != 1:
                raise ValueError(f"{grade_id}: expected {old!r} once in the solution, found it {count} times")
            source = source.replace(old, new)
        return {grade_id: source}

    return edit
