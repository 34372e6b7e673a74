"""What does leaving a GradientMonitor on cost? Median training-step time with and without it.

One training step = forward, loss, zero_grad, backward, [monitor.after_backward], Adam step,
[monitor.after_step], on a fixed adding-problem batch. The configurations are timed interleaved (one
block of steps of each in turn, repeated) so that a machine whose speed drifts affects them all alike.
Per configuration:

- ``wall`` and ``cpu``: the median wall-clock and process-CPU time of a whole step, each with its
  overhead over the unmonitored step. Only whole steps show the cost of per-timestep recording, which
  is paid inside forward/backward (``retain_grad`` on every h_t). On a machine shared with other jobs
  the wall-clock difference is noisy; the CPU time of this process is much less disturbed by them.
- ``in monitor``: the mean time spent inside the monitor's two callbacks (the mean, so that the
  spectrum measured every ``spectral_every`` steps is paid in full), as a share of the unmonitored
  step: the direct, low-noise measure of the bookkeeping itself.

Run: ``python benchmarks/monitor_overhead.py [--hidden 128 --batch 64 --seq-len 100 --blocks 15]``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from labkit.models import LSTM, ElmanRNN
from labkit.monitor import GradientMonitor
from labkit.tasks import SequenceTask

CONFIGS: dict[str, Callable[[nn.Module], GradientMonitor | None]] = {
    "no monitor": lambda model: None,
    "global norms only": lambda model: GradientMonitor(model, per_parameter=False, recurrent_weight=None),
    "per-parameter (default)": lambda model: GradientMonitor(model),
    "+ spectrum every step": lambda model: GradientMonitor(model, spectral_every=1),
    "+ per-timestep ‖∂L/∂h_t‖": lambda model: GradientMonitor(model, per_timestep=True),
}
TARGETS = {"global norms only": 0.10, "+ per-timestep ‖∂L/∂h_t‖": 0.30}  # largest overhead per training step


class Runner:
    """One configuration: its own copy of the model, its optimizer, its monitor and its timings."""

    def __init__(self, model: nn.Module, make_monitor: Callable[[nn.Module], GradientMonitor | None]) -> None:
        self.model = copy.deepcopy(model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.monitor = make_monitor(self.model)
        self.wall_times: list[float] = []
        self.cpu_times: list[float] = []
        self.monitor_times: list[float] = []
        self.step = 0

    def run(self, steps: int, x: torch.Tensor, y: torch.Tensor, task: SequenceTask) -> None:
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            loss = task.loss(self.model(x).outputs, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            in_monitor = 0.0
            if self.monitor is not None:
                t = time.perf_counter()
                self.monitor.after_backward(self.step, self.model, loss.detach())
                in_monitor += time.perf_counter() - t
            self.optimizer.step()
            if self.monitor is not None:
                t = time.perf_counter()
                self.monitor.after_step(self.step, self.model)
                in_monitor += time.perf_counter() - t
            self.wall_times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - start_cpu)
            self.monitor_times.append(in_monitor)
            self.step += 1


def benchmark(name: str, model: nn.Module, task: SequenceTask, batch: int, blocks: int,
              block_steps: int) -> list[dict]:
    """Time every configuration on one model; one row per configuration, overheads over "no monitor"."""
    x, y = task.sample(batch, torch.Generator().manual_seed(0))
    runners = {label: Runner(model, make) for label, make in CONFIGS.items()}
    for runner in runners.values():  # warm-up, not timed
        runner.run(3, x, y, task)
        for times in (runner.wall_times, runner.cpu_times, runner.monitor_times):
            times.clear()
    for round_ in range(blocks):  # the order flips every round, as in timing.interleaved
        for runner in list(runners.values())[::1 if round_ % 2 == 0 else -1]:
            runner.run(block_steps, x, y, task)

    base = runners["no monitor"]
    base_wall, base_cpu = statistics.median(base.wall_times), statistics.median(base.cpu_times)
    rows = []
    for label, runner in runners.items():
        wall, cpu = statistics.median(runner.wall_times), statistics.median(runner.cpu_times)
        rows.append(dict(model=name, configuration=label, ms=1e3 * wall, cpu_ms=1e3 * cpu,
                         overhead=wall / base_wall - 1, overhead_cpu=cpu / base_cpu - 1,
                         in_monitor=statistics.fmean(runner.monitor_times) / base_wall,
                         target=TARGETS.get(label), steps=blocks * block_steps))
    return rows


def measure(hidden: int = 128, batch: int = 64, seq_len: int = 100, blocks: int = 15,
            block_steps: int = 4) -> list[dict]:
    """Every configuration on the labkit LSTM and the Elman RNN (adding problem)."""
    task = SequenceTask.adding(seq_len)
    gen = torch.Generator().manual_seed(0)
    models = {
        "labkit LSTM": LSTM(2, hidden, 1, generator=gen),
        "labkit ElmanRNN": ElmanRNN(2, hidden, 1, init="orthogonal", generator=gen),
    }
    return [row for name, model in models.items() for row in benchmark(name, model, task, batch, blocks, block_steps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--blocks", type=int, default=15, help="rounds of interleaved timing")
    parser.add_argument("--block-steps", type=int, default=4, help="steps per configuration per round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); H={args.hidden}, B={args.batch}, "
          f"T={args.seq_len}, CPU")
    rows = measure(args.hidden, args.batch, args.seq_len, args.blocks, args.block_steps)
    for name in dict.fromkeys(row["model"] for row in rows):
        print(f"\n{name} ({rows[0]['steps']} timed steps per configuration)")
        print(f"  {'configuration':28s} {'wall (ms)':>10s} {'overhead':>9s} {'cpu (ms)':>10s} {'overhead':>9s} "
              f"{'in monitor':>11s}")
        for row in rows:
            if row["model"] == name:
                print(f"  {row['configuration']:28s} {row['ms']:10.2f} {100 * row['overhead']:+8.1f}% "
                      f"{row['cpu_ms']:10.2f} {100 * row['overhead_cpu']:+8.1f}% {100 * row['in_monitor']:10.2f}%")


if __name__ == "__main__":
    main()
