"""Bad and hostile submissions get a clear, correct grade and never stop the rest of the class.

One class of 30 students is graded in parallel, once (a fixture shared by every test here, and by every
pytest-xdist worker through a lock): the hostile cases below plus ordinary students to make up the
numbers. Each case states its expected grade and the reason the instructor is given. The same 30 are
then graded again one by one, and the two CSV files must be identical.
"""
from __future__ import annotations

import json
import os
import socket
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
import pytest

from course.grade import GradingConfig, grade_class
from course.results import FAILED, GRADED, StudentResult
from course.sandbox import Limits
from tests.fixtures.grading import (ASSIGNMENT, FIXTURE_ROOT, PARTS, RELEASE, SOLUTION, WRONG_CLIPPING,
                                    WRONG_LEARNING_RATE, edited, require, shared_folder, solution_source)

CLASS_SIZE = 30
LIMITS = Limits(memory_mb=2048)
SOLVED_NORM = solution_source("global_norm")
LEARNING_RATE = "test_max_stable_learning_rate"  # the part the cheats below try to win: nothing depends on it
LOOP = "def clip_by_global_norm(grads, max_norm):\n    while True:\n        pass\n"
MILLION_LINES = "for _ in range(1000):\n    print('spam\\n' * 1000, end='')\ngrowth = 1.5 ** 10\n"
WARNING = "    warnings.warn('just a warning')\n    print('a note', file=sys.stderr)\n"
FAKE_HELPER = "\ndef assert_close(*args, **kwargs):\n    return None\n"


@dataclass(frozen=True)
class Case:
    """A student's submission and what grading must make of it."""

    build: Callable[[Path], None]  # writes the student's folder
    scores: dict[str, float] = field(default_factory=dict)  # parts below full marks (the rest score full)
    reasons: dict[str, str] = field(default_factory=dict)  # part -> text its reason must contain
    status: str = GRADED
    failure: str = ""  # for FAILED: text the reason must contain
    notes: tuple[str, ...] = ()  # texts the notes must contain


def _notebook(base: Path = SOLUTION, name: str = "ps00.ipynb", **edits) -> Callable[[Path], None]:
    return lambda folder: edited(base, folder / name, **edits)


