"""Forward + backward time of labkit's from-scratch LSTM against torch.nn.LSTM on the same weights.

DESIGN §6 asks for the from-scratch LSTM to be within a small factor of ``torch.nn.LSTM`` (the target: 1.3×).
Both models run in float32 with identical weights, timed side by side (``benchmarks/timing.py``).

    python benchmarks/lstm_vs_torch.py [--repeats 20] [--threads N] [--device cuda]
"""
from __future__ import annotations

import argparse
import platform
from typing import Callable

import torch
from torch import nn

from labkit.models import LSTM
from timing import interleaved

SHAPES = [  # (batch, length, input, hidden)
    (64, 100, 8, 128),
    (64, 200, 8, 256),
]
TARGET = 1.3  # labkit / torch, forward + backward


def models(inputs: int, hidden: int, device: torch.device | str = "cpu") -> tuple[nn.LSTM, LSTM]:
    """A seeded torch.nn.LSTM and a labkit LSTM holding the same weights."""
    torch.manual_seed(0)
    reference = nn.LSTM(inputs, hidden, batch_first=True).to(device)
    return reference, LSTM.from_torch(reference)


def compare(batch: int, length: int, inputs: int, hidden: int, repeats: int, warmup: int = 2,
            device: torch.device | str = "cpu") -> dict:
    """Median forward + backward times of torch.nn.LSTM and labkit's LSTM on one shape."""
    reference, ours = models(inputs, hidden, device)
    x = torch.randn(batch, length, inputs, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():  # same weights, same function: check before timing anything
        difference = float((ours(x).outputs - reference(x)[0]).abs().max())
    # on a GPU, cuDNN may compute in TF32 (10-bit mantissa): a looser tolerance there
    if difference > (1e-5 if x.device.type == "cpu" else 1e-3):
        raise AssertionError(f"labkit's LSTM and torch.nn.LSTM differ by {difference:.1e} on {x.device}")

    def step(forward) -> Callable[[], None]:
        def run() -> None:
            reference.zero_grad(set_to_none=True)
            ours.zero_grad(set_to_none=True)
            forward(x).sum().backward()
        return run

    times = interleaved({"torch": step(lambda x: reference(x)[0]),
                         "labkit": step(lambda x: ours(x).outputs),  # the hand-written backward (fused_lstm)
                         "autograd": step(lambda x: ours.forward_by_autograd(x).outputs)},  # autograd of the loop
                        repeats, warmup, device=device)
    torch_t, labkit_t, autograd_t = times["torch"], times["labkit"], times["autograd"]
    return dict(shape=f"B={batch}, T={length}, I={inputs}, H={hidden}", device=str(torch.device(device)),
                torch_ms=1e3 * torch_t.wall, labkit_ms=1e3 * labkit_t.wall, autograd_ms=1e3 * autograd_t.wall,
                torch_cpu_ms=1e3 * torch_t.cpu, labkit_cpu_ms=1e3 * labkit_t.cpu,
                ratio=labkit_t.wall / torch_t.wall, ratio_cpu=labkit_t.cpu / torch_t.cpu,
                autograd_ratio=autograd_t.wall / torch_t.wall, max_abs_diff=difference, repeats=repeats)


def measure(repeats: int, shapes: list[tuple[int, int, int, int]] = SHAPES,
            device: torch.device | str = "cpu") -> list[dict]:
    """One row per shape (see :func:`compare`)."""
    return [compare(*shape, repeats=repeats, device=device) for shape in shapes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per model and shape")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{torch.get_num_threads()} thread(s), {args.device}, float32, median of {args.repeats} interleaved "
          f"repeats (forward + backward)\n")
    print("| shape | torch.nn.LSTM (ms) | labkit LSTM (ms) | labkit / torch | CPU time ratio "
          "| autograd of the loop / torch |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in measure(args.repeats, device=args.device):
        print(f"| {row['shape']} | {row['torch_ms']:.1f} | {row['labkit_ms']:.1f} | {row['ratio']:.2f}x "
              f"| {row['ratio_cpu']:.2f}x | {row['autograd_ratio']:.2f}x |")


if __name__ == "__main__":
    main()
