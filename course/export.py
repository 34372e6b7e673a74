"""The class's grades as a CSV file, and a summary for the instructor.

``grades.csv`` has one row per student, sorted: ``student``, one column per graded part (in notebook
order), ``total``, ``max_score``, ``status`` (``graded`` or ``failed``), ``reason`` (why points were lost,
or why nothing could be graded), ``notes`` (renamed or late files, undone tampering, truncated output) and
``sandbox``. It is a pure function of the submissions: grading the same work again gives the same file.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import statistics
from pathlib import Path
from typing import Sequence

from course.results import FAILED, Part, PartResult, StudentResult


def with_scores(result: StudentResult, scores: dict[str, float | None] | None) -> StudentResult:
    """``result`` with the gradebook's current scores (which include manual grades) where it has them."""
    if not scores:
        return result
    return dataclasses.replace(result, parts=tuple(_rescored(p, scores.get(p.grade_id, p.score)) for p in result.parts))


def _rescored(part: PartResult, score: float | None) -> PartResult:
    """``part`` with the gradebook's ``score``; its reason goes once the part is graded by hand or in full."""
    if score is None or score == part.score:
        return dataclasses.replace(part, score=score)
    if part.score is None or score >= part.max_score:
        return PartResult(part.grade_id, score, part.max_score)
    return PartResult(part.grade_id, score, part.max_score, f"{part.reason} (score changed by hand)".lstrip())


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def grades_csv(results: Sequence[StudentResult], parts: Sequence[Part]) -> str:
    """The CSV text for ``results``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["student", *(p.grade_id for p in parts), "total", "max_score", "status", "reason", "notes", "sandbox"])
    for result in sorted(results, key=lambda r: r.student):
        by_id = {p.grade_id: p for p in result.parts}
        lost = "; ".join(f"{p.grade_id}: {p.reason}" for p in result.parts if p.reason)
        writer.writerow([
            result.student, *(_number(by_id[p.grade_id].score if p.grade_id in by_id else None) for p in parts),
            _number(result.total), _number(result.max_score), result.status,
            result.reason if result.status == FAILED else lost, "; ".join(result.notes), result.sandbox,
        ])
    return out.getvalue()


def summary(assignment: str, results: Sequence[StudentResult], seconds: float, cpu_seconds: float, workers: int,
            sandbox: str, warning: str, paths: dict[str, str]) -> str:
    """A short report: how many students, the mean, who failed and why, what to review, where things are."""
    lines = []
    if warning:
        lines += ["!" * 78, f"WARNING: {warning}", "!" * 78]
    n = len(results)
    per = f" ({cpu_seconds / n:.1f} s of CPU per notebook)" if n else ""
    lines.append(f"{assignment}: {n} students graded in {seconds:.1f} s with {workers} workers{per}; sandbox: {sandbox}")
    if n:
        totals = [r.total for r in results]
        best = max(r.max_score for r in results)
        lines.append(f"  mean {statistics.fmean(totals):.2f} / {best:g} ({100 * statistics.fmean(totals) / best:.0f}%), "
                     f"median {statistics.median(totals):g}, full marks {sum(t == best for t in totals)}, "
                     f"zero {sum(t == 0 for t in totals)}")
    failures = [r for r in results if r.status == FAILED]
    if failures:
        lines.append(f"  not graded ({len(failures)}):")
        lines += [f"    {r.student}: {r.reason}" for r in sorted(failures, key=lambda r: r.student)]
    flagged = [r for r in results if any("tampering" in n or "guard" in n for n in r.notes)]
    if flagged:
        lines.append(f"  flagged for review ({len(flagged)}):")
        lines += [f"    {r.student}: {'; '.join(r.notes)}" for r in sorted(flagged, key=lambda r: r.student)]
    lines += [f"{name + ':':10} {path}" for name, path in paths.items()]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: Sequence[StudentResult], parts: Sequence[Part]) -> Path:
    path.write_text(grades_csv(results, parts))
    return path
