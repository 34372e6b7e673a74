"""The class gradebook: where every student's autograded scores end up, for formgrader and export.

nbgrader's SQLite file by default; a PostgreSQL URL (``postgresql://user:password@host/db``) for a large
class with several graders. Students are graded in gradebooks of their own, in parallel; ``record`` then
copies each one's scores in, one at a time, the way nbgrader's ``SaveAutoGrades`` would have: a score a
grader gave by hand is kept and flagged for review rather than overwritten.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from course.results import FAILED, StudentResult


def database_url(url: str | None, course_dir: Path) -> str:
    """The SQLAlchemy URL for a gradebook: ``course_dir/gradebook.db`` by default; PostgreSQL via psycopg 3."""
    if not url:
        return f"sqlite:///{Path(course_dir).resolve() / 'gradebook.db'}"
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def record(db_url: str, course_id: str, assignment: str, result: StudentResult) -> None:
    """Store ``result``'s autograded scores as ``result.student``'s submission of ``assignment``."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    scores = {p.grade_id: p for p in result.parts}
    with Gradebook(db_url, course_id) as gradebook, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's add_submission vs SQLAlchemy 2
        gradebook.update_or_create_student(result.student)
        submission = gradebook.update_or_create_submission(assignment, result.student)
        for notebook in submission.notebooks:
            notebook.flagged = result.status == FAILED or any("tampering" in n or "guard" in n for n in result.notes)
            for grade in notebook.grades:
                part = scores.get(grade.name)
                grade.auto_score = None if part is None else part.score
                grade.needs_manual_grade = grade.manual_score is not None or grade.auto_score is None
        gradebook.db.commit()


def scores(db_url: str, course_id: str, assignment: str) -> dict[str, dict[str, float | None]]:
    """``{student: {grade_id: score}}`` as the gradebook has them now, manual grades included."""
    from nbgrader.api import Gradebook

    table: dict[str, dict[str, float | None]] = {}
    with Gradebook(db_url, course_id) as gradebook:
        for submission in gradebook.assignment_submissions(assignment):
            row = table.setdefault(submission.student_id, {})
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    unscored = grade.auto_score is None and grade.manual_score is None
                    row[grade.name] = None if unscored else float(grade.score)
    return table
