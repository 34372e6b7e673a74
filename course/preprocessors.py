"""The course's changes to nbgrader's autograde and feedback pipelines, as nbgrader preprocessors.

``autograde_config`` (in ``course.worker``) puts them in place:

- ``DropRetypedTestCells`` (before nbgrader's ``OverwriteCells``): a test cell whose type the student
  changed scores zero, like a deleted one, instead of being silently turned back into code.
- ``InsertGuard`` / ``CollectGuardReports``: wrap every cell the student cannot edit in the kernel guard
  (``course/kernel_guard.py``), then take the guard's cells out again and keep what it restored.
- ``SaveAutoGradesIgnoringStderr``: a warning printed to stderr no longer costs a test its points; only
  an error does.
- ``HideHiddenTests`` (feedback): the hidden tests' source and the tracebacks that would quote it are
  removed; each test keeps its error name and message.
"""
from __future__ import annotations

import ast
import copy
import re
from pathlib import Path

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode, from_dict
from nbgrader import utils
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor, SaveAutoGrades

METADATA_KEY = "course"  # notebook metadata where these preprocessors leave their findings
_GUARD_KEY = "grading_guard"  # cell metadata marking the guard's own cells
_GUARD_SOURCE = (Path(__file__).parent / "kernel_guard.py").read_text()


def _findings(nb: NotebookNode) -> dict:
    return nb.metadata.setdefault(METADATA_KEY, {})


def _is_test(cell: NotebookNode) -> bool:
    return utils.is_grade(cell) and not utils.is_solution(cell)


class DropRetypedTestCells(NbGraderPreprocessor):
    """Remove test cells whose type differs from the source's, so that the part scores zero, and say so."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        info = resources["nbgrader"]
        retyped, kept = [], []
        with Gradebook(info["db_url"]) as gradebook:
            for cell in nb.cells:
                grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
                if grade_id is not None and cell.metadata.nbgrader.get("grade") and not utils.is_solution(cell):
                    try:
                        source = gradebook.find_source_cell(grade_id, info["notebook"], info["assignment"])
                    except MissingEntry:
                        source = None
                    if source is not None and source.cell_type != cell.cell_type:
                        retyped.append({"grade_id": grade_id, "was": source.cell_type, "now": cell.cell_type})
                        continue
                kept.append(cell)
        nb.cells = kept
        if retyped:
            _findings(nb)["retyped"] = retyped
        return nb, resources


class InsertGuard(NbGraderPreprocessor):
    """Install the kernel guard first, then call it before and after every cell the student cannot edit."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        cells = [_guard_cell(_GUARD_SOURCE, "install", 0)]
        for index, cell in enumerate(nb.cells):
            instructors = cell.cell_type == "code" and utils.is_locked(cell) and not utils.is_solution(cell)
            if instructors:
                cells.append(_guard_cell("__grading_guard__.before()", "before", index))
            cells.append(cell)
            if instructors:
                cells.append(_guard_cell("__grading_guard__.after()", "after", index))
        nb.cells = cells
        return nb, resources


def _guard_cell(source: str, role: str, index: int) -> NotebookNode:
    return from_dict({"cell_type": "code", "execution_count": None, "outputs": [], "source": source,
                      "id": f"grading-guard-{role}-{index}", "metadata": {_GUARD_KEY: role}})


class CollectGuardReports(NbGraderPreprocessor):
    """Take the guard's cells out of the executed notebook; keep what it restored and whether it failed."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        restored: set[str] = set()
        failed = False
        for cell in nb.cells:
            if _GUARD_KEY not in cell.metadata:
                continue
            for output in cell.get("outputs", []):
                if output.output_type == "error":
                    failed = True
                elif output.output_type == "execute_result":
                    try:
                        restored.update(ast.literal_eval(output.data.get("text/plain", "None")) or ())
                    except (ValueError, SyntaxError, TypeError):
                        failed = True
        nb.cells = [cell for cell in nb.cells if _GUARD_KEY not in cell.metadata]
        executed = [c for c in nb.cells if c.cell_type == "code" and c.execution_count is not None]
        for count, cell in enumerate(executed, start=1):  # as if the guard's cells had never run
            cell.execution_count = count
            for output in cell.outputs:
                if output.output_type == "execute_result":
                    output.execution_count = count
        if restored:
            _findings(nb)["restored"] = sorted(restored)
        if failed:
            _findings(nb)["guard_failed"] = True
        return nb, resources


class SaveAutoGradesIgnoringStderr(SaveAutoGrades):
    """nbgrader's ``SaveAutoGrades``, except that text on stderr alone does not zero a test cell."""

    def _add_score(self, cell: NotebookNode, resources: ResourcesDict) -> None:
        if cell.cell_type == "code":
            cell = copy.deepcopy(cell)
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
        super()._add_score(cell, resources)


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class HideHiddenTests(ClearHiddenTests):
    """For feedback: drop hidden-test regions from test cells and replace tracebacks by ``Error: message``."""

    def preprocess_cell(self, cell: NotebookNode, resources: ResourcesDict,
                        index: int) -> tuple[NotebookNode, ResourcesDict]:
        if not _is_test(cell):  # the student's own cells are shown as they are
            return cell, resources
        cell, resources = super().preprocess_cell(cell, resources, index)
        if cell.cell_type == "code":
            for output in cell.outputs:
                if output.output_type == "error":
                    output.traceback = [f"{output.ename}: {_ANSI.sub('', output.evalue)}"]
        return cell, resources
