"""Synthetic sequence tasks that need long memory, with the loss of the best memoryless guess.

Each generator returns a batch ``(x, y)`` drawn from an explicit ``torch.Generator`` so that the same seed
gives the same batch on any machine; ``x`` has shape (batch, time, features). A :class:`SequenceTask`
bundles a generator with its loss and its *baseline*: the loss of the best predictor that ignores the
inputs. A model that trains to the baseline has learned nothing about the sequence.

| task | after | baseline |
|---|---|---|
| adding problem, uRNN variant | Arjovsky, Shah & Bengio (2016) | MSE 1/6 |
| adding problem, 1997 variant | Hochreiter & Schmidhuber (1997), exp. 4 | MSE 19/480 |
| copy task | Arjovsky, Shah & Bengio (2016) | cross-entropy 10·ln 8 / (T + 20) |
| temporal order | Hochreiter & Schmidhuber (1997), exp. 6a | cross-entropy ln 4 |
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from labkit._checks import one_of, positive_int

Batch = tuple[torch.Tensor, torch.Tensor]

ADDING_VARIANTS = ("urnn", "lstm1997")
COPY_SYMBOLS = 8  # data symbols 1..8; 0 is the blank and 9 the "start copying" delimiter
COPY_LENGTH = 10
TEMPORAL_SYMBOLS = ("a", "b", "c", "d", "B", "E", "X", "Y")


def _generator(generator: torch.Generator | None) -> torch.Generator:
    return generator if generator is not None else torch.Generator().manual_seed(0)


def adding_problem(
    batch_size: int,
    seq_len: int,
    *,
    variant: str = "urnn",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """A batch of the adding problem: add the two marked numbers of a long sequence.

    Each step carries ``(value, marker)``. The target depends on two values far apart in time.

    - ``"urnn"``: values ~ U[0, 1]; one marker uniformly in the first half, one in the second half;
      target ``y = v_a + v_b``. Predicting the mean 1 gives MSE = Var(v_a + v_b) = 2 · 1/12 = 1/6.
    - ``"lstm1997"``: values ~ U[-1, 1]; the first mark among the first ten steps, the second among the
      first ``T/2 - 1`` other steps; marker -1 on the first and last steps when they are not marked; if
      the first step is marked its value counts as 0; target ``y = 1/2 + (X1 + X2)/4``. Sequences here
      all have length ``T`` (the paper draws lengths in [T, 1.1 T]).

    Args:
        batch_size: number of sequences B.
        seq_len: sequence length T (at least 2 for ``"urnn"``, 24 for ``"lstm1997"``).
        variant: ``"urnn"`` or ``"lstm1997"``.
        generator: the source of randomness (a fixed default seed when omitted).
        device: where the batch is created.
        dtype: floating dtype of ``x`` and ``y``.

    Returns:
        ``x`` of shape (B, T, 2) and ``y`` of shape (B, 1).
    """
    positive_int(batch_size, "batch_size")
    one_of(variant, "variant", ADDING_VARIANTS)
    positive_int(seq_len, "seq_len", minimum=2 if variant == "urnn" else 24)
    gen = _generator(generator)
    rows = torch.arange(batch_size)
    if variant == "urnn":
        values = torch.rand(batch_size, seq_len, generator=gen, dtype=torch.float64)
        half = seq_len // 2
        first = torch.randint(0, half, (batch_size,), generator=gen)
        second = torch.randint(half, seq_len, (batch_size,), generator=gen)
        markers = torch.zeros(batch_size, seq_len, dtype=torch.float64)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = values[rows, first] + values[rows, second]
    else:
        values = 2.0 * torch.rand(batch_size, seq_len, generator=gen, dtype=torch.float64) - 1.0
        first = torch.randint(0, 10, (batch_size,), generator=gen)
        # the second mark: one of the first T/2 - 1 still unmarked steps (`first` < 10 <= T/2 - 1 is skipped)
        k = torch.randint(0, seq_len // 2 - 1, (batch_size,), generator=gen)
        second = k + (k >= first).long()
        values[rows, 0] = torch.where(first == 0, torch.zeros(batch_size, dtype=torch.float64), values[:, 0])
        markers = torch.zeros(batch_size, seq_len, dtype=torch.float64)
        markers[:, 0] = -1.0
        markers[:, -1] = -1.0
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        target = 0.5 + (values[rows, first] + values[rows, second]) / 4.0
    x = torch.stack([values, markers], dim=-1)  # (B, T, 2)
    return x.to(device=device, dtype=dtype), target.unsqueeze(1).to(device=device, dtype=dtype)


def adding_baseline(variant: str = "urnn") -> float:
    """MSE of the best constant prediction for the adding problem (the mean target).

    ``"urnn"``: Var(U1 + U2) = 2/12 = 1/6. ``"lstm1997"``: Var((X1 + X2)/4) with X ~ U[-1, 1]
    (variance 1/3) except that X1 = 0 when the first step is marked (probability 1/10):
    (9/10 · 1/3 + 1/3) / 16 = 19/480.
    """
    one_of(variant, "variant", ADDING_VARIANTS)
    if variant == "urnn":
        return 1.0 / 6.0
    return (0.9 / 3.0 + 1.0 / 3.0) / 16.0


def copy_task(
    batch_size: int,
    delay: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """A batch of the copy task: remember 10 symbols across ``delay`` blank steps, then repeat them.

    Input: 10 symbols drawn from {1..8}, ``delay - 1`` blanks (0), the delimiter 9, then 10 blanks;
    length ``delay + 20``. Target: blanks for the first ``delay + 10`` steps, then the 10 symbols.

    Returns:
        ``x`` one-hot of shape (B, delay + 20, 10) and ``y`` class indices of shape (B, delay + 20).
    """
    positive_int(batch_size, "batch_size")
    positive_int(delay, "delay")
    gen = _generator(generator)
    length = delay + 2 * COPY_LENGTH
    data = torch.randint(1, COPY_SYMBOLS + 1, (batch_size, COPY_LENGTH), generator=gen)
    inputs = torch.zeros(batch_size, length, dtype=torch.long)
    inputs[:, :COPY_LENGTH] = data
    inputs[:, COPY_LENGTH + delay - 1] = COPY_SYMBOLS + 1
    targets = torch.zeros(batch_size, length, dtype=torch.long)
    targets[:, -COPY_LENGTH:] = data
    x = F.one_hot(inputs, COPY_SYMBOLS + 2).to(dtype=dtype)  # (B, T + 20, 10)
    return x.to(device), targets.to(device)


def copy_baseline(delay: int) -> float:
    """Cross-entropy per step of the memoryless strategy: blanks, then a uniform guess over 8 symbols.

    Only the last 10 of the ``delay + 20`` steps are uncertain, each costing ln 8: 10 ln 8 / (T + 20).
    """
    positive_int(delay, "delay")
    return COPY_LENGTH * math.log(COPY_SYMBOLS) / (delay + 2 * COPY_LENGTH)


def temporal_order(
    batch_size: int,
    seq_len: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Batch:
    """A batch of the temporal-order task: classify the order of two far-apart symbols X/Y.

    A sequence starts with ``E`` and ends with ``B``; the steps between are random distractors from
    {a, b, c, d}, except two positions ``t1`` in [T/10, 2T/10] and ``t2`` in [5T/10, 6T/10] that hold
    X or Y. The class is XX, XY, YX or YY (0..3), equally likely, so a memoryless guess costs ln 4.

    Returns:
        ``x`` one-hot of shape (B, T, 8) over (a, b, c, d, B, E, X, Y) and ``y`` of shape (B,).
    """
    positive_int(batch_size, "batch_size")
    positive_int(seq_len, "seq_len", minimum=10)
    gen = _generator(generator)
    rows = torch.arange(batch_size)
    symbols = torch.randint(0, 4, (batch_size, seq_len), generator=gen)  # distractors a..d
    symbols[:, 0] = TEMPORAL_SYMBOLS.index("E")
    symbols[:, -1] = TEMPORAL_SYMBOLS.index("B")
    t1 = torch.randint(seq_len // 10, 2 * seq_len // 10 + 1, (batch_size,), generator=gen).clamp(1, seq_len - 2)
    t2 = torch.randint(5 * seq_len // 10, 6 * seq_len // 10 + 1, (batch_size,), generator=gen).clamp(1, seq_len - 2)
    first_is_y = torch.randint(0, 2, (batch_size,), generator=gen)
    second_is_y = torch.randint(0, 2, (batch_size,), generator=gen)
    symbols[rows, t1] = TEMPORAL_SYMBOLS.index("X") + first_is_y
    symbols[rows, t2] = TEMPORAL_SYMBOLS.index("X") + second_is_y
    x = F.one_hot(symbols, len(TEMPORAL_SYMBOLS)).to(dtype=dtype)  # (B, T, 8)
    y = 2 * first_is_y + second_is_y
    return x.to(device), y.to(device)


def temporal_order_baseline() -> float:
    """Cross-entropy of the uniform guess over the four equally likely classes: ln 4."""
    return math.log(4.0)


@dataclass(frozen=True)
class SequenceTask:
    """A task as the training loop sees it: how to sample a batch, how to score outputs, the baseline.

    Attributes:
        name: a short label for plots and logs.
        input_size: features per time step of ``x``.
        output_size: outputs per time step the model must produce.
        seq_len: time steps per sequence.
        baseline: the loss of the best memoryless predictor.
        sampler: ``sampler(batch_size, generator, device) -> (x, y)``.
        loss_fn: ``loss_fn(outputs, y) -> scalar`` where ``outputs`` has shape (B, T, output_size).
    """

    name: str
    input_size: int
    output_size: int
    seq_len: int
    baseline: float
    sampler: Callable[[int, torch.Generator, torch.device | str | None], Batch]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Batch:
        """Draw a batch ``(x, y)``."""
        return self.sampler(batch_size, _generator(generator), device)

    def loss(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Score a model's per-step outputs (B, T, output_size) against the targets."""
        if outputs.dim() != 3 or outputs.shape[-1] != self.output_size:
            raise ValueError(f"{self.name}: outputs must have shape (batch, time, {self.output_size}), "
                             f"got {tuple(outputs.shape)}")
        return self.loss_fn(outputs, y)

    @classmethod
    def adding(cls, seq_len: int, variant: str = "urnn") -> "SequenceTask":
        """The adding problem (MSE on the last step's single output)."""
        one_of(variant, "variant", ADDING_VARIANTS)
        positive_int(seq_len, "seq_len", minimum=2 if variant == "urnn" else 24)
        return cls(
            name=f"adding (T={seq_len}, {variant})", input_size=2, output_size=1, seq_len=seq_len,
            baseline=adding_baseline(variant),
            sampler=lambda b, g, d: adding_problem(b, seq_len, variant=variant, generator=g, device=d),
            loss_fn=_last_step_mse,
        )

    @classmethod
    def copy(cls, delay: int) -> "SequenceTask":
        """The copy task (cross-entropy averaged over every step)."""
        positive_int(delay, "delay")
        return cls(
            name=f"copy (T={delay})", input_size=COPY_SYMBOLS + 2, output_size=COPY_SYMBOLS + 2,
            seq_len=delay + 2 * COPY_LENGTH, baseline=copy_baseline(delay),
            sampler=lambda b, g, d: copy_task(b, delay, generator=g, device=d),
            loss_fn=_every_step_cross_entropy,
        )

    @classmethod
    def temporal_order(cls, seq_len: int) -> "SequenceTask":
        """The temporal-order task (cross-entropy on the last step)."""
        positive_int(seq_len, "seq_len", minimum=10)
        return cls(
            name=f"temporal order (T={seq_len})", input_size=len(TEMPORAL_SYMBOLS), output_size=4,
            seq_len=seq_len, baseline=temporal_order_baseline(),
            sampler=lambda b, g, d: temporal_order(b, seq_len, generator=g, device=d),
            loss_fn=_last_step_cross_entropy,
        )


def _last_step_mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(outputs[:, -1, :], y.to(outputs.dtype))


def _every_step_cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), y.reshape(-1))


def _last_step_cross_entropy(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs[:, -1, :], y)
