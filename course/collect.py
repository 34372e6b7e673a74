"""Gather a class's submissions, from a folder or a learning-management-system zip, one entry per student.

Two layouts are understood, and may be mixed:

- **a folder per student**: ``<student>/ps01.ipynb`` (any depth below the student's folder, so nbgrader's
  own ``submitted/<student>/<assignment>/`` works too). Moodle's "download all submissions" folders,
  ``<Full Name>_<id>_assignsubmission_file_/``, give the student ``Full_Name_<id>``.
- **flat files**: ``<student>_<anything>.ipynb``: the student is the text before the first ``_``. Canvas's
  download, ``<name>_[LATE_]<user id>_<submission id>_<file name>``, gives the student ``<name>``, notes a
  late submission, and undoes Canvas's renaming of resubmissions (``ps01-1.ipynb`` is ``ps01.ipynb``).

A zip is extracted safely first (no paths outside the target, bounded size); a zip that holds a single
folder of submissions is unwrapped. Each student's notebook is found by its released name; a single
notebook under another name is graded in its place, with a note. A student without a readable notebook
gets a ``problem`` that says why, and the rest of the class is unaffected.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import nbformat

MAX_NOTEBOOK_BYTES = 100 * 1024**2
MAX_ZIP_BYTES = 4 * 1024**3
_CANVAS = re.compile(r"^(?P<student>[^_]+)_(?P<late>LATE_)?\d+_\d+_(?P<file>.+)$")
_CANVAS_RESUBMISSION = re.compile(r"-\d+(?=\.ipynb$)")
_MOODLE_SUFFIX = re.compile(r"_assignsubmission_\w+_?$")
_JUNK = ("__MACOSX", ".ipynb_checkpoints", "__pycache__")


@dataclass(frozen=True)
class Submission:
    """One student's work: the notebooks to grade, or why there are none."""

    student: str
    notebooks: dict[str, Path] = field(default_factory=dict)  # released name without ".ipynb" -> file
    problem: str = ""  # why this student cannot be graded; "" when they can
    notes: tuple[str, ...] = ()


def collect(source: Path, notebooks: Sequence[str], workdir: Path) -> list[Submission]:
    """Find each student's notebooks for an assignment whose released notebooks are ``notebooks``.

    Args:
        source: a folder or a ``.zip`` of submissions, in either layout above.
        notebooks: the assignment's notebook names without ``.ipynb``, e.g. ``["ps01"]``.
        workdir: an empty folder where a zip is extracted.

    Returns:
        One ``Submission`` per student, sorted by student id.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no submissions at {source}: expected a folder or a .zip file")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise ValueError(f"{source} is neither a folder nor a zip file")
        root = _unzip(source, Path(workdir) / "unzipped")
    else:
        root = source
    root = _unwrap(root, notebooks)

    files: dict[str, list[tuple[str, Path]]] = {}  # student -> [(name as the student gave it, path)]
    notes: dict[str, list[str]] = {}
    for entry in _entries(root):
        if entry.is_dir():
            student = _clean(_MOODLE_SUFFIX.sub("", entry.name))
            found = [(p.name, p) for p in sorted(entry.rglob("*")) if p.is_file() and not _is_junk(p, entry)]
            files.setdefault(student, []).extend(found)
        elif match := _CANVAS.match(entry.name):
            student = _clean(match["student"])
            files.setdefault(student, []).append((_CANVAS_RESUBMISSION.sub("", match["file"]), entry))
            if match["late"]:
                notes.setdefault(student, []).append("late (Canvas)")
        elif "_" in entry.name:
            student, name = entry.name.split("_", 1)
            files.setdefault(_clean(student), []).append((name, entry))
    return [_submission(student, files[student], notebooks, notes.get(student, [])) for student in sorted(files)]


def _entries(root: Path) -> list[Path]:
    return [p for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.name not in _JUNK]


def _is_junk(path: Path, top: Path) -> bool:
    return any(part.startswith(".") or part in _JUNK for part in path.relative_to(top).parts)


def _clean(student: str) -> str:
    """A student id that is safe as a folder name and in nbgrader: letters, digits, ``.``, ``_``, ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", student).strip("._-") or "student"


