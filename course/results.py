"""What grading found for each student: per-part scores with the reason points were lost.

Read from nbgrader's gradebook (the scores) and the autograded notebook (the error each test raised, and
what ``course.preprocessors`` noted: restored tampering, retyped test cells).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from course.preprocessors import METADATA_KEY

GRADED = "graded"
FAILED = "failed"  # nothing could be graded; ``reason`` says why
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_REASON = 400


@dataclass(frozen=True)
class Part:
    """One graded cell of the assignment, as the source defines it."""

    notebook: str
    grade_id: str
    max_score: float
    manual: bool  # graded by hand (a written answer), not by tests


@dataclass(frozen=True)
class PartResult:
    """A part's score (``None`` while it waits for manual grading) and why points were lost."""

    grade_id: str
    score: float | None
    max_score: float
    reason: str = ""


@dataclass(frozen=True)
class StudentResult:
    """One student's grade: status, per-part results, and notes for the instructor."""

    student: str
    status: str  # GRADED or FAILED
    parts: tuple[PartResult, ...]
    reason: str = ""  # for FAILED: why nothing could be graded
    notes: tuple[str, ...] = field(default_factory=tuple)
    sandbox: str = ""  # how the student's code ran: "bubblewrap", or "none: <why>"

    @property
    def total(self) -> float:
        return sum(p.score or 0.0 for p in self.parts)

    @property
    def max_score(self) -> float:
        return sum(p.max_score for p in self.parts)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "StudentResult":
        data = json.loads(text)
        data["parts"] = tuple(PartResult(**p) for p in data["parts"])
        data["notes"] = tuple(data["notes"])
        return cls(**data)


def failed(student: str, parts: list[Part], reason: str, notes: tuple[str, ...] = ()) -> StudentResult:
    """A student whose work could not be graded: every part scores zero, for ``reason``."""
    zeros = tuple(PartResult(p.grade_id, 0.0, p.max_score) for p in parts)
    return StudentResult(student, FAILED, zeros, reason=reason, notes=notes)


def parts_of(source_notebooks: dict[str, Path]) -> list[Part]:
    """The graded cells of an assignment's source notebooks, in notebook order."""
    parts = []
    for name, path in sorted(source_notebooks.items()):
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade"):
                parts.append(Part(name, meta["grade_id"], float(meta["points"]), manual=bool(meta.get("solution"))))
    return parts


def read_graded(student: str, parts: list[Part], db_url: str, course_id: str, assignment: str, autograded: Path,
                cell_timeout: float, memory_mb: int, notes: tuple[str, ...] = ()) -> StudentResult:
    """Collect a graded student's scores from the gradebook and reasons from the autograded notebooks."""
    from nbgrader.api import Gradebook  # nbgrader is slow to import; only graders need it

    scores: dict[tuple[str, str], float | None] = {}
    with Gradebook(db_url, course_id) as gradebook:
        for notebook in gradebook.find_submission(assignment, student).notebooks:
            for grade in notebook.grades:
                unscored = grade.auto_score is None and grade.manual_score is None
                scores[notebook.name, grade.name] = None if unscored else float(grade.score)
    notes = list(notes)
    results = []
    for name in sorted({p.notebook for p in parts}):
        path = autograded / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4) if path.exists() else nbformat.v4.new_notebook()
        cells = {c.metadata.nbgrader["grade_id"]: c for c in nb.cells if "grade_id" in c.metadata.get("nbgrader", {})}
        findings = nb.metadata.get(METADATA_KEY, {})
        retyped = {r["grade_id"]: r for r in findings.get("retyped", [])}
        for part in (p for p in parts if p.notebook == name):
            score = scores.get((name, part.grade_id))
            if not path.exists():
                reason, score = f"{name}.ipynb was not submitted", 0.0
            elif part.manual:
                reason = "needs manual grading" if score is None else ""
            elif part.grade_id in retyped:
                was, now = retyped[part.grade_id]["was"], retyped[part.grade_id]["now"]
                reason, score = f"the test cell was changed from {was} to {now}, so it was not run", 0.0
            elif part.grade_id not in cells:
                reason, score = "the test cell was deleted from the submission, so it was not run", 0.0
            else:
                score = 0.0 if score is None else score
                reason = _test_reason(cells[part.grade_id], cell_timeout, memory_mb) if score < part.max_score else ""
            results.append(PartResult(part.grade_id, score, part.max_score, reason))
        notes += _notebook_notes(nb, findings)
    return StudentResult(student, GRADED, tuple(results), notes=tuple(notes))


def _test_reason(cell, cell_timeout: float, memory_mb: int) -> str:
    """Why a test cell lost points: its error, in one line."""
    for output in cell.get("outputs", []):
        if output.output_type != "error":
            continue
        if output.ename in ("CellTimeoutError", "KeyboardInterrupt"):  # the grader interrupts a cell at its timeout
            return f"timed out: no result within {cell_timeout:g} s (an infinite loop?)"
        if output.ename == "MemoryError" or "can't allocate memory" in output.evalue:  # Python's, or torch's
            return f"{output.ename}: the code needed more than the {memory_mb} MB memory limit"
        message = " ".join(line.strip() for line in _ANSI.sub("", output.evalue).splitlines() if line.strip())
        text = f"{output.ename}: {message}" if message else output.ename
        return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"
    return "the test did not pass"


def _notebook_notes(nb, findings: dict) -> list[str]:
    notes = []
    if findings.get("restored"):
        notes.append("tampering undone before the tests ran: " + ", ".join(findings["restored"]))
    if findings.get("guard_failed"):
        notes.append("the grading guard was disabled by the notebook's code: review this submission")
    if any("... Output truncated ..." in o.get("text", "") for c in nb.cells for o in c.get("outputs", [])):
        notes.append("output truncated")
    return notes
