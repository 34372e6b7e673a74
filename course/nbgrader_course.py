"""Release the problem sets with nbgrader, and grade a few notebooks for the tests.

The repository holds the problem sets as nbgrader expects (``solutions/`` is the source directory,
``exercises/`` the release directory, see ``nbgrader_config.py``). Releasing runs nbgrader in a temporary
course directory so that gradebooks never land in the repository. ``autograde`` grades a handful of
notebooks through the class pipeline (``course.grade``: in parallel, each kernel sandboxed) in a
temporary folder and returns the scores; ``python -m course grade`` is the instructor's version.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIR = "solutions"
RELEASE_DIR = "exercises"


def assignments(root: Path = REPO_ROOT) -> list[str]:
    """The problem sets in ``solutions/``: folder names ``psNN_<topic>``, sorted."""
    return sorted(p.name for p in (root / SOURCE_DIR).glob("ps[0-9][0-9]_*") if p.is_dir())


def _nbgrader(args: list[str], course_dir: Path) -> subprocess.CompletedProcess[str]:
    """Run an nbgrader command in ``course_dir`` with this interpreter's environment on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    cmd = [sys.executable, "-m", "nbgrader", *args, f"--db=sqlite:///{course_dir / 'gradebook.db'}"]
    result = subprocess.run(cmd, cwd=course_dir, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _new_course_dir(assignment: str, workdir: Path, root: Path) -> Path:
    """A course directory in ``workdir`` holding the config and the source of one assignment."""
    source = root / SOURCE_DIR / assignment
    if not source.is_dir():
        raise ValueError(f"no problem set {assignment!r}: expected a folder {source}")
    course = workdir / "course"
    course.mkdir(parents=True)
    shutil.copy(root / "nbgrader_config.py", course / "nbgrader_config.py")
    shutil.copytree(source, course / SOURCE_DIR / assignment,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return course


def generate_release(assignment: str, destination: Path, root: Path = REPO_ROOT) -> Path:
    """Generate the student version of ``assignment`` into ``destination/<assignment>``; return that folder."""
    with tempfile.TemporaryDirectory() as tmp:
        course = _new_course_dir(assignment, Path(tmp), root)
        _nbgrader(["generate_assignment", assignment, "--force"], course)
        target = Path(destination) / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(course / RELEASE_DIR / assignment, target)
    return target


def release_all(root: Path = REPO_ROOT) -> list[Path]:
    """Regenerate every problem set's release in ``exercises/``."""
    return [generate_release(a, root / RELEASE_DIR, root) for a in assignments(root)]


@dataclass(frozen=True)
class PartScore:
    """One graded cell's result."""

    grade_id: str
    score: float
    max_score: float


def autograde(assignment: str, submissions: Mapping[str, Path], root: Path = REPO_ROOT) -> dict[str, dict[str, PartScore]]:
    """Autograde each student's notebook for ``assignment``; return ``{student: {grade_id: PartScore}}``.

    The students are graded in parallel, each in a sandboxed kernel, exactly as ``python -m course grade``
    grades a class (``course.grade.grade_class``), in a temporary output folder.

    Args:
        assignment: the problem set's folder name, e.g. ``"ps01_gradient_descent"``.
        submissions: student id → path of the submitted notebook (named as in the release).
        root: the repository holding ``solutions/`` and ``nbgrader_config.py``.

    Raises:
        RuntimeError: when a notebook could not be graded at all (damaged, or it killed its kernel),
            with the reason for each such student.
    """
    from course.grade import GradingConfig, grade_class
    from course.results import FAILED

    with tempfile.TemporaryDirectory() as tmp:
        result = grade_class(assignment, dict(submissions), output=Path(tmp) / "grades", root=root,
                             config=GradingConfig(canary=False))
    failures = {r.student: r.reason for r in result.results if r.status == FAILED}
    if failures:
        raise RuntimeError(f"could not grade {assignment} for {len(failures)} student(s): {failures}")
    return {r.student: {p.grade_id: PartScore(p.grade_id, p.score or 0.0, p.max_score) for p in r.parts}
            for r in result.results}
