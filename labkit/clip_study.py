"""Gradient clipping measured: a tanh RNN that plain SGD blows up and clipped SGD trains, and a sweep of
learning rate × clipping threshold.

The setup of chapter 6 (:class:`ExplodingRNN`): the adding problem with T = 20, whose memoryless
baseline is an MSE of 1/6; an Elman RNN with tanh units whose recurrent matrix starts as 1.2 times a random
orthogonal matrix, so every singular value is λ₁ = 1.2 > 1/γ = 1 and the necessary condition for
explosion holds; plain SGD at η = 0.2. The first gradients are large (the readout starts far from the
targets' mean of 1), a plain step of length η‖g‖ throws the weights where the long-term components grow,
and the run overflows within a few dozen steps. With the global norm clipped at τ = 1, every step is at
most η·τ = 0.2 long and the same run trains well below the baseline.

:func:`lr_threshold_grid` trains one such run for every pair (η, τ) and :func:`plot_lr_threshold_grid`
draws the held-out loss of each as a heat map, with the runs that diverged marked.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from labkit import plots
from labkit._checks import positive_float, positive_int
from labkit.models import ElmanRNN
from labkit.tasks import SequenceTask
from labkit.train import TrainingHistory, train


@dataclass(frozen=True)
class ExplodingRNN:
    """A tanh RNN on the adding problem that explodes under plain SGD and trains when clipped.

    Attributes:
        seq_len: T, the length of the adding-problem sequences.
        hidden_size: H, hidden units.
        gain: the recurrent matrix starts as ``gain`` × a random orthogonal matrix (all singular values = gain).
        lr: the SGD learning rate η.
        clip_norm: the clipping threshold τ of the clipped run.
        batch_size: sequences per update.
        steps: SGD updates per run.
        eval_batch_size: sequences in the held-out batch that gives the test MSE.
    """

    seq_len: int = 20
    hidden_size: int = 32
    gain: float = 1.2
    lr: float = 0.2
    clip_norm: float = 1.0
    batch_size: int = 128
    steps: int = 1200
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        positive_int(self.seq_len, "seq_len", minimum=2)
        positive_int(self.hidden_size, "hidden_size")
        positive_float(self.gain, "gain")
        positive_float(self.lr, "lr")
        positive_float(self.clip_norm, "clip_norm")
        positive_int(self.batch_size, "batch_size")
        positive_int(self.steps, "steps")
        positive_int(self.eval_batch_size, "eval_batch_size")

    def task(self) -> SequenceTask:
        """The adding problem (uRNN variant) of length ``seq_len``; its baseline is 1/6."""
        return SequenceTask.adding(self.seq_len)

    def model(self, seed: int) -> ElmanRNN:
        """A fresh tanh RNN, W_hh = gain × orthogonal, every weight drawn from a generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(positive_int(seed, "seed", minimum=0))
        return ElmanRNN(2, self.hidden_size, 1, nonlinearity="tanh", init="orthogonal", gain=self.gain,
                        generator=generator)

    def run(self, seed: int, clip_norm: float | None, *, lr: float | None = None, steps: int | None = None,
            eval_every: int | None = None) -> TrainingHistory:
        """Train a fresh model with SGD, its global gradient norm clipped at ``clip_norm`` (``None``: unclipped).

        ``seed`` seeds both the initial weights and the training batches, so runs that differ only in
        ``clip_norm`` or ``lr`` see the same model and the same data.

        Args:
            seed: a seed >= 0.
            clip_norm: the threshold τ, or ``None`` for plain SGD.
            lr: the learning rate (default ``self.lr``).
            steps: SGD updates (default ``self.steps``).
            eval_every: evaluate the held-out loss every this many steps (default: only at the start and
                the end).

        Returns:
            The :class:`labkit.train.TrainingHistory`; ``history.diverged`` says where a run blew up.
        """
        steps = self.steps if steps is None else positive_int(steps, "steps")
        return train(self.model(seed), self.task(), optimizer="sgd", lr=self.lr if lr is None else lr,
                     steps=steps, batch_size=self.batch_size, clip_norm=clip_norm, seed=seed,
                     eval_every=steps if eval_every is None else eval_every,
                     eval_batch_size=self.eval_batch_size)


def final_held_out_loss(history: TrainingHistory) -> float:
    """The held-out loss after the last step of a run, or NaN if the run diverged (or never evaluated at the end)."""
    if history.diverged is not None or not history.evals or history.evals[-1][0] != history.steps_completed:
        return math.nan
    return history.evals[-1][1]