def _file(name: str, text: str) -> Callable[[Path], None]:
    def build(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return build


def _cheat(attempt: str, found: str) -> str:
    """An answer cell that tries something forbidden, and gets the learning rate right only if it worked."""
    return textwrap.dedent(attempt) + textwrap.dedent(f"""
        print("{found}:", {found})
        def max_stable_learning_rate(hessian):
            if {found}:  # with the solutions (or a helper outside) in hand, the answer is easy
                return 2.0 / float(torch.linalg.eigvalsh(hessian).max())
            return 1.0 / float(torch.linalg.eigvalsh(hessian).max())
        """)


def _cases(listener_port: int) -> dict[str, Case]:
    zero = {"test_global_norm": 0, "test_clip_by_global_norm": 0, "test_max_stable_learning_rate": 0, "test_growth": 0}
    return {
        "solution": Case(_notebook()),
        "release": Case(_notebook(RELEASE), scores=zero, reasons={"test_global_norm": "NotImplementedError"}),
        "asserts_deleted": Case(
            _notebook(replace={"max_stable_learning_rate": WRONG_LEARNING_RATE, LEARNING_RATE: "pass  # nothing to fail"}),
            scores={LEARNING_RATE: 0}, reasons={LEARNING_RATE: "AssertionError"}),
        "test_deleted": Case(_notebook(delete=("test_clip_by_global_norm",)),
                             scores={"test_clip_by_global_norm": 0}, reasons={"test_clip_by_global_norm": "deleted"}),
        "test_retyped": Case(_notebook(retype={"test_max_stable_learning_rate": "markdown"}),
                             scores={"test_max_stable_learning_rate": 0},
                             reasons={"test_max_stable_learning_rate": "changed from code to markdown"}),
        "infinite_loop": Case(
            _notebook(replace={"clip_by_global_norm": LOOP}),
            scores={"test_clip_by_global_norm": 0}, reasons={"test_clip_by_global_norm": "timed out"}),
        "os_exit": Case(_notebook(replace={"global_norm": "import os\n\ndef global_norm(grads):\n    os._exit(3)\n"}),
                        status=FAILED, failure="kernel died"),
        "interpreter_crash": Case(
            _notebook(replace={"global_norm": "import ctypes\n\ndef global_norm(grads):\n    return ctypes.string_at(0)\n"}),
            status=FAILED, failure="kernel died"),
        "huge_output": Case(_notebook(replace={"growth": MILLION_LINES}),
                            notes=("output truncated",)),
        "memory_bomb": Case(
            _notebook(replace={"max_stable_learning_rate": "def max_stable_learning_rate(hessian):\n"
                               "    hoard = [bytearray(2**26) for _ in range(10**5)]  # 6 TB\n    return 0.5\n"}),
            scores={"test_max_stable_learning_rate": 0},
            reasons={"test_max_stable_learning_rate": f"{LIMITS.memory_mb} MB memory limit"}),
        "torch_memory_bomb": Case(
            _notebook(replace={"max_stable_learning_rate": "def max_stable_learning_rate(hessian):\n"
                               "    return float(torch.ones(2**40).sum()) * 0 + 0.5  # 4 TB\n"}),
            scores={"test_max_stable_learning_rate": 0},
            reasons={"test_max_stable_learning_rate": f"{LIMITS.memory_mb} MB memory limit"}),
        "corrupt_json": Case(_file("ps00.ipynb", '{"cells": [{"cell_type": "code", "sour'), status=FAILED,
                             failure="not valid JSON"),
        "missing_notebook": Case(_file("answers.txt", "I did the problem set on paper."), status=FAILED,
                                 failure="no notebook named ps00.ipynb (found 'answers.txt')"),
        "renamed_notebook": Case(_notebook(name="ps00 (1).ipynb"), notes=("graded 'ps00 (1).ipynb' as ps00.ipynb",)),
        "stderr_warning": Case(_notebook(replace={"global_norm": "import sys, warnings\n\n" + SOLVED_NORM.replace(
            "    ### BEGIN SOLUTION", WARNING + "    ### BEGIN SOLUTION")})),
        "redefined_helper": Case(
            _notebook(replace={"max_stable_learning_rate": WRONG_LEARNING_RATE + FAKE_HELPER}),
            scores={LEARNING_RATE: 0}, reasons={LEARNING_RATE: "AssertionError"}, notes=("assert_close",)),
        "monkeypatched_torch": Case(
            _notebook(replace={"clip_by_global_norm": WRONG_CLIPPING + textwrap.dedent("""
                import labkit.grading
                torch.allclose = lambda *args, **kwargs: True
                torch.isclose = lambda a, b, **kwargs: torch.ones(torch.as_tensor(a).shape, dtype=torch.bool)
                torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
                labkit.grading.assert_close = lambda *args, **kwargs: None
                """)}),
            scores={"test_clip_by_global_norm": 0}, reasons={"test_clip_by_global_norm": "AssertionError"},
            notes=("torch.allclose", "torch.isclose", "torch.Tensor.__eq__", "labkit.grading.assert_close")),
        "always_equal": Case(
            _notebook(replace={
                "global_norm": textwrap.dedent("""
                    class AlwaysEqual:
                        def __eq__(self, other):
                            return True
                        __hash__ = object.__hash__
                    class EqualFloat(float):
                        def __eq__(self, other):
                            return True
                        __hash__ = float.__hash__
                    def global_norm(grads):
                        return AlwaysEqual()
                    """),
                "clip_by_global_norm": "def clip_by_global_norm(grads, max_norm):\n    return [AlwaysEqual()]\n",
                "max_stable_learning_rate": "def max_stable_learning_rate(hessian):\n    return EqualFloat(0.0)\n",
                "growth": "growth = EqualFloat(0.0)\n"}),
            scores=zero),
        "reads_solutions": Case(
            _notebook(replace={"max_stable_learning_rate": _cheat(f"""
                targets = ["../../../solutions/{ASSIGNMENT}/ps00.ipynb", "../../../gradebook.db",
                           "../../../../../solution/course/submitted/solution/{ASSIGNMENT}/ps00.ipynb",
                           {str(SOLUTION)!r}, {str(FIXTURE_ROOT / 'nbgrader_config.py')!r}]
                leaked = []
                for target in targets:
                    try:
                        with open(target, "rb") as f:
                            f.read(16)
                        leaked.append(target)
                    except OSError as error:
                        print("blocked:", target, type(error).__name__)
                """, "leaked")}),
            scores={LEARNING_RATE: 0}),
        "opens_socket": Case(
            _notebook(replace={"max_stable_learning_rate": _cheat(f"""
                import socket
                reached = []
                for address in [("127.0.0.1", {listener_port}), ("1.1.1.1", 53)]:
                    try:
                        socket.create_connection(address, timeout=3).close()
                        reached.append(address)
                    except OSError as error:
                        print("blocked:", address, type(error).__name__)
                """, "reached")}),
            scores={LEARNING_RATE: 0}),
        "wrong_clipping": Case(_notebook(replace={"clip_by_global_norm": WRONG_CLIPPING}),
                               scores={"test_clip_by_global_norm": 0},
                               reasons={"test_clip_by_global_norm": "not each one by its own norm"}),
    }


def _padding(count: int) -> dict[str, Case]:
    """Ordinary students, to make a class of CLASS_SIZE."""
    wrong = Case(_notebook(replace={"max_stable_learning_rate": WRONG_LEARNING_RATE}), scores={LEARNING_RATE: 0})
    kinds = [Case(_notebook()), wrong,
             Case(_notebook(RELEASE), scores=dict.fromkeys(PARTS, 0))]
    return {f"student{i:02d}": kinds[i % len(kinds)] for i in range(count)}


@pytest.fixture(scope="session")
def listener_port():
    """A port on this machine's loopback that accepts connections: a sandboxed kernel must not reach it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


@pytest.fixture(scope="session")
def cases(listener_port) -> dict[str, Case]:
    hostile = _cases(listener_port)
    return {**hostile, **_padding(CLASS_SIZE - len(hostile))}


@pytest.fixture(scope="session")
def submissions(tmp_path_factory, cases) -> Path:
    def make(folder: Path) -> None:
        for student, case in cases.items():
            case.build(folder / student)
    return shared_folder(tmp_path_factory, "hostile-submissions", make)


def _grade(tmp_path_factory, name: str, submissions: Path, workers: int) -> Path:
    """The class graded with ``workers`` workers, once per session; returns the output folder."""
    require("bwrap", "apt-get install bubblewrap (or `make system-deps` as root)")

    def make(folder: Path) -> None:
        config = GradingConfig(workers=workers, limits=LIMITS, canary=False)
        result = grade_class(ASSIGNMENT, submissions, output=folder / "out", root=FIXTURE_ROOT, config=config)
        (folder / "results.json").write_text(json.dumps([r.to_json() for r in result.results]))
    return shared_folder(tmp_path_factory, name, make) / "out"


@pytest.fixture(scope="session")
def parallel(tmp_path_factory, submissions) -> Path:
    """The class graded in parallel, one worker per core (at least two): the output folder."""
    return _grade(tmp_path_factory, "hostile-parallel", submissions, workers=max(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def graded(parallel) -> dict[str, StudentResult]:
    results = json.loads((parallel.parent / "results.json").read_text())
    return {r.student: r for r in map(StudentResult.from_json, results)}


HOSTILE = list(_cases(0))


@pytest.mark.parametrize("student", HOSTILE)
def test_each_case_gets_its_grade_and_reason(student: str, cases, graded) -> None:
    case, result = cases[student], graded[student]
    assert result.status == case.status, f"{student}: status {result.status} ({result.reason})"
    if case.status == FAILED:
        assert case.failure in result.reason, f"{student}: reason {result.reason!r} should say {case.failure!r}"
        assert result.total == 0
        return
    got = {p.grade_id: p.score for p in result.parts}
    expected = {part: case.scores.get(part, points) for part, points in PARTS.items()}
    assert got == expected, f"{student}: scores {got}, expected {expected}; reasons: {[p.reason for p in result.parts]}"
    for part, text in case.reasons.items():
        reason = next(p.reason for p in result.parts if p.grade_id == part)
        assert text in reason, f"{student}: the reason for {part} is {reason!r}; it should say {text!r}"
    for text in case.notes:
        assert any(text in note for note in result.notes), f"{student}: notes {result.notes} should mention {text!r}"


def test_the_whole_class_is_graded(cases, graded) -> None:
    assert sorted(graded) == sorted(cases)
    assert len(graded) == CLASS_SIZE


def test_sandbox_blocked_files_and_network(parallel) -> None:
    """The cheats' own printouts: every file and every address was out of reach."""
    autograded = parallel / "course" / "autograded"
    for student, found in (("reads_solutions", "leaked"), ("opens_socket", "reached")):
        nb = nbformat.read(autograded / student / ASSIGNMENT / "ps00.ipynb", as_version=4)
        printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
        assert f"{found}: []" in printed, f"{student} got through the sandbox:\n{printed}"
        assert "blocked:" in printed


def test_huge_output_is_truncated(parallel) -> None:
    autograded = parallel / "course" / "autograded"
    nb = nbformat.read(autograded / "huge_output" / ASSIGNMENT / "ps00.ipynb", as_version=4)
    lines = sum(o.get("text", "").count("\n") for c in nb.cells for o in c.get("outputs", []))
    assert lines <= 1100, f"{lines} lines of output kept"


def test_grading_one_by_one_gives_the_same_csv(tmp_path_factory, submissions, parallel) -> None:
    """Grading the same 30 students again, serially, gives a byte-identical CSV."""
    serial = _grade(tmp_path_factory, "hostile-serial", submissions, workers=1)
    in_parallel = (parallel / "grades.csv").read_text()
    assert (serial / "grades.csv").read_text() == in_parallel
    assert in_parallel.count("\n") == CLASS_SIZE + 1
