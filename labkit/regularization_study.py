"""Weight regularization measured: what an L2 or L1 penalty does to the recurrent matrix, and what it does not do.

The setup is chapter 6's exploding tanh RNN (:class:`labkit.clip_study.ExplodingRNN`: the adding problem,
W_hh = 1.2 × a random orthogonal matrix, plain SGD at η = 0.2). A run adds ``penalty(model, strength)``
(:func:`labkit.fixes.l2_penalty`, :math:`\\frac{\\lambda}{2}\\sum w^2`, or :func:`labkit.fixes.l1_penalty`,
:math:`\\lambda\\sum |w|`, biases left out) to the loss, may clip the global gradient norm, and records the
largest singular value λ₁ of W_hh and its Frobenius norm along the way. λ₁ is the quantity of Pascanu,
Mikolov & Bengio's conditions (2013, §2.1): with tanh (γ = 1), λ₁ < 1 is sufficient for vanishing and
λ₁ > 1 necessary for explosion.

- :func:`regularized_run`: one training run with a penalty, its λ₁ trajectory recorded.
- :func:`strength_sweep`: one run per (strength, seed), summarised as arrays.
- :func:`plot_singular_value_trajectories`: λ₁ of W_hh over training, one line per run.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from labkit import plots
from labkit._checks import one_of, positive_float, positive_int
from labkit.clip_study import ExplodingRNN, final_held_out_loss
from labkit.fixes import l1_penalty, l2_penalty
from labkit.models import largest_singular_value
from labkit.train import Callback, TrainingHistory, train

PENALTIES = {"l2": l2_penalty, "l1": l1_penalty}


class SingularValueTracker(Callback):
    """Record λ₁(W_hh) and ‖W_hh‖_F before training and after every ``every``-th update.

    Attributes:
        steps: the number of updates made when each value was recorded (0: the initial weights).
        sigma_max: λ₁(W_hh), the largest singular value, at those steps.
        frobenius: ‖W_hh‖_F = √(Σ w²) at those steps.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = positive_int(every, "every")
        self.steps: list[int] = []
        self.sigma_max: list[float] = []
        self.frobenius: list[float] = []

    def _record(self, updates: int, model: torch.nn.Module) -> None:
        w = model.weight_hh.detach()
        self.steps.append(updates)
        self.sigma_max.append(largest_singular_value(w))
        self.frobenius.append(torch.linalg.matrix_norm(w.double()).item())

    def on_train_begin(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self._record(0, model)

    def after_step(self, step: int, model: torch.nn.Module) -> None:
        if (step + 1) % self.every == 0:
            self._record(step + 1, model)


@dataclass(frozen=True)
class RegularizedRun:
    """One training run with a weight penalty, and the recurrent matrix's size along the way.

    Attributes:
        penalty: ``"l2"`` or ``"l1"``.
        strength: λ.
        seed: the seed of the initial weights and of the batches.
        clip_norm: the clipping threshold τ, or ``None`` for plain SGD.
        history: the :class:`labkit.train.TrainingHistory`; ``history.diverged`` says where a run blew up.
        steps: updates made at each record (0 is the initial W_hh).
        sigma_max: λ₁(W_hh) at those steps; it ends where the run ended (a diverged run's last finite weights).
        frobenius: ‖W_hh‖_F at those steps.
    """

    penalty: str
    strength: float
    seed: int
    clip_norm: float | None
    history: TrainingHistory
    steps: np.ndarray
    sigma_max: np.ndarray
    frobenius: np.ndarray

    @property
    def diverged(self) -> bool:
        """Whether the run went non-finite."""
        return self.history.diverged is not None

    @property
    def final_loss(self) -> float:
        """The held-out MSE after the last update, NaN if the run diverged."""
        return final_held_out_loss(self.history)


def regularized_run(setup: ExplodingRNN, strength: float, *, penalty: str = "l2", seed: int = 0,
                    clip_norm: float | None = None, steps: int | None = None, every: int = 1) -> RegularizedRun:
    """Train ``setup``'s model with SGD on loss + ``penalty(model, strength)`` and track λ₁(W_hh).

    The penalty covers the weights (W_ih, W_hh, the readout's weight) and leaves the biases out. With plain
    SGD the L2 penalty is exactly weight decay: every step multiplies each weight by 1 − ηλ before the
    gradient of the loss is applied. ``seed`` fixes the initial weights and the batches, so runs that differ
    only in ``strength`` or ``clip_norm`` start from the same weights and see the same data.

    Args:
        setup: the model, task, learning rate, batch size and default number of updates.
        strength: λ >= 0 (0 trains without a penalty).
        penalty: ``"l2"`` (λ/2 Σ w²) or ``"l1"`` (λ Σ |w|).
        seed: a seed >= 0.
        clip_norm: clip the global gradient norm (penalty's gradient included) at this; ``None``: no clipping.
        steps: SGD updates (default ``setup.steps``).
        every: record λ₁ after every this many updates.

    Returns:
        A :class:`RegularizedRun`.
    """
    strength = positive_float(strength, "strength", allow_zero=True)
    one_of(penalty, "penalty", tuple(PENALTIES))
    positive_int(seed, "seed", minimum=0)
    if clip_norm is not None:
        positive_float(clip_norm, "clip_norm")
    steps = setup.steps if steps is None else positive_int(steps, "steps")
    tracker = SingularValueTracker(every)
    regularizer = partial(PENALTIES[penalty], strength=strength) if strength > 0 else None
    history = train(setup.model(seed), setup.task(), optimizer="sgd", lr=setup.lr, steps=steps,
                    batch_size=setup.batch_size, clip_norm=clip_norm, seed=seed, regularizer=regularizer,
                    callbacks=[tracker], eval_every=steps, eval_batch_size=setup.eval_batch_size)
    return RegularizedRun(penalty, strength, seed, clip_norm, history, np.array(tracker.steps),
                          np.array(tracker.sigma_max), np.array(tracker.frobenius))


@dataclass(frozen=True)
class SweepResult:
    """One run per (strength, seed), all with the same penalty and clipping.

    Attributes:
        strengths: the λ of each row.
        seeds: the seed of each column.
        final_sigma_max: (len(strengths), len(seeds)) λ₁(W_hh) when the run ended.
        peak_sigma_max: same shape, the largest λ₁(W_hh) recorded during the run.
        final_loss: same shape, held-out MSE after the last update; NaN where the run diverged.
        diverged_at: same shape, the step at which a run went non-finite, -1 where it did not.
        baseline: the task's memoryless baseline MSE (1/6 for the adding problem).
        runs: ``runs[i][j]`` for ``strengths[i]`` and ``seeds[j]``.
    """

    strengths: tuple[float, ...]
    seeds: tuple[int, ...]
    final_sigma_max: np.ndarray
    peak_sigma_max: np.ndarray
    final_loss: np.ndarray
    diverged_at: np.ndarray
    baseline: float
    runs: tuple[tuple[RegularizedRun, ...], ...]


def strength_sweep(setup: ExplodingRNN, strengths: Sequence[float], seeds: Sequence[int] = (0,), *,
                   penalty: str = "l2", clip_norm: float | None = None, steps: int | None = None,
                   every: int = 1) -> SweepResult:
    """Run :func:`regularized_run` for every strength and seed; the same seed gives the same start and batches.

    Args:
        setup: the model, task and training length.
        strengths: λ values >= 0.
        seeds: seeds >= 0.
        penalty: ``"l2"`` or ``"l1"``.
        clip_norm: the clipping threshold of every run, or ``None``.
        steps: SGD updates per run (default ``setup.steps``).
        every: record λ₁ after every this many updates.

    Returns:
        A :class:`SweepResult`.
    """
    strengths = tuple(positive_float(s, "each strength", allow_zero=True) for s in _non_empty(strengths, "strengths"))
    seeds = tuple(positive_int(s, "each seed", minimum=0) for s in _non_empty(seeds, "seeds"))
    runs = tuple(tuple(regularized_run(setup, s, penalty=penalty, seed=seed, clip_norm=clip_norm, steps=steps,
                                       every=every) for seed in seeds) for s in strengths)
    return SweepResult(
        strengths, seeds,
        final_sigma_max=np.array([[r.sigma_max[-1] for r in row] for row in runs]),
        peak_sigma_max=np.array([[r.sigma_max.max() for r in row] for row in runs]),
        final_loss=np.array([[r.final_loss for r in row] for row in runs]),
        diverged_at=np.array([[-1 if r.history.diverged is None else r.history.diverged.step for r in row]
                              for row in runs]),
        baseline=setup.task().baseline,
        runs=runs,
    )


def plot_singular_value_trajectories(runs: Mapping[str, RegularizedRun], *, ax: Axes | None = None,
                                     title: str = r"Largest singular value $\lambda_1$ of $W_{hh}$ over training",
                                     log: bool | None = None) -> Figure:
    """λ₁(W_hh) against the training step, one line per run, with the line λ₁ = 1/γ = 1 for tanh.

    A run that diverged ends with a ✕ at its last finite value.

    Args:
        runs: label → a :class:`RegularizedRun`.
        ax: draw into this axes instead of a new figure.
        title: the axes title.
        log: a log y axis; by default one when the values span more than a factor of 10 (a strong penalty
            or a diverging run).

    Returns:
        The figure; ``ax.lines`` holds the runs in order (each followed by its ✕ if it diverged), then y = 1.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("runs must be a non-empty mapping label -> RegularizedRun")
    with plots.course_style():
        if ax is None:
            fig, axes = plots.course_subplots(figsize=(6.4, 4.2))
            ax = axes[0, 0]
        else:
            fig = ax.figure
        for i, (label, run) in enumerate(runs.items()):
            if not isinstance(run, RegularizedRun):
                raise TypeError(f"runs[{label!r}] must be a RegularizedRun, got {type(run).__name__}")
            color = plots.PALETTE[i % len(plots.PALETTE)]
            ax.plot(run.steps, run.sigma_max, color=color, linestyle=plots.LINESTYLES[i % len(plots.LINESTYLES)],
                    label=label)
            if run.diverged:
                ax.plot(run.steps[-1:], run.sigma_max[-1:], linestyle="none", marker=plots.NONFINITE_MARKER,
                        color=color, markersize=9)
        if log is None:
            values = np.concatenate([run.sigma_max for run in runs.values()])
            values = values[np.isfinite(values) & (values > 0)]
            log = values.size > 0 and values.max() > 10 * values.min()
        ax.axhline(1.0, color=plots.REFERENCE_COLOR, linestyle="--", linewidth=1.0,
                   label=r"$\lambda_1 = 1/\gamma = 1$ (tanh)")
        ax.set(xlabel="training step", ylabel=r"$\lambda_1(W_{hh})$", title=title, yscale="log" if log else "linear")
        ax.legend(fontsize="small")
    return fig


def _non_empty(values: Sequence, name: str) -> Sequence:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise TypeError(f"{name} must be a non-empty sequence, got {values!r}")
    return values

