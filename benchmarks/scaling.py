"""How forward + backward time grows with the sequence length T and the hidden size H.

Backpropagation through time does a fixed amount of work per step, so the time should be a straight line
through (nearly) the origin in T; an O(T²) trap (indexing a precomputed tensor at every step, growing a
tensor with ``torch.cat``) would bend it upwards. In H the per-step matrix product makes it grow up to H².
``tests/test_scaling.py`` guards the linearity in T with operation counts and memory, which a busy machine
does not disturb; this measures the time itself.

    python benchmarks/scaling.py [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from labkit.models import LSTM, ElmanRNN
from timing import interleaved

BATCH, INPUTS = 32, 8
LENGTHS = [25, 50, 100, 200, 400]
HIDDEN_SIZES = [32, 64, 128, 256]
HIDDEN, LENGTH = 128, 100  # held fixed while the other varies


def _runs(length: int, hidden: int) -> dict:
    torch.manual_seed(0)
    reference = nn.LSTM(INPUTS, hidden, batch_first=True)
    lstm = LSTM.from_torch(reference)
    elman = ElmanRNN(INPUTS, hidden)
    x = torch.randn(BATCH, length, INPUTS, generator=torch.Generator().manual_seed(1))

    def run(forward):
        def step() -> None:
            forward().sum().backward()
        return step

    return {"labkit LSTM": run(lambda: lstm(x).outputs), "torch.nn.LSTM": run(lambda: reference(x)[0]),
            "labkit ElmanRNN": run(lambda: elman(x).outputs)}


def measure(repeats: int, lengths: list[int] = LENGTHS, hidden_sizes: list[int] = HIDDEN_SIZES) -> dict:
    """Median wall and CPU milliseconds per model, against T (at H = 128) and against H (at T = 100)."""
    def sweep(points: list[int], shape) -> dict:
        series: dict[str, dict[str, list[float]]] = {}
        for point in points:
            for name, timing in interleaved(_runs(*shape(point)), repeats).items():
                entry = series.setdefault(name, {"ms": [], "cpu_ms": []})
                entry["ms"].append(1e3 * timing.wall)
                entry["cpu_ms"].append(1e3 * timing.cpu)
        return series

    return dict(batch=BATCH, inputs=INPUTS, repeats=repeats,
                length=dict(hidden=HIDDEN, values=lengths, series=sweep(lengths, lambda t: (t, HIDDEN))),
                hidden=dict(length=LENGTH, values=hidden_sizes, series=sweep(hidden_sizes, lambda h: (LENGTH, h))))


def plot(result: dict, path=None, key: str = "cpu_ms"):
    """Two panels, time against T and against H, from :func:`measure`'s result (or the saved JSON)."""
    import matplotlib
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, axis, label in ((axes[0], "length", "sequence length T"), (axes[1], "hidden", "hidden size H")):
        sweep = result[axis]
        for name, series in sweep["series"].items():
            ax.plot(sweep["values"], series[key], marker="o", label=name)
        ax.set_xlabel(label)
        ax.set_ylabel(f"forward + backward, {'CPU' if key == 'cpu_ms' else 'wall'} ms")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"time against T (B = {result['batch']}, H = {result['length']['hidden']})")
    axes[1].set_title(f"time against H (B = {result['batch']}, T = {result['hidden']['length']})")
    axes[0].legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = measure(args.repeats)
    for axis in ("length", "hidden"):
        print(f"\n{axis}: {result[axis]['values']}")
        for name, series in result[axis]["series"].items():
            print(f"  {name:18s} " + " ".join(f"{ms:8.1f}" for ms in series["cpu_ms"]) + "  (CPU ms)")


if __name__ == "__main__":
    main()
