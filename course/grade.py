"""Grade a whole class: collect, autograde every student in parallel and in isolation, record, export.

``grade_class("ps01_gradient_descent", "submissions.zip")`` does, in order:

1. collects the submissions (``course.collect``): one notebook set per student, or a reason there is none;
2. releases the assignment into the class's course directory (``grades/<assignment>/course/``, an ordinary
   nbgrader course directory: formgrader, ``nbgrader generate_feedback`` and ``nbgrader export`` work in it)
   and into a template whose SQLite gradebook every student starts from;
3. grades the instructor's solution first, as a canary: if it does not score full marks here, something is
   wrong with the set-up (not with the students) and grading stops with an error;
4. grades every student in a process of its own, ``workers`` at a time, each in a course directory of its
   own with a copy of the template gradebook (``course.worker``; the kernel in ``course.sandbox``), so that
   no student can slow down, crash or see another; a process that overruns ``notebook_timeout`` is killed;
5. records each result in the class gradebook (``course.gradebook``, SQLite or PostgreSQL), in student
   order, copies the autograded notebooks and feedback into the course directory, writes ``grades.csv``
   and ``summary.txt`` (``course.export``).

Students' results are kept as ``results/<student>.json``, so the CSV can be rebuilt after manual grading
(``export_class``) and a regrade of some students keeps the others.
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from traitlets.config import PyFileConfigLoader

from course import export, feedback, gradebook
from course.collect import Submission, collect
from course.results import GRADED, Part, StudentResult, failed, parts_of
from course.sandbox import Limits, install_kernelspec, sandbox_problem

REPO_ROOT = Path(__file__).resolve().parent.parent
CANARY = "solution-canary"


class GradingError(RuntimeError):
    """The grading pipeline itself failed (not a student's work)."""


@dataclass(frozen=True)
class GradingConfig:
    """How to grade; the defaults suit a class on one machine."""

    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # students graded at once
    cell_timeout: float | None = None  # seconds per cell; None: nbgrader_config.py's ExecutePreprocessor.timeout
    notebook_timeout: float = 600.0  # seconds per student, all included; then the student's grading is killed
    limits: Limits = Limits()  # memory, CPU time and file size of a student's kernel
    grader_memory_mb: int = 4096  # memory of the process that grades one student (it holds the outputs)
    db_url: str | None = None  # the class gradebook; None: SQLite in the course directory
    sandbox: bool = True  # False runs students' code without bubblewrap even where it is available
    canary: bool = True  # grade the solution first and stop if it does not score full marks


@dataclass(frozen=True)
class ClassResult:
    """What ``grade_class`` did: this run's results, and where it put everything."""

    assignment: str
    results: list[StudentResult]
    parts: list[Part]
    output: Path
    csv: Path
    sandbox: str  # "bubblewrap" or "none: <why>"
    seconds: float  # wall-clock time, all included
    cpu_seconds: float  # CPU time of grading the students (kernels included), not of the set-up
    summary: str

    def by_student(self) -> dict[str, StudentResult]:
        """This run's results by student id."""
        return {r.student: r for r in self.results}


def resolve_assignment(name: str, root: Path = REPO_ROOT) -> str:
    """``"ps01"`` or ``"ps01_gradient_descent"`` -> the folder name in ``root/solutions``."""
    folders = sorted(p.name for p in (root / "solutions").glob("*") if p.is_dir())
    if name in folders:
        return name
    matches = [f for f in folders if f.startswith(f"{name}_")]
    if len(matches) != 1:
        have = ", ".join(folders) or "none"
        raise GradingError(f"no single problem set matches {name!r} in {root / 'solutions'} (have: {have})")
    return matches[0]


def course_settings(config_file: Path) -> tuple[str, float]:
    """The course id and the per-cell timeout (nbgrader's default, 30 s, if none) that ``nbgrader_config.py`` sets."""
    config = PyFileConfigLoader(config_file.name, path=str(config_file.parent)).load_config()
    timeout = 30.0
    for section in ("ExecutePreprocessor", "Execute"):
        if "timeout" in config[section]:
            timeout = float(config[section].timeout)
    return config.CourseDirectory.get("course_id", "default_course"), timeout


def grade_class(assignment: str, submissions: Path | Mapping[str, Path | Mapping[str, Path]],
                output: Path | None = None, root: Path = REPO_ROOT, config: GradingConfig = GradingConfig(),
                students: Sequence[str] | None = None) -> ClassResult:
    """Autograde, record, give feedback to and export the grades of every student in ``submissions``.

    Args:
        assignment: the problem set, ``"psNN"`` or its folder name in ``root/solutions``.
        submissions: a folder or zip (see ``course.collect``), or ``{student: notebook path}`` (or
            ``{student: {notebook name: path}}``).
        output: where the course directory, CSV, summary, results and logs go; default
            ``grades/<assignment>`` in the repository.
        root: the course: ``solutions/`` and ``nbgrader_config.py``.
        config: workers, limits, gradebook URL.
        students: grade only these (a regrade); the others' results in ``output`` are kept.

    Returns:
        The results of this run and where the files are.

    Raises:
        GradingError: when the pipeline (not a student's work) fails, e.g. the solution does not grade.
    """
    start = time.perf_counter()
    root = Path(root).resolve()
    assignment = resolve_assignment(assignment, root)
    source = root / "solutions" / assignment
    notebooks = sorted(p.stem for p in source.glob("*.ipynb"))
    if not notebooks:
        raise GradingError(f"{source} holds no notebook")
    parts = parts_of({n: source / f"{n}.ipynb" for n in notebooks})
    output = Path(output or REPO_ROOT / "grades" / assignment).resolve()
    class_dir = output / "course"
    db_url = gradebook.database_url(config.db_url, class_dir)
    config_file = root / "nbgrader_config.py"
    course_id, configured_timeout = course_settings(config_file)
    cell_timeout = config.cell_timeout or configured_timeout
    problem = sandbox_problem() if config.sandbox else "the sandbox was turned off (GradingConfig.sandbox=False)"
    sandbox = "bubblewrap" if problem is None else f"none: {problem}"

    with tempfile.TemporaryDirectory(prefix="grading-") as tmp:
        work = Path(tmp)
        collected = _submissions(submissions, notebooks, work)
        if students is not None:
            unknown = sorted(set(students) - {s.student for s in collected})
            if unknown:
                raise GradingError(f"no submission from {', '.join(unknown)} in {submissions}")
            collected = [s for s in collected if s.student in set(students)]
        install_kernelspec(work / "jupyter", config.limits, sandbox=problem is None)
        runner = _Runner(work, assignment, course_id, parts, config_file, config, cell_timeout, sandbox)
        _prepare(runner, config_file, source, class_dir, db_url, work / "template", assignment)
        if config.canary:
            _check_canary(runner, Submission(CANARY, {n: source / f"{n}.ipynb" for n in notebooks}))
        with ThreadPoolExecutor(max(1, config.workers)) as pool:
            results = list(pool.map(runner.grade, collected))
        used = [p for p in (work / "students").glob("*/cpu_seconds") if p.parent.name != CANARY]
        cpu_seconds = sum(float(p.read_text()) for p in used)
        for result in sorted(results, key=lambda r: r.student):
            _store(runner, result, class_dir, output, db_url, notebooks)

    seconds = time.perf_counter() - start
    csv_path = export_class(output, assignment)
    paths = {"grades": str(csv_path), "feedback": str(class_dir / "feedback" / "<student>" / assignment),
             "gradebook": db_url if config.db_url else str(class_dir / "gradebook.db"), "logs": str(output / "logs")}
    warning = "" if problem is None else f"students' code ran WITHOUT a sandbox: {problem}"
    text = export.summary(assignment, results, seconds, cpu_seconds, config.workers, sandbox, warning, paths)
    (output / "summary.txt").write_text(text)
    return ClassResult(assignment, results, parts, output, csv_path, sandbox, seconds, cpu_seconds, text)


def export_class(output: Path, assignment: str) -> Path:
    """(Re)write ``output/grades.csv`` from the stored results and the gradebook's current scores.

    Run it after grading by hand in formgrader: the CSV then shows the manual scores. Everything it needs
    is in ``output``: the results, and the course directory's configuration, which names the gradebook.
    """
    class_dir = Path(output) / "course"
    config = PyFileConfigLoader("nbgrader_config.py", path=str(class_dir)).load_config()
    source = class_dir / "solutions" / assignment
    parts = parts_of({p.stem: p for p in source.glob("*.ipynb")})
    results = [StudentResult.from_json(p.read_text()) for p in sorted((Path(output) / "results").glob("*.json"))]
    db_url = config.CourseDirectory.get("db_url") or gradebook.database_url(None, class_dir)
    current = gradebook.scores(db_url, config.CourseDirectory.course_id, assignment)
    rows = [export.with_scores(r, current.get(r.student)) for r in results]
    return export.write_csv(Path(output) / "grades.csv", rows, parts)


def _submissions(submissions, notebooks: list[str], work: Path) -> list[Submission]:
    """``collect`` for a folder or zip; a mapping of paths is taken as given (and checked the same way)."""
    if not isinstance(submissions, Mapping):
        return collect(Path(submissions), notebooks, work)
    staged = work / "given"
    for student, files in submissions.items():
        files = files if isinstance(files, Mapping) else {notebooks[0]: files}
        for name, path in files.items():
            (staged / student).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, staged / student / f"{name}.ipynb")
    return collect(staged, notebooks, work)


