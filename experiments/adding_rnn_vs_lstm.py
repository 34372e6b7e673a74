"""The tanh RNN against the LSTM on the adding problem (T = 100), several seeds: writes the JSON chapter 8 plots.

Usage (from the repository root)::

    .venv/bin/python experiments/adding_rnn_vs_lstm.py                  # the book's settings
    .venv/bin/python experiments/adding_rnn_vs_lstm.py --seeds 0 1 2 3 --steps 4000 --jobs 4 --out /tmp/x.json

Each (model, seed) run trains in its own process on one thread, ``--jobs`` at a time; the settings are
:class:`labkit.rnn_vs_lstm.AddingRace`'s defaults unless overridden here. The result, with the settings, the
command and the library versions, goes to ``book/data/adding_rnn_vs_lstm.json`` (or ``--out``). A run is
deterministic for a given seed on a given machine and library version; on another machine the float32
arithmetic may differ in the last bits, and over thousands of steps the curves with it, though not the verdict.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from labkit.rnn_vs_lstm import MODELS, AddingRace, run_record, train_one  # noqa: E402

DEFAULT_OUT = REPO_ROOT / "book" / "data" / "adding_rnn_vs_lstm.json"


class _Progress:
    """Print the mean training loss every ``every`` steps, so that a long run can be watched."""

    def __init__(self, label: str, every: int = 250) -> None:
        self.label, self.every, self.losses, self.start = label, every, [], time.perf_counter()

    def after_backward(self, step: int, model: torch.nn.Module, loss: torch.Tensor) -> None:
        self.losses.append(loss.item())
        if (step + 1) % self.every == 0:
            print(f"  {self.label}: step {step + 1}, mean training loss {sum(self.losses) / len(self.losses):.4f} "
                  f"({time.perf_counter() - self.start:.0f} s)", flush=True)
            self.losses = []


def _one_run(job: tuple[str, dict, int]) -> tuple[str, int, dict]:
    kind, settings, seed = job
    torch.set_num_threads(1)  # one small model per process: more threads only contend
    history = train_one(kind, AddingRace(**settings), seed, callbacks=[_Progress(f"{kind} seed {seed}")])
    return kind, seed, run_record(history)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--jobs", type=int, default=6, help="runs trained at the same time (processes)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    for field in fields(AddingRace):
        kind = {"float": float, "str": str}.get(field.type, int)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind, default=None,
                            help=f"default: {field.default}")
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(AddingRace) if getattr(args, f.name) is not None}
    race = AddingRace(**overrides)

    start = time.perf_counter()
    # the longer LSTM runs first, so that the shorter RNN runs fill the gaps at the end
    order = sorted(args.models, key=lambda kind: kind != "lstm")
    jobs = [(kind, race.to_dict(), seed) for kind in order for seed in args.seeds]
    runs: dict[str, dict[str, dict]] = {kind: {} for kind in args.models}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for kind, seed, record in pool.map(_one_run, jobs):
            runs[kind][str(seed)] = record
            final = record["evals"][-1][1]
            print(f"{kind:>4} seed {seed}: held-out MSE {final:.4f} after {record['steps_completed']} steps "
                  f"({record['wall_time_s']:.0f} s)", flush=True)
    result = {
        "description": "tanh RNN vs LSTM on the adding problem (uRNN variant); held-out MSE every eval_every steps",
        "command": " ".join(["python", "experiments/adding_rnn_vs_lstm.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": race.to_dict(),
        "seeds": args.seeds,
        "baseline": race.task.baseline,
        "runs": {kind: dict(sorted(r.items(), key=lambda item: int(item[0]))) for kind, r in runs.items()},
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "machine": platform.machine(), "threads_per_run": 1},
        "wall_time_s": round(time.perf_counter() - start),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
