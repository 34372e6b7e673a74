"""Feedback for students: nbgrader's HTML report per notebook, without the hidden tests.

Each graded student gets ``feedback/<student>/<assignment>/<notebook>.html`` from nbgrader's
``generate_feedback`` (run by ``course.worker`` with ``course.preprocessors.HideHiddenTests``): every
part's score, the student's code and outputs, and for each test its error and message, but neither the
hidden tests' source nor a traceback quoting it. A student whose work could not be graded gets a page
saying why. ``course_config`` makes the class's course directory regenerate feedback the same way after
manual grading (``nbgrader generate_feedback``).
"""
from __future__ import annotations

import html
from pathlib import Path

from course.results import StudentResult

FEEDBACK_PREPROCESSORS = ["nbgrader.preprocessors.GetGrades", "course.preprocessors.HideHiddenTests",
                          "nbconvert.preprocessors.CSSHTMLHeaderPreprocessor"]


def write_failure_page(course_dir: Path, assignment: str, notebooks: list[str], result: StudentResult) -> list[Path]:
    """A feedback page per notebook for a student whose work could not be graded, saying why."""
    folder = course_dir / "feedback" / result.student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes)
    pages = []
    for notebook in notebooks:
        page = folder / f"{notebook}.html"
        page.write_text(
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(assignment)}: {html.escape(notebook)}</title></head><body>\n"
            f"<h1>{html.escape(notebook)} ({html.escape(assignment)})</h1>\n"
            f"<p>Score: 0 / {result.max_score:g}</p>\n"
            f"<p>Your submission could not be graded: {html.escape(result.reason)}.</p>\n"
            + (f"<ul>{notes}</ul>\n" if notes else "")
            + "<p>Check that you submitted the notebook you were given, under its original name, and that it runs "
            "from top to bottom (Kernel &rarr; Restart Kernel and Run All Cells). Ask your instructor to regrade it.</p>\n"
            "</body></html>\n")
        pages.append(page)
    return pages


def course_config(base_config: Path, repo_root: Path, db_url: str | None) -> str:
    """The class course directory's ``nbgrader_config.py``: the course's own, plus feedback that hides the hidden
    tests when it is regenerated after manual grading, and the gradebook unless it is ``gradebook.db`` there."""
    return (base_config.read_text().rstrip() + "\n\n"
            "# Added by `python -m course grade`.\n"
            "import sys  # noqa: E402\n"
            f"sys.path.insert(0, {str(repo_root)!r})  # for course.preprocessors\n"
            f"c.GenerateFeedback.preprocessors = {FEEDBACK_PREPROCESSORS!r}\n"
            + (f"c.CourseDirectory.db_url = {db_url!r}\n" if db_url else ""))