class _Runner:
    """Starts the child processes that prepare the course and grade students, and enforces their time limit."""

    def __init__(self, work: Path, assignment: str, course_id: str, parts: list[Part], config_file: Path,
                 config: GradingConfig, cell_timeout: float, sandbox: str):
        self.work, self.assignment, self.course_id, self.parts = work, assignment, course_id, parts
        self.config_file, self.config, self.cell_timeout, self.sandbox = config_file, config, cell_timeout, sandbox
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["course.worker"])  # import nbgrader once, fork per student

    def run(self, target: str, *args, timeout: float | None = None) -> int | None:
        """Run ``course.worker.<target>(*args)`` in a child; its exit code, or ``None`` if it ran out of time."""
        from course import worker

        process = self.context.Process(target=getattr(worker, target), args=args)
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()  # the kernel dies with it (bwrap --die-with-parent, or PR_SET_PDEATHSIG)
            process.join()
            return None
        return process.exitcode

    def job(self, submission: Submission):
        """A course directory of the student's own (source, template gradebook, submission) and its ``Job``."""
        from course.worker import GRADEBOOK, Job

        folder = self.work / "students" / submission.student
        course_dir = folder / "course"
        shutil.copytree(self.work / "template" / "solutions" / self.assignment, course_dir / "solutions" / self.assignment)
        shutil.copy(self.work / "template" / GRADEBOOK, course_dir / GRADEBOOK)
        submitted = course_dir / "submitted" / submission.student / self.assignment
        submitted.mkdir(parents=True)
        for name, path in submission.notebooks.items():
            shutil.copy(path, submitted / f"{name}.ipynb")
        (folder / "runtime").mkdir()
        return Job(self.assignment, submission.student, self.course_id, course_dir, self.work / "jupyter",
                   folder / "runtime",
                   self.config_file, tuple(self.parts), self.cell_timeout, self.config.limits.memory_mb,
                   self.config.grader_memory_mb, submission.notes)

    def grade(self, submission: Submission) -> StudentResult:
        """Grade one student in a child process; never raises for a problem with the student's work."""
        return dataclasses.replace(self._grade(submission), sandbox=self.sandbox)

    def _grade(self, submission: Submission) -> StudentResult:
        if submission.problem:
            return failed(submission.student, self.parts, submission.problem, submission.notes)
        job = self.job(submission)
        code = self.run("grade_student", job, timeout=self.config.notebook_timeout)
        if code is None:
            reason = f"grading stopped after {self.config.notebook_timeout:g} s (the time limit per notebook)"
        elif code != 0 or not job.result_file.exists():
            reason = f"the grading process died (exit code {code}): see the log"
        else:
            return StudentResult.from_json(job.result_file.read_text())
        return failed(submission.student, self.parts, reason, submission.notes)


