"""Run the benchmark suite and write benchmarks/results/latest.json, latest.md and scaling.png.

    python benchmarks/run.py                    # everything (tens of minutes: it builds the book twice)
    python benchmarks/run.py --quick            # fewer repeats and shapes, no book build, no grading
    python benchmarks/run.py --only lstm elman  # some suites; the others keep their last results

Suites (DESIGN §6, "speed"):

- ``lstm``: labkit's LSTM against torch.nn.LSTM, forward + backward (target ≤ 1.3×);
- ``elman``: the Elman RNN's manual BPTT against autograd and torch.nn.RNN (target ≤ 1.5× autograd);
- ``monitor``: a GradientMonitor's overhead per training step (global norms ≤ 10%, per-timestep ≤ 30%);
- ``scaling``: time against sequence length and hidden size (plotted in scaling.png);
- ``cuda``: where a GPU is present, the LSTM on it, its speed-up over the CPU and CPU/GPU agreement;
- ``problem_sets``: each problem set's solution autograded as a class of one (target < 60 s);
- ``grading``: 20 submissions graded with one worker and with one per core (benchmarks/grading_throughput.py);
- ``book``: a cold and a warm book build, each chapter's execution time (benchmarks/book_timings.py;
  target < 60 s per chapter).

Every suite runs with the same number of torch threads (``--threads``, default 1; OMP_NUM_THREADS is set to
match for the processes it starts) and records the load average before and after it, since a machine shared
with other jobs slows everything. Times are medians of interleaved repeats (``benchmarks/timing.py``);
every ratio is between methods timed side by side in the same run. The JSON is committed: the book's
appendix (book/appendix_benchmarks.md) reads it at build time instead of rerunning the suite.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SUITES = ("lstm", "elman", "monitor", "scaling", "cuda", "problem_sets", "grading", "book")
SLOW = ("problem_sets", "grading", "book")  # not in --quick
BUDGET_S = 60.0  # per chapter, per problem set
APPENDIX = ROOT / "book" / "appendix_benchmarks.md"


def machine_info(threads: int) -> dict:
    """What the numbers depend on: CPU, cores, memory, Python, torch, threads, devices."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(
        host=platform.node(), cpu=cpu, cores=os.cpu_count(), platform=platform.platform(),
        python=platform.python_version(), torch=torch.__version__, threads=threads,
        cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    )


# ------------------------------------------------------------------------------------------------ suites

def suite_lstm(args) -> dict:
    import lstm_vs_torch
    shapes = lstm_vs_torch.SHAPES[:1] if args.quick else lstm_vs_torch.SHAPES
    return dict(target=lstm_vs_torch.TARGET, rows=lstm_vs_torch.measure(args.repeats, shapes))


def suite_elman(args) -> dict:
    import bptt_vs_autograd
    return dict(target=bptt_vs_autograd.TARGET, rows=bptt_vs_autograd.measure(args.repeats))


def suite_monitor(args) -> dict:
    import monitor_overhead
    blocks = 4 if args.quick else 10
    return dict(targets=monitor_overhead.TARGETS, rows=monitor_overhead.measure(blocks=blocks))


