"""Plausible wrong answers for each problem set, one module per set (``psNN_<topic>.py``).

Each module defines ``WRONG_ANSWERS: dict[str, WrongAnswer]``: a name saying what the mistake is, and
the solution cells (by nbgrader ``grade_id``) rewritten to make it. ``tests/test_problem_sets.py`` grades
the solution with those cells swapped in and checks that the named test cells lose points.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WrongAnswer:
    """A plausible mistake: new sources for some solution cells, and the graded parts that must catch it."""

    cells: dict[str, str]
    loses: tuple[str, ...]
