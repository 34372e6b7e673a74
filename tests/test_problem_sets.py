"""Every problem set, graded for real by nbgrader.

For each set in ``solutions/``: the committed release equals what ``nbgrader generate_assignment`` makes
now and leaks no solution or hidden test; the solution scores full marks, twice (grading is
deterministic); the untouched release scores zero; each plausible wrong answer of
``tests/problem_sets/<set>.py`` loses points in the parts that should catch it, and each answer it lists as
right in another way keeps full marks.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import nbformat
import pytest

from course.nbgrader_course import REPO_ROOT, assignments, autograde, generate_release

ASSIGNMENTS = assignments()
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def _notebooks(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb"))


def _cells(notebook: Path) -> list[dict]:
    return json.loads(notebook.read_text())["cells"]


def _wrong_answers(assignment: str) -> dict:
    module = importlib.import_module(f"tests.problem_sets.{assignment}")
    return module.WRONG_ANSWERS


def _accepted_variants(assignment: str) -> dict[str, dict[str, str]]:
    """Answers that are right in another way than the solution's (e.g. Algorithm 1 with `>` or with `≥`):
    a set's module may list them as ``ACCEPTED_VARIANTS = {"<what differs>": {grade_id: source}}``."""
    module = importlib.import_module(f"tests.problem_sets.{assignment}")
    return getattr(module, "ACCEPTED_VARIANTS", {})


def _with_cells_replaced(solution: Path, replacements: dict[str, str], target: Path) -> Path:
    nb = nbformat.read(solution, as_version=4)
    found = set()
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in replacements:
            cell.source = replacements[grade_id]
            found.add(grade_id)
    missing = set(replacements) - found
    assert not missing, f"{solution.name} has no cells with grade_id {sorted(missing)}"
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def test_there_are_problem_sets() -> None:
    assert ASSIGNMENTS or not (REPO_ROOT / "solutions").exists()


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_is_current_and_leaks_nothing(assignment: str, tmp_path: Path) -> None:
    fresh = generate_release(assignment, tmp_path)
    committed = REPO_ROOT / "exercises" / assignment
    assert committed.is_dir(), f"exercises/{assignment} is missing: run `make release`"
    for notebook in _notebooks(fresh):
        released = committed / notebook.name
        assert released.exists(), f"{released} is missing: run `make release`"
        assert _cells(released) == _cells(notebook), f"{released} is stale: run `make release` and commit it"
        text = released.read_text()
        for marker in SOLUTION_MARKERS:
            assert marker not in text, f"{released} contains {marker!r}"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_grades_solution_release_and_wrong_answers(assignment: str, tmp_path: Path) -> None:
    solutions = _notebooks(REPO_ROOT / "solutions" / assignment)
    assert len(solutions) == 1, f"expected one notebook in solutions/{assignment}, found {solutions}"
    solution = solutions[0]
    release = REPO_ROOT / "exercises" / assignment / solution.name
    wrong = _wrong_answers(assignment)
    assert len(wrong) >= 3, f"{assignment}: at least three plausible wrong answers are expected"

    submissions = {"solution": solution, "solution-again": solution, "release": release}
    for index, (name, answer) in enumerate(wrong.items()):
        student = f"wrong{index:02d}"
        submissions[student] = _with_cells_replaced(solution, answer.cells, tmp_path / student / solution.name)
    variants = _accepted_variants(assignment)
    for index, cells in enumerate(variants.values()):
        student = f"variant{index:02d}"
        submissions[student] = _with_cells_replaced(solution, cells, tmp_path / student / solution.name)
    scores = autograde(assignment, submissions)

    def total(student: str) -> tuple[float, float]:
        parts = scores[student].values()
        return sum(p.score for p in parts), sum(p.max_score for p in parts)

    got, best = total("solution")
    assert best > 0, f"{assignment} has no graded parts"
    failed = [p.grade_id for p in scores["solution"].values() if p.score < p.max_score]
    assert got == best, f"the solution of {assignment} scores {got}/{best}; parts losing points: {failed}"
    assert scores["solution-again"] == scores["solution"], "grading the same work twice gave different grades"
    assert total("release")[0] == 0, f"the untouched release of {assignment} scores {total('release')}"
    for index, (name, answer) in enumerate(wrong.items()):
        student = scores[f"wrong{index:02d}"]
        for grade_id in answer.loses:
            part = student[grade_id]
            assert part.score < part.max_score, f"{assignment}: wrong answer {name!r} keeps full marks on {grade_id}"
    for index, name in enumerate(variants):
        got = total(f"variant{index:02d}")
        assert got == (best, best), f"{assignment}: the correct variant {name!r} scores {got}, not full marks"
