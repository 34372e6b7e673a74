"""The one way every benchmark here times code: interleaved repeats, medians of wall-clock and CPU time.

Methods that are compared take turns within each round, and the order flips every round, so that a change
in machine load (other jobs, frequency scaling) hits all of them alike; a ratio is only ever taken between
methods timed side by side in one call. ``cpu`` is this process's CPU time (all its threads): a machine
shared with other jobs inflates wall-clock time much more than it inflates CPU time.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Timing:
    """Median seconds of one method over the timed repeats."""

    wall: float
    cpu: float
    repeats: int


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                device: torch.device | str | None = None) -> dict[str, Timing]:
    """Time each method ``repeats`` times (after ``warmup`` untimed rounds), in turns; return the medians.

    Args:
        methods: name -> a function that does the work once.
        repeats: timed rounds.
        warmup: untimed rounds first (allocator, lazy initialisation, caches).
        device: a CUDA device to synchronise before and after each call, so that its queued work is counted.
    """
    cuda = device is not None and torch.device(device).type == "cuda"
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            if cuda:
                torch.cuda.synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            methods[name]()
            if cuda:
                torch.cuda.synchronize(device)
            if round_ >= warmup:
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return {name: Timing(statistics.median(wall[name]), statistics.median(cpu[name]), repeats) for name in names}