def suite_scaling(args) -> dict:
    import scaling
    if args.quick:
        return scaling.measure(max(3, args.repeats // 4), lengths=[25, 50, 100], hidden_sizes=[32, 64, 128])
    return scaling.measure(max(3, args.repeats // 4))


def suite_cuda(args) -> dict:
    """The LSTM on the GPU: times, speed-up over the CPU run of the same shape, and CPU/GPU agreement."""
    import torch

    import lstm_vs_torch
    if not torch.cuda.is_available():
        return dict(available=False, note="no CUDA device (torch.cuda.is_available() is False)")
    device = torch.device("cuda")
    shapes = lstm_vs_torch.SHAPES[:1] if args.quick else lstm_vs_torch.SHAPES
    gpu = lstm_vs_torch.measure(args.repeats, shapes, device=device)
    cpu = lstm_vs_torch.measure(args.repeats, shapes)
    for g, c in zip(gpu, cpu):
        g["cpu_labkit_ms"], g["cpu_torch_ms"] = c["labkit_ms"], c["torch_ms"]
        g["labkit_speedup"], g["torch_speedup"] = c["labkit_ms"] / g["labkit_ms"], c["torch_ms"] / g["torch_ms"]
    return dict(available=True, device=torch.cuda.get_device_name(device), rows=gpu,
                agreement=cpu_gpu_agreement(device))


def cpu_gpu_agreement(device, rtol: float = 1e-4, atol: float = 1e-5) -> dict:
    """Largest CPU/GPU differences of labkit's LSTM (float32, B=16, T=100): outputs and every gradient."""
    import torch

    from labkit.models import LSTM
    x = torch.randn(16, 100, 8, generator=torch.Generator().manual_seed(2))
    results = {}
    for where in ("cpu", device):
        model = LSTM(8, 64, 4, generator=torch.Generator().manual_seed(3)).to(where)
        out = model(x.to(where)).outputs
        out.square().mean().backward()
        results[str(where)] = [out.detach().cpu()] + [p.grad.cpu() for p in model.parameters()]
    cpu, gpu = results.values()
    names = ["outputs"] + [f"grad {name}" for name, _ in LSTM(8, 64, 4).named_parameters()]
    diffs = {name: float((a - b).abs().max()) for name, a, b in zip(names, cpu, gpu)}
    agree = all(torch.allclose(a, b, rtol=rtol, atol=atol) for a, b in zip(cpu, gpu))
    return dict(max_abs_diff=diffs, rtol=rtol, atol=atol, agree=agree)


def suite_problem_sets(args) -> dict:
    """Autograde each problem set's solution as a class of one: the wall time, set-up included."""
    sys.path.insert(0, str(ROOT))
    from course.grade import GradingConfig, grade_class

    rows = []
    for folder in sorted((ROOT / "solutions").glob("ps*_*")):
        notebooks = sorted(folder.glob("ps*.ipynb"))
        if not notebooks:
            continue
        with tempfile.TemporaryDirectory(prefix="bench-grade-") as tmp:
            start = time.perf_counter()
            try:
                result = grade_class(folder.name, {"solution": notebooks[0]}, output=Path(tmp) / "out",
                                     config=GradingConfig(workers=1, canary=False))
                score = f"{result.results[0].total:g}/{result.results[0].max_score:g}"
                rows.append(dict(problem_set=folder.name, seconds=result.seconds, cpu_seconds=result.cpu_seconds,
                                 score=score))
            except Exception as error:  # one broken set must not hide the others' times
                rows.append(dict(problem_set=folder.name, seconds=time.perf_counter() - start, cpu_seconds=None,
                                 score=None, error=f"{type(error).__name__}: {error}"[:300]))
    return dict(target_s=BUDGET_S, rows=rows)


def suite_grading(args) -> dict:
    """benchmarks/grading_throughput.py's measurement: 20 copies of ps01's solution, 1 worker, then 1 per core."""
    sys.path.insert(0, str(ROOT))
    import grading_throughput as gt
    from course.grade import resolve_assignment

    assignment, students, cores = resolve_assignment("ps01"), 20, os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        fixed, _ = gt.grade_and_time(assignment, 1, Path(tmp) / "one", workers=1)
        rows = []
        for workers in dict.fromkeys((1, cores)):
            wall, cpu = gt.grade_and_time(assignment, students, Path(tmp) / f"workers-{workers}", workers)
            rows.append(dict(workers=workers, seconds=wall, cpu_seconds=cpu, per_notebook_s=wall / students,
                             notebooks_per_min=60 * students / wall))
    return dict(assignment=assignment, students=students, fixed_cost_s=fixed, rows=rows,
                speedup=rows[0]["seconds"] / rows[-1]["seconds"])


def suite_book(args) -> dict:
    """benchmarks/book_timings.py's measurement: a cold and a warm build, and each chapter's execution time."""
    import book_timings

    with tempfile.TemporaryDirectory(prefix="bench-book-") as output:
        output = Path(output)
        cold = book_timings.build(output)
        warm = book_timings.build(output)
        chapters = book_timings.chapter_times(output)
    return dict(target_s=book_timings.CHAPTER_BUDGET_S,
                cold=dict(wall_s=cold.wall_s, cpu_s=cold.cpu_s, ok=cold.ok),
                warm=dict(wall_s=warm.wall_s, cpu_s=warm.cpu_s, ok=warm.ok),
                chapters=[dict(chapter=name, seconds=seconds) for name, seconds in chapters.items()])


# ------------------------------------------------------------------------------------------------ report

def markdown(results: dict) -> str:
    """The results as Markdown tables (what latest.md holds and what the book's appendix shows)."""
    m = results["machine"]
    lines = ["# Benchmark results", "",
             f"{m['cpu']}, {m['cores']} cores, {m['threads']} torch thread(s); Python {m['python']}, "
             f"torch {m['torch']}; GPU: {m['cuda'] or 'none'}. Written {results['written']}.", ""]
    for name, section in results["suites"].items():
        meta = section.get("meta", {})
        load = meta.get("load_before"), meta.get("load_after")
        lines += [f"## {name}", "", f"Run {meta.get('started', '?')}, {meta.get('seconds', 0):.0f} s; load average "
                  f"(1 min) {load[0]} before, {load[1]} after.", ""]
        lines += TABLES[name](section) if name in TABLES else [f"```\n{json.dumps(section, indent=1)}\n```"]
        lines.append("")
    return "\n".join(lines)


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
        ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def _lstm_table(section: dict) -> list[str]:
    def autograd(r: dict) -> str:  # results written before the column existed have no autograd time
        return f"{r['autograd_ms']:.1f} ({r['autograd_ratio']:.2f}×)" if "autograd_ms" in r else "not measured"

    return _table(["shape", "device", "torch.nn.LSTM ms", "labkit ms", "labkit / torch", "CPU ms (torch, labkit)",
                   "labkit / torch (CPU)", "autograd of the loop ms (/ torch)"],
                  [[r["shape"], r["device"], f"{r['torch_ms']:.1f}", f"{r['labkit_ms']:.1f}", f"{r['ratio']:.2f}×",
                    f"{r['torch_cpu_ms']:.1f}, {r['labkit_cpu_ms']:.1f}", f"{r['ratio_cpu']:.2f}×", autograd(r)]
                   for r in section["rows"]])


def _elman_table(section: dict) -> list[str]:
    return _table(["method", "ms", "vs autograd", "(CPU time)"],
                  [[r["method"], f"{r['ms']:.1f}", f"{r['vs_autograd']:.2f}×", f"{r['vs_autograd_cpu']:.2f}×"]
                   for r in section["rows"]])


def _monitor_table(section: dict) -> list[str]:
    return _table(["model", "configuration", "ms", "overhead", "CPU ms", "overhead (CPU)", "target"],
                  [[r["model"], r["configuration"], f"{r['ms']:.1f}", f"{100 * r['overhead']:+.0f}%",
                    f"{r['cpu_ms']:.1f}", f"{100 * r['overhead_cpu']:+.0f}%",
                    f"≤ {100 * r['target']:.0f}%" if r["target"] else ""] for r in section["rows"]])


def _scaling_table(section: dict) -> list[str]:
    lines = []
    for axis, label in (("length", "T"), ("hidden", "H")):
        sweep = section[axis]
        lines += _table([label] + list(sweep["series"]),
                        [[value] + [f"{s['cpu_ms'][k]:.1f}" for s in sweep["series"].values()]
                         for k, value in enumerate(sweep["values"])]) + [""]
    return lines + ["CPU milliseconds, forward + backward; plot: scaling.png."]


def _cuda_table(section: dict) -> list[str]:
    if not section.get("available"):
        return [section.get("note", "no GPU")]
    rows = [[r["shape"], f"{r['torch_ms']:.1f}", f"{r['labkit_ms']:.1f}", f"{r['ratio']:.2f}×",
             f"{r['torch_speedup']:.1f}×", f"{r['labkit_speedup']:.1f}×"] for r in section["rows"]]
    agreement = section["agreement"]
    return _table(["shape", "torch.nn.LSTM ms", "labkit ms", "labkit / torch", "torch GPU/CPU speed-up",
                   "labkit GPU/CPU speed-up"], rows) + \
        ["", f"CPU/GPU agreement (float32, rtol {agreement['rtol']}, atol {agreement['atol']}): "
             f"{'yes' if agreement['agree'] else 'NO'}; largest difference "
             f"{max(agreement['max_abs_diff'].values()):.1e}."]


def _problem_sets_table(section: dict) -> list[str]:
    return _table(["problem set", "seconds", "score", "note"],
                  [[r["problem_set"], f"{r['seconds']:.1f}", r["score"] or "", r.get("error", "")]
                   for r in section["rows"]])


def _grading_table(section: dict) -> list[str]:
    return _table(["workers", "seconds", "s / notebook", "notebooks / min", "CPU s / notebook (kernels included)"],
                  [[r["workers"], f"{r['seconds']:.1f}", f"{r['per_notebook_s']:.2f}", f"{r['notebooks_per_min']:.1f}",
                    f"{r['cpu_seconds'] / section['students']:.2f}"] for r in section["rows"]]) + \
        ["", f"{section['students']} copies of the {section['assignment']} solution; parallel / serial "
             f"throughput {section['speedup']:.2f}×."]


def _book_table(section: dict) -> list[str]:
    return _table(["build", "wall s", "CPU s", "ok"],
                  [[name, f"{section[name]['wall_s']:.0f}", f"{section[name]['cpu_s']:.0f}", section[name]["ok"]]
                   for name in ("cold", "warm")]) + [""] + \
        _table(["chapter", "execution s"], [[r["chapter"], f"{r['seconds']:.1f}"] for r in section["chapters"]])


TABLES = {"lstm": _lstm_table, "elman": _elman_table, "monitor": _monitor_table, "scaling": _scaling_table,
          "cuda": _cuda_table, "problem_sets": _problem_sets_table, "grading": _grading_table, "book": _book_table}


def forget_cached_appendix(cache: Path = ROOT / "_build" / ".jupyter_cache") -> None:
    """Drop the book's cached execution of the appendix, which reads latest.json.

    jupyter-cache reruns a page only when its code cells change, and new results change none of them.
    """
    if not cache.is_dir():
        return
    from jupyter_cache import get_cache

    jcache = get_cache(str(cache))
    for record in jcache.list_cache_records():
        if Path(record.uri).name == APPENDIX.name:
            jcache.remove_cache(record.pk)


# ------------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--only", nargs="+", choices=SUITES, metavar="SUITE", help=f"run these: {', '.join(SUITES)}")
    parser.add_argument("--skip", nargs="+", choices=SUITES, default=[], metavar="SUITE", help="run all but these")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shapes; no book, grading, problem sets")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 20; 5 with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"where to write (default {RESULTS})")
    args = parser.parse_args()
    args.repeats = args.repeats or (5 if args.quick else 20)

    # before torch is imported, so that its thread pools and every process started from here agree
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))

    skip = set(args.skip) | (set(SLOW) if args.quick and not args.only else set())
    suites = [s for s in (args.only or SUITES) if s not in skip]
    args.output.mkdir(parents=True, exist_ok=True)
    latest = args.output / "latest.json"
    results = json.loads(latest.read_text()) if latest.exists() else {"suites": {}}
    results["machine"] = machine_info(args.threads)

    for name in suites:
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name} ...", flush=True)
        meta = dict(started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    load_before=round(os.getloadavg()[0], 2), threads=args.threads, quick=args.quick,
                    repeats=args.repeats, host=platform.node())
        start = time.perf_counter()
        section = globals()[f"suite_{name}"](args)
        meta.update(seconds=round(time.perf_counter() - start, 1), load_after=round(os.getloadavg()[0], 2))
        results["suites"][name] = {"meta": meta, **section}
        results["suites"] = {s: results["suites"][s] for s in SUITES if s in results["suites"]}
        results["written"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        latest.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")  # after every suite
        (args.output / "latest.md").write_text(markdown(results))
        if name == "scaling":
            import scaling
            scaling.plot(results["suites"]["scaling"], args.output / "scaling.png")
        print(f"[{datetime.datetime.now():%H:%M:%S}] {name} done in {meta['seconds']} s", flush=True)
    if args.output.resolve() == RESULTS:
        forget_cached_appendix()
    print(f"\nwrote {latest} and {args.output / 'latest.md'}")
    print((args.output / "latest.md").read_text())


if __name__ == "__main__":
    main()