@dataclass(frozen=True)
class GridResult:
    """One run per (learning rate, threshold) pair.

    Attributes:
        lrs: the learning rates, one per row.
        thresholds: the thresholds τ, one per column; ``None`` is the unclipped run.
        final_loss: (len(lrs), len(thresholds)) held-out loss after the last step; NaN where the run diverged.
        diverged_at: same shape, the step at which a run went non-finite, -1 where it did not.
        baseline: the task's memoryless baseline loss.
        histories: the runs themselves, ``histories[i][j]`` for ``lrs[i]`` and ``thresholds[j]``.
    """

    lrs: tuple[float, ...]
    thresholds: tuple[float | None, ...]
    final_loss: np.ndarray
    diverged_at: np.ndarray
    baseline: float
    histories: tuple[tuple[TrainingHistory, ...], ...]


def lr_threshold_grid(setup: ExplodingRNN, lrs: Sequence[float], thresholds: Sequence[float | None], *,
                      steps: int | None = None, seed: int = 0, eval_every: int | None = None) -> GridResult:
    """Train ``setup`` once for every learning rate in ``lrs`` and every threshold in ``thresholds``.

    Every run starts from the same weights (``seed``) and sees the same batches, so cells differ only in
    η and τ.

    Args:
        setup: the model, task and training length.
        lrs: learning rates > 0.
        thresholds: clipping thresholds > 0; ``None`` for no clipping.
        steps: SGD updates per run (default ``setup.steps``).
        seed: the seed of every run.
        eval_every: record the held-out loss every this many steps too (default: only at the start and end).

    Returns:
        A :class:`GridResult`.
    """
    lrs = tuple(positive_float(lr, "each learning rate") for lr in _non_empty(lrs, "lrs"))
    thresholds = tuple(None if tau is None else positive_float(tau, "each threshold")
                       for tau in _non_empty(thresholds, "thresholds"))
    histories = tuple(tuple(setup.run(seed, tau, lr=lr, steps=steps, eval_every=eval_every) for tau in thresholds)
                      for lr in lrs)
    final_loss = np.array([[final_held_out_loss(h) for h in row] for row in histories])
    diverged_at = np.array([[-1 if h.diverged is None else h.diverged.step for h in row] for row in histories])
    return GridResult(lrs, thresholds, final_loss, diverged_at, setup.task().baseline, histories)


def plot_lr_threshold_grid(result: GridResult, *, ax: Axes | None = None,
                           title: str = "Held-out loss after training, by learning rate and threshold") -> Figure:
    """The grid as a heat map: held-out loss / baseline on a log colour scale; diverged runs marked ✕.

    Each cell is labelled with its loss; a run that went non-finite is grey, labelled with the step
    at which it did. The colour scale is centred on 1 (the baseline): below it the run learned something.

    Args:
        result: from :func:`lr_threshold_grid`.
        ax: draw into this axes instead of a new figure.
        title: the axes title.

    Returns:
        The figure; ``ax.collections[0]`` is the mesh, whose array is the loss / baseline with diverged
        cells masked.
    """
    ratio = np.ma.masked_invalid(result.final_loss / result.baseline)
    finite = ratio.compressed()
    spread = max(float(np.abs(np.log10(finite)).max()) if finite.size else 1.0, 0.5)
    norm = LogNorm(10 ** -spread, 10 ** spread)
    with plots.course_style():
        if ax is None:
            fig, axes = plots.course_subplots(figsize=(1.3 * len(result.thresholds) + 3.0, 0.8 * len(result.lrs) + 2.0))
            ax = axes[0, 0]
        else:
            fig = ax.figure
        ax.set_facecolor("0.85")
        columns, rows = np.arange(len(result.thresholds)), np.arange(len(result.lrs))
        mesh = ax.pcolormesh(columns, rows, ratio, shading="nearest", norm=norm, cmap="RdBu_r")
        fig.colorbar(mesh, ax=ax, label="held-out MSE / baseline (log scale)")
        for i in rows:
            for j in columns:
                if result.diverged_at[i, j] >= 0:
                    text, color = f"✕\nstep {result.diverged_at[i, j]}", plots.REFERENCE_COLOR
                else:
                    loss = result.final_loss[i, j]
                    text = f"{loss:.3g}"
                    color = "white" if abs(math.log10(loss / result.baseline)) > 0.6 * spread else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
        ax.set_xticks(columns, ["none" if tau is None else f"{tau:g}" for tau in result.thresholds])
        ax.set_yticks(rows, [f"{lr:g}" for lr in result.lrs])
        ax.set(xlabel=r"clipping threshold $\tau$", ylabel=r"learning rate $\eta$", title=title)
        ax.grid(False)
    return fig


def _non_empty(values: Sequence, name: str) -> Sequence:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence, got {values!r}")
    return values
