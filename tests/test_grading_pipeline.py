"""The instructor's grading pipeline, end to end: collect, sandbox, grade, gradebook, feedback, CSV, leaks.

The hostile submissions have their own file (test_hostile_submissions.py). Here: the learning-management-
system layouts, the sandbox itself, one class graded from a Canvas zip through the command line (with the
feedback checked for hidden tests), manual grading and regrading, a pipeline failure, the unsandboxed
fallback, a PostgreSQL gradebook, the ``autograde`` helper the problem-set tests use, and that no solution
or hidden test leaks into the released exercises or the built book.
"""
from __future__ import annotations

import contextlib
import csv
import html
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from course.__main__ import main
from course.collect import collect
from course.export import grades_csv, with_scores
from course.grade import GradingConfig, grade_class
from course.nbgrader_course import REPO_ROOT, assignments, autograde
from course.results import GRADED, Part, PartResult, StudentResult
from course.sandbox import Limits, sandbox_problem, sandboxed
from tests.fixtures.grading import (ASSIGNMENT, FIXTURE_ROOT, PARTS, RELEASE, SOLUTION, WRONG_CLIPPING, edited,
                                    postgres_server, require, shared_folder)

BWRAP_HOW = "apt-get install bubblewrap (or `make system-deps` as root)"
LIMITS = Limits(memory_mb=2048)


def _copy(target: Path, source: Path = SOLUTION) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def _rows(csv_path: Path) -> dict[str, dict[str, str]]:
    return {row["student"]: row for row in csv.DictReader(io.StringIO(csv_path.read_text()))}


# ---------------------------------------------------------------------------------------------------
# Collecting submissions


def test_collects_folders_canvas_moodle_and_flat_files(tmp_path: Path) -> None:
    given = tmp_path / "given"
    _copy(given / "alice" / "ps00.ipynb")
    _copy(given / "bob" / ASSIGNMENT / "ps00.ipynb")  # nbgrader's own submitted/<student>/<assignment>/ layout
    _copy(given / "doejane_12345_678901_ps00.ipynb")  # Canvas
    _copy(given / "roebob_LATE_222_333_ps00-1.ipynb")  # Canvas: late, and a resubmission Canvas renamed
    _copy(given / "Jane Roe_4444_assignsubmission_file_" / "ps00.ipynb")  # Moodle
    _copy(given / "carol_ps00.ipynb")  # flat: <student>_<file>
    (given / "index.html").write_text("an LMS page, not a submission")
    found = {s.student: s for s in collect(given, ["ps00"], tmp_path / "work")}
    assert sorted(found) == ["Jane_Roe_4444", "alice", "bob", "carol", "doejane", "roebob"]
    assert all(not s.problem and set(s.notebooks) == {"ps00"} for s in found.values())
    assert found["roebob"].notes == ("late (Canvas)",)
    assert found["doejane"].notes == ()


def test_a_zip_is_unwrapped_and_checked(tmp_path: Path) -> None:
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(SOLUTION, "submissions/alice/ps00.ipynb")
        zf.write(SOLUTION, "submissions/bob/ps00.ipynb")
        zf.writestr("__MACOSX/submissions/._alice", "resource fork")
    found = collect(archive, ["ps00"], tmp_path / "work")
    assert [s.student for s in found] == ["alice", "bob"]
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside.ipynb", "{}")
    with pytest.raises(ValueError, match="unsafe path"):
        collect(evil, ["ps00"], tmp_path / "work2")


def test_each_unreadable_submission_has_its_own_reason(tmp_path: Path) -> None:
    given = tmp_path / "given"
    _copy(given / "renamed" / "ps00 final.ipynb")
    (given / "corrupt").mkdir()
    (given / "corrupt" / "ps00.ipynb").write_text('{"cells": [')
    (given / "not_a_notebook").mkdir()
    (given / "not_a_notebook" / "ps00.ipynb").write_text('{"answer": 42}')
    (given / "missing").mkdir()
    (given / "missing" / "essay.pdf").write_bytes(b"%PDF")
    _copy(given / "two_candidates" / "a.ipynb")
    _copy(given / "two_candidates" / "b.ipynb")
    found = {s.student: s for s in collect(given, ["ps00"], tmp_path / "work")}
    assert not found["renamed"].problem and found["renamed"].notes == ("graded 'ps00 final.ipynb' as ps00.ipynb",)
    assert "not valid JSON" in found["corrupt"].problem
    assert "not a Jupyter notebook" in found["not_a_notebook"].problem
    assert found["missing"].problem == "no notebook named ps00.ipynb (found 'essay.pdf')"
    assert found["two_candidates"].problem == "no notebook named ps00.ipynb (found 'a.ipynb', 'b.ipynb')"


