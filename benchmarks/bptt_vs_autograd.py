"""Time labkit's hand-written BPTT against autograd on the same Elman RNN (forward + backward).

    python benchmarks/bptt_vs_autograd.py [--repeats 30] [--threads N]

Shapes: batch 64, T = 100, I = 8, H = 128, readout to 8 outputs, float32 on the CPU, MSE on every step.
Prints the median time of each method over the repeats (taken in turns) and its ratio to autograd.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from labkit.bptt import elman_bptt
from labkit.models import ElmanRNN

BATCH, STEPS, INPUTS, HIDDEN, OUTPUTS = 64, 100, 8, 128, 8


def median_seconds(methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median wall-clock seconds of each method; the methods take turns, so a busy machine slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for round_ in range(warmup + repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    model = ElmanRNN(INPUTS, HIDDEN, OUTPUTS, generator=gen)
    x = torch.randn(BATCH, STEPS, INPUTS, generator=gen)  # (B, T, I)
    y = torch.randn(BATCH, STEPS, OUTPUTS, generator=gen)  # (B, T, O)

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((outputs - target) ** 2).mean()

    def autograd() -> None:
        model.zero_grad()
        loss_fn(model(x).outputs, y).backward()

    methods = {
        "autograd (forward + backward)": autograd,
        "manual BPTT": lambda: elman_bptt(model, x, y, loss_fn),
        "manual BPTT + Jacobian norms": lambda: elman_bptt(model, x, y, loss_fn, jacobian_norms=True),
    }
    times = median_seconds(methods, args.repeats)

    print(f"Elman RNN, B={BATCH} T={STEPS} I={INPUTS} H={HIDDEN} O={OUTPUTS}, float32, CPU, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'method':<32}{'ms':>10}{'vs autograd':>14}")
    reference = times["autograd (forward + backward)"]
    for name, seconds in times.items():
        print(f"{name:<32}{1e3 * seconds:>10.2f}{seconds / reference:>13.2f}x")


if __name__ == "__main__":
    main()