def _unwrap(root: Path, notebooks: Sequence[str]) -> Path:
    """Step into a lone folder that holds submissions rather than one student's notebooks."""
    entries = _entries(root)
    while len(entries) == 1 and entries[0].is_dir():
        inner = _entries(entries[0])
        expected = {f"{name}.ipynb" for name in notebooks}
        if not inner or any(p.is_file() and p.name in expected for p in inner):
            break  # a single student's folder
        if not any(p.is_dir() or "_" in p.name for p in inner):
            break
        root, entries = entries[0], inner
    return root


def _submission(student: str, files: list[tuple[str, Path]], notebooks: Sequence[str], notes: list[str]) -> Submission:
    """Match a student's files to the released notebooks and check that each one can be read."""
    given = [(name, path) for name, path in files if name.endswith(".ipynb")]
    chosen: dict[str, tuple[str, Path]] = {}  # notebook -> (the name the student gave it, its file)
    notes = list(notes)
    for notebook in notebooks:
        exact = [(name, path) for name, path in given if name == f"{notebook}.ipynb"]
        if len(exact) > 1:
            return Submission(student, problem=f"several files are {notebook}.ipynb: {_names([p for _, p in exact])}",
                              notes=tuple(notes))
        if exact:
            chosen[notebook] = exact[0]
    missing = [n for n in notebooks if n not in chosen]
    others = [(name, path) for name, path in given if name[: -len(".ipynb")] not in notebooks]
    if len(missing) == 1 and len(others) == 1:
        chosen[missing[0]] = others[0]
        notes.append(f"graded {others[0][0]!r} as {missing[0]}.ipynb")
        missing = []
    if not chosen:
        found = f"found {_names([p for _, p in files])}" if files else "found no files"
        wanted = ", ".join(f"{n}.ipynb" for n in notebooks)
        return Submission(student, problem=f"no notebook named {wanted} ({found})", notes=tuple(notes))
    notes += [f"{n}.ipynb missing: its parts score zero" for n in missing]
    for name, path in chosen.values():
        problem = _unreadable(path)
        if problem:
            return Submission(student, problem=f"{name} {problem}", notes=tuple(notes))
    return Submission(student, {notebook: path for notebook, (_, path) in chosen.items()}, notes=tuple(notes))


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(repr(p.name) for p in paths)


def _unreadable(path: Path) -> str:
    """Why ``path`` is not a notebook nbgrader can grade, or ``""``."""
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        return f"is too large to grade ({size / 1024**2:.0f} MB; the limit is {MAX_NOTEBOOK_BYTES / 1024**2:.0f} MB)"
    text = path.read_bytes().decode("utf-8", errors="replace")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as error:
        return f"is not valid JSON, the file is damaged: {error}"
    if not isinstance(content, dict) or "cells" not in content or content.get("nbformat", 0) < 4:
        return "is not a Jupyter notebook (version 4 or newer)"
    try:
        nbformat.reads(text, as_version=4)
    except Exception as error:  # nbformat raises several kinds for a malformed notebook
        return f"is not a valid Jupyter notebook ({type(error).__name__})"
    return ""


def _unzip(archive: Path, target: Path) -> Path:
    """Extract ``archive`` into ``target``, refusing paths that leave it and more than MAX_ZIP_BYTES."""
    target.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise ValueError(f"{archive} would extract to {total / 1024**3:.1f} GB, "
                             f"more than the {MAX_ZIP_BYTES / 1024**3:.0f} GB allowed")
        for member in members:
            parts = Path(member.filename.replace("\\", "/")).parts
            if member.filename.startswith("/") or ".." in parts or not parts:
                raise ValueError(f"{archive} holds an unsafe path {member.filename!r}")
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, open(destination, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return target