def _prepare(runner: _Runner, config_file: Path, source: Path, class_dir: Path, db_url: str, template: Path,
             assignment: str) -> None:
    """Release the assignment in the class's course directory and in the template the students start from."""
    courses = ((class_dir, db_url), (template, gradebook.database_url(None, template)))
    for course_dir, url in courses:
        target = course_dir / "solutions" / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        own = url != gradebook.database_url(None, course_dir)  # else nbgrader's default, and the folder can move
        (course_dir / "nbgrader_config.py").write_text(feedback.course_config(config_file, REPO_ROOT, url if own else None))
    with ThreadPoolExecutor(len(courses)) as pool:  # the two are independent
        codes = list(pool.map(lambda c: runner.run("prepare_course", config_file, c[0], c[1], assignment), courses))
    for (course_dir, url), code in zip(courses, codes):
        if code != 0:
            raise GradingError(f"could not release {assignment} into {course_dir} (gradebook {url}); see the error above")


def _check_canary(runner: _Runner, solution: Submission) -> None:
    """Grade the instructor's solution; raise ``GradingError`` unless it scores full marks."""
    result = runner.grade(solution)
    lost = [f"{p.grade_id}: {p.reason}" for p in result.parts if p.score is not None and p.score < p.max_score]
    if result.status != GRADED or lost:
        raise GradingError(f"the solution of {runner.assignment} does not score full marks when graded here, so the "
                           f"class was not graded. Fix the set-up first: {result.reason or '; '.join(lost)}")


def _store(runner: _Runner, result: StudentResult, class_dir: Path, output: Path, db_url: str,
           notebooks: list[str]) -> None:
    """Put one student's result in the gradebook, the course directory and ``output/results``."""
    from course.worker import copy_outputs

    gradebook.record(db_url, runner.course_id, runner.assignment, result)
    folder = runner.work / "students" / result.student
    copy_outputs(folder / "course", class_dir, result.student, runner.assignment)
    for name in ("results", "logs"):
        (output / name).mkdir(parents=True, exist_ok=True)
    (output / "results" / f"{result.student}.json").write_text(result.to_json())
    if (folder / "grading.log").exists():
        shutil.copy(folder / "grading.log", output / "logs" / f"{result.student}.log")
    if result.status != GRADED:
        feedback.write_failure_page(class_dir, runner.assignment, notebooks, result)
