"""Forward + backward time of labkit's from-scratch LSTM against torch.nn.LSTM on the same weights.

DESIGN §6 asks for the from-scratch LSTM to be within a small factor of ``torch.nn.LSTM``. Both models
run on the CPU in float32 with identical weights; the two are timed alternately (the order flips every
repeat) so that a change in machine load hits both, and the median of the repeats is reported.

    python benchmarks/lstm_vs_torch.py [--repeats 20] [--threads N]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch import nn

from labkit.models import LSTM

SHAPES = [  # (batch, length, input, hidden)
    (64, 100, 8, 128),
    (64, 200, 8, 256),
]


def forward_backward_seconds(model: nn.Module, x: torch.Tensor, labkit: bool) -> float:
    """Wall time of one forward pass and one backward pass of ``sum(outputs)``."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    outputs = model(x).outputs if labkit else model(x)[0]
    outputs.sum().backward()
    return time.perf_counter() - start


def compare(batch: int, length: int, inputs: int, hidden: int, repeats: int, warmup: int) -> dict:
    torch.manual_seed(0)
    reference = nn.LSTM(inputs, hidden, batch_first=True)
    ours = LSTM.from_torch(reference)
    x = torch.randn(batch, length, inputs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # same weights, same function: check before timing anything
        torch.testing.assert_close(ours(x).outputs, reference(x)[0], rtol=1e-5, atol=1e-5)
    times = {"torch": [], "labkit": []}
    for r in range(warmup + repeats):
        order = [("torch", reference, False), ("labkit", ours, True)]
        for name, model, labkit in order if r % 2 == 0 else order[::-1]:
            seconds = forward_backward_seconds(model, x, labkit)
            if r >= warmup:
                times[name].append(seconds)
    torch_ms = 1e3 * statistics.median(times["torch"])
    labkit_ms = 1e3 * statistics.median(times["labkit"])
    return dict(shape=f"B={batch}, T={length}, I={inputs}, H={hidden}", torch_ms=torch_ms,
                labkit_ms=labkit_ms, ratio=labkit_ms / torch_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per model and shape")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repeats first")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.processor() or platform.machine()}, "
          f"torch.get_num_threads() = {torch.get_num_threads()}, CPU, float32, "
          f"median of {args.repeats} interleaved repeats (forward + backward)\n")
    print("| shape | torch.nn.LSTM (ms) | labkit LSTM (ms) | labkit / torch |")
    print("|---|---:|---:|---:|")
    for shape in SHAPES:
        row = compare(*shape, repeats=args.repeats, warmup=args.warmup)
        print(f"| {row['shape']} | {row['torch_ms']:.1f} | {row['labkit_ms']:.1f} | {row['ratio']:.2f}x |")


if __name__ == "__main__":
    main()
