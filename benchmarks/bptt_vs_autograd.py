"""Time labkit's hand-written BPTT against autograd and torch.nn.RNN on the same Elman RNN (forward + backward).

    python benchmarks/bptt_vs_autograd.py [--repeats 30] [--threads N]

Shapes: batch 64, T = 100, I = 8, H = 128, readout to 8 outputs, float32 on the CPU, MSE on every step.
Prints the median time of each method over the repeats (timed side by side) and its ratio to autograd;
the target for the manual BPTT is 1.5× autograd at most.
"""
from __future__ import annotations

import argparse

import torch

from labkit.bptt import elman_bptt
from labkit.models import ElmanRNN
from timing import interleaved

BATCH, STEPS, INPUTS, HIDDEN, OUTPUTS = 64, 100, 8, 128, 8
TARGET = 1.5  # manual BPTT / autograd


def measure(repeats: int) -> list[dict]:
    """One row per method: median wall and CPU milliseconds, and the ratios to autograd."""
    gen = torch.Generator().manual_seed(0)
    model = ElmanRNN(INPUTS, HIDDEN, OUTPUTS, generator=gen)
    rnn, readout = model.to_torch()
    x = torch.randn(BATCH, STEPS, INPUTS, generator=gen)  # (B, T, I)
    y = torch.randn(BATCH, STEPS, OUTPUTS, generator=gen)  # (B, T, O)

    def loss_fn(outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((outputs - target) ** 2).mean()

    def autograd() -> None:
        model.zero_grad()
        loss_fn(model(x).outputs, y).backward()

    def torch_rnn() -> None:
        rnn.zero_grad()
        readout.zero_grad()
        loss_fn(readout(rnn(x)[0]), y).backward()

    times = interleaved({
        "autograd (forward + backward)": autograd,
        "manual BPTT": lambda: elman_bptt(model, x, y, loss_fn),
        "manual BPTT + Jacobian norms": lambda: elman_bptt(model, x, y, loss_fn, jacobian_norms=True),
        "torch.nn.RNN + readout": torch_rnn,
    }, repeats)
    reference = times["autograd (forward + backward)"]
    return [dict(method=name, ms=1e3 * t.wall, cpu_ms=1e3 * t.cpu, vs_autograd=t.wall / reference.wall,
                 vs_autograd_cpu=t.cpu / reference.cpu, repeats=repeats)
            for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = measure(args.repeats)
    print(f"Elman RNN, B={BATCH} T={STEPS} I={INPUTS} H={HIDDEN} O={OUTPUTS}, float32, CPU, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'method':<32}{'ms':>10}{'vs autograd':>14}{'(CPU time)':>12}")
    for row in rows:
        print(f"{row['method']:<32}{row['ms']:>10.2f}{row['vs_autograd']:>13.2f}x{row['vs_autograd_cpu']:>11.2f}x")


if __name__ == "__main__":
    main()