# ---------------------------------------------------------------------------------------------------
# The sandbox


def test_sandbox_sees_only_its_folder_and_has_no_network(tmp_path: Path) -> None:
    require("bwrap", BWRAP_HOW)
    assert sandbox_problem() is None
    neighbour = _copy(tmp_path / "another_student" / "ps00.ipynb")
    probe = """
import json, os, socket
seen = {"uid": os.getuid(), "cwd": os.getcwd(), "home": os.environ["HOME"], "env": sorted(os.environ)[:3]}
open("written.txt", "w").write("ok")
seen["repo"] = [p for p in %r if os.path.exists(p)]
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    seen["network"] = "reachable"
except OSError as error:
    seen["network"] = type(error).__name__
print(json.dumps(seen))
""" % ([str(REPO_ROOT / "course"), str(REPO_ROOT / "nbgrader_config.py"), str(FIXTURE_ROOT), str(neighbour)],)
    work = tmp_path / "student"
    work.mkdir()
    result = subprocess.run(sandboxed([sys.executable, "-c", probe], work, []), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seen = __import__("json").loads(result.stdout)
    assert seen == {"uid": 65534, "cwd": str(work), "home": "/tmp/home", "env": ["HOME", "IPYTHONDIR", "LANG"],
                    "repo": [], "network": "OSError"}
    assert (work / "written.txt").read_text() == "ok"


# ---------------------------------------------------------------------------------------------------
# One class from a Canvas zip, through the command line


def _command(*args: str) -> tuple[int, str, str]:
    """``python -m course <args>``, in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(args))
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def canvas_class(tmp_path_factory) -> Path:
    """Three students in a Canvas download, graded with ``python -m course grade``; returns the output folder."""
    require("bwrap", BWRAP_HOW)

    def make(tmp: Path) -> None:
        archive = tmp / "submissions.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(SOLUTION, "doejane_1001_9001_ps00.ipynb")
            zf.write(edited(SOLUTION, tmp / "wrong.ipynb", replace={"clip_by_global_norm": WRONG_CLIPPING}),
                     "roebob_LATE_1002_9002_ps00-1.ipynb")
            zf.writestr("zedzed_1003_9003_ps00.ipynb", "this is not a notebook")
        status, out, err = _command("grade", "ps00", str(archive), "--root", str(FIXTURE_ROOT), "--out",
                                    str(tmp / "grades"), "--workers", "2", "--memory-mb", str(LIMITS.memory_mb))
        assert status == 0, out + err
        (tmp / "grades" / "stdout.txt").write_text(out)
    return shared_folder(tmp_path_factory, "canvas-class", make) / "grades"


def test_command_line_grades_a_canvas_zip(canvas_class: Path) -> None:
    printed = (canvas_class / "stdout.txt").read_text()
    assert "ps00_fixture: 3 students graded" in printed and "sandbox: bubblewrap" in printed
    assert "zedzed: ps00.ipynb is not valid JSON" in printed, printed
    rows = _rows(canvas_class / "grades.csv")
    assert list(rows) == ["doejane", "roebob", "zedzed"]
    assert [rows["doejane"][p] for p in PARTS] == ["3", "3", "2", "2"] and rows["doejane"]["total"] == "10"
    assert rows["roebob"]["test_clip_by_global_norm"] == "0" and rows["roebob"]["total"] == "7"
    assert rows["roebob"]["notes"] == "late (Canvas)"
    assert "each one by its own norm" in rows["roebob"]["reason"]
    assert rows["zedzed"]["status"] == "failed" and rows["zedzed"]["total"] == "0"
    assert all(r["max_score"] == "10" and r["sandbox"] == "bubblewrap" for r in rows.values())


def _hidden_lines(notebook: Path) -> list[str]:
    """The lines between BEGIN and END HIDDEN TESTS in a source notebook."""
    lines, hidden = [], False
    for cell in nbformat.read(notebook, as_version=4).cells:
        for line in cell.source.splitlines():
            if "END HIDDEN TESTS" in line:
                hidden = False
            elif hidden and line.strip():
                lines.append(line.strip())
            elif "BEGIN HIDDEN TESTS" in line:
                hidden = True
    return lines


def _text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_feedback_shows_results_but_not_hidden_tests(canvas_class: Path) -> None:
    feedback = canvas_class / "course" / "feedback"
    page = _text(feedback / "roebob" / ASSIGNMENT / "ps00.html")
    assert "Score: 0.0 / 3.0" in page and "Score: 3.0 / 3.0" in page
    assert "each one by its own norm" in page  # the failed test's message
    hidden = _hidden_lines(SOLUTION)
    assert hidden and not [line for line in hidden if line in page], "feedback quotes hidden tests"
    assert "Traceback" not in page.split("Part 2")[1]  # a test's traceback would quote its hidden source
    assert "could not be graded: ps00.ipynb is not valid JSON" in _text(feedback / "zedzed" / ASSIGNMENT / "ps00.html")
    config = (canvas_class / "course" / "nbgrader_config.py").read_text()
    assert "course.preprocessors.HideHiddenTests" in config  # so regenerated feedback hides them too


def test_manual_grades_survive_export_and_regrading(canvas_class: Path, tmp_path: Path) -> None:
    from nbgrader.api import Gradebook

    canvas_class = shutil.copytree(canvas_class, tmp_path / "grades")  # the output folder can move
    db = f"sqlite:///{canvas_class / 'course' / 'gradebook.db'}"
    with Gradebook(db, "grading-fixture") as gradebook:  # what a grader does in formgrader
        grade = gradebook.find_grade("test_clip_by_global_norm", "ps00", ASSIGNMENT, "roebob")
        assert grade.auto_score == 0
        grade.manual_score = 1.5
        gradebook.db.commit()
    status, _, err = _command("export", "ps00", "--root", str(FIXTURE_ROOT), "--out", str(canvas_class))
    assert status == 0, err
    assert _rows(canvas_class / "grades.csv")["roebob"]["total"] == "8.5"
    again = edited(SOLUTION, tmp_path / "ps00.ipynb", replace={"clip_by_global_norm": WRONG_CLIPPING})
    regrade = grade_class(ASSIGNMENT, {"roebob": again},
                          output=canvas_class, root=FIXTURE_ROOT, config=GradingConfig(limits=LIMITS, canary=False))
    assert [r.student for r in regrade.results] == ["roebob"]
    rows = _rows(canvas_class / "grades.csv")
    assert list(rows) == ["doejane", "roebob", "zedzed"], "a regrade keeps the other students"
    assert rows["roebob"]["total"] == "8.5", "a regrade keeps the grader's manual score"


def test_csv_leaves_manual_parts_blank_until_graded() -> None:
    parts = [Part("ps00", "test_norm", 3.0, manual=False), Part("ps00", "essay", 2.0, manual=True)]
    waiting = StudentResult("alice", GRADED, (PartResult("test_norm", 3.0, 3.0),
                                              PartResult("essay", None, 2.0, "needs manual grading")))
    rows = list(csv.DictReader(io.StringIO(grades_csv([waiting], parts))))
    assert rows[0]["essay"] == "" and rows[0]["total"] == "3" and rows[0]["reason"] == "essay: needs manual grading"
    graded = with_scores(waiting, {"test_norm": 3.0, "essay": 1.5})
    rows = list(csv.DictReader(io.StringIO(grades_csv([graded], parts))))
    assert rows[0]["essay"] == "1.5" and rows[0]["total"] == "4.5" and rows[0]["reason"] == ""


def test_make_grade_calls_the_command_line() -> None:
    dry = subprocess.run(["make", "-n", "grade", "ASSIGNMENT=ps01", "SUBMISSIONS=class.zip"], cwd=REPO_ROOT,
                         capture_output=True, text=True)
    assert "-m course grade 'ps01' 'class.zip'" in dry.stdout, dry.stdout + dry.stderr


# ---------------------------------------------------------------------------------------------------
# When the pipeline itself fails, and without a sandbox


def test_a_solution_that_does_not_grade_stops_the_pipeline(tmp_path: Path) -> None:
    require("bwrap", BWRAP_HOW)
    root = tmp_path / "course"
    shutil.copytree(FIXTURE_ROOT, root)
    edited(SOLUTION, root / "solutions" / ASSIGNMENT / "ps00.ipynb", replace={"clip_by_global_norm": WRONG_CLIPPING})
    _copy(tmp_path / "submissions" / "alice" / "ps00.ipynb")
    status, _, err = _command("grade", "ps00", str(tmp_path / "submissions"), "--root", str(root),
                              "--out", str(tmp_path / "out"), "--memory-mb", str(LIMITS.memory_mb))
    assert status == 1
    assert "does not score full marks" in err and "test_clip_by_global_norm" in err


def test_without_bubblewrap_grading_goes_on_and_warns_loudly(tmp_path: Path, monkeypatch) -> None:
    which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kw: None if name == "bwrap" else which(name, *args, **kw))
    sandbox_problem.cache_clear()
    try:
        status, out, err = _command("grade", "ps00", str(_copy(tmp_path / "given" / "alice" / "ps00.ipynb").parent.parent),
                                    "--root", str(FIXTURE_ROOT), "--out", str(tmp_path / "out"), "--no-canary",
                                    "--memory-mb", str(LIMITS.memory_mb))
    finally:
        sandbox_problem.cache_clear()
    assert status == 0, out + err
    assert "WARNING: students' code will run WITHOUT a sandbox" in err and "apt-get install bubblewrap" in err
    assert out.startswith("!" * 78 + "\nWARNING: students' code ran WITHOUT a sandbox: bubblewrap (bwrap) is not installed")
    row = _rows(tmp_path / "out" / "grades.csv")["alice"]
    assert row["total"] == "10" and row["sandbox"].startswith("none: bubblewrap (bwrap) is not installed")


# ---------------------------------------------------------------------------------------------------
# A PostgreSQL gradebook


def test_postgresql_gradebook(tmp_path: Path) -> None:
    require("bwrap", BWRAP_HOW)
    how = "apt-get install postgresql (or `make system-deps` as root)"
    require("initdb", how)
    require("pg_ctl", how)
    from nbgrader.api import Gradebook

    from course.gradebook import database_url

    with postgres_server() as url:
        submissions = {"alice": SOLUTION, "bob": edited(SOLUTION, tmp_path / "bob.ipynb",
                                                        replace={"clip_by_global_norm": WRONG_CLIPPING})}
        result = grade_class(ASSIGNMENT, submissions, output=tmp_path / "out", root=FIXTURE_ROOT,
                             config=GradingConfig(db_url=url, limits=LIMITS, canary=False))
        assert not (tmp_path / "out" / "course" / "gradebook.db").exists()
        with Gradebook(database_url(url, tmp_path), "grading-fixture") as gradebook:
            stored = {s.student_id: s.score for s in gradebook.assignment_submissions(ASSIGNMENT)}
        assert stored == {"alice": 10.0, "bob": 7.0}
        assert {r.student: r.total for r in result.results} == stored
        assert _rows(result.csv)["bob"]["total"] == "7"


# ---------------------------------------------------------------------------------------------------
# The helper tests/test_problem_sets.py uses


def test_autograde_helper_returns_part_scores(tmp_path: Path) -> None:
    require("bwrap", BWRAP_HOW)
    scores = autograde(ASSIGNMENT, {"solution": SOLUTION, "release": RELEASE}, root=FIXTURE_ROOT)
    assert {p.grade_id: p.score for p in scores["solution"].values()} == PARTS
    assert sum(p.score for p in scores["release"].values()) == 0
    (tmp_path / "ps00.ipynb").write_text("{")
    with pytest.raises(RuntimeError, match="not valid JSON"):
        autograde(ASSIGNMENT, {"broken": tmp_path / "ps00.ipynb"}, root=FIXTURE_ROOT)


# ---------------------------------------------------------------------------------------------------
# Nothing secret leaks


def _labkit_lines() -> set[str]:
    """Every line of labkit's source: students have the package installed, so none of it is secret."""
    return {line.strip() for path in (REPO_ROOT / "labkit").glob("*.py") for line in path.read_text().splitlines()}


def _secret_runs(source: Path) -> list[tuple[str, ...]]:
    """Pairs of consecutive lines of a solution or hidden-test region that are secret: at least 25 characters
    and found neither in the notebook's public cells nor in labkit's source.

    A leak copies a region, so it shows as two secret lines in a row; one line alone (an import, a loop
    header, a call every chapter makes) can be in a page by coincidence."""
    public_lines = _labkit_lines()
    public, regions, inside = [], [], False
    for cell in nbformat.read(source, as_version=4).cells:
        for line in cell.source.splitlines():
            text = line.strip()
            if re.search(r"BEGIN (SOLUTION|HIDDEN TESTS)", text):
                inside = True
                regions.append([])
            elif re.search(r"END (SOLUTION|HIDDEN TESTS)", text):
                inside = False
            elif text:
                (regions[-1] if inside else public).append(text)
    everywhere_else = "\n".join(public)

    def secret(line: str) -> bool:
        return len(line) >= 25 and line not in everywhere_else and line not in public_lines

    return sorted({(a, b) for region in regions for a, b in zip(region, region[1:]) if secret(a) and secret(b)})


def _leaked(source: Path, text: str) -> list[str]:
    """The secret runs of ``source`` found in ``text`` (whose lines are compared stripped, blank ones left out)."""
    lines = "\n".join(line.strip() for line in text.splitlines() if line.strip())
    return [" / ".join(run) for run in _secret_runs(source) if "\n".join(run) in lines]


def _sources() -> list[tuple[Path, Path]]:
    """(source notebook, its course root) for the real problem sets and the fixture's."""
    pairs = [(FIXTURE_ROOT, a) for a in assignments(FIXTURE_ROOT)] + [(REPO_ROOT, a) for a in assignments()]
    return [(nb, root) for root, a in pairs for nb in sorted((root / "solutions" / a).glob("*.ipynb"))]


@pytest.mark.parametrize("source, root", [pytest.param(nb, root, id=nb.parent.name) for nb, root in _sources()])
def test_no_solution_or_hidden_test_leaks_into_the_release(source: Path, root: Path) -> None:
    released = root / "exercises" / source.parent.name / source.name
    assert released.exists(), f"{released} is missing: run `make release`"
    cells = "\n".join(c.source for c in nbformat.read(released, as_version=4).cells)
    assert _secret_runs(source), f"{source} has no secret lines to check"
    leaked = _leaked(source, cells)
    assert not leaked, f"{released} contains lines of the solution or the hidden tests: {leaked[:3]}"


def test_the_leak_check_finds_a_pasted_solution() -> None:
    """A page that pastes one solution region into its text is caught, whatever the indentation."""
    for source, _ in _sources():
        runs = _secret_runs(source)
        if runs:
            page = "<p>Chapter text</p>\n<pre>    " + "\n\n    ".join(runs[0]) + "\n</pre>"
            assert _leaked(source, page), f"the pasted lines of {source.name} were not found"


@pytest.mark.xdist_group("book")  # the book is built once, by the worker that runs the book's tests
def test_no_solution_or_hidden_test_leaks_into_the_built_book(built_book) -> None:
    pages = [p for p in built_book.html_dir.rglob("*") if p.suffix in {".html", ".ipynb", ".txt", ".md", ".py"}]
    assert pages, f"no pages in {built_book.html_dir}"
    text = "\n".join(html.unescape(re.sub(r"<[^>]+>", "", p.read_text(errors="replace"))) for p in pages)
    leaked = {source.name: _leaked(source, text) for source, _ in _sources()}
    assert not any(leaked.values()), f"the built book contains solution or hidden-test lines: {leaked}"
