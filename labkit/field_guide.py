"""A broken training run and the ladder of fixes that repairs it (chapter 9, the field guide).

:data:`BROKEN` describes a run that explodes: a tanh Elman RNN on the adding problem whose recurrent
matrix starts with spectral radius ρ = 3 (Gaussian entries, rescaled), trained by plain SGD at η = 0.1
without clipping. Since λ₁ ≥ ρ = 3 > 1/γ = 1, the necessary condition for explosion through time holds
(Pascanu, Mikolov & Bengio 2013, §2.1). The gradient grows toward the early time steps for a few updates,
one SGD step of length η‖g‖ in the thousands throws λ₁ into the thousands, every unit saturates, and the
readout, now fitting a frozen h_T with η above 2/λ_max of its quadratic loss, diverges geometrically.

:data:`FIXES` lists the toolbox in the order the course applies it, each a change of settings:

1. ``"clip"``: clip the global gradient norm at 1, after ``backward()`` and before the step;
2. ``"init"``: start W_hh orthogonal with ρ = λ₁ = 1, on the edge between exploding and vanishing;
3. ``"adam"``: Adam at η = 0.01, whose per-parameter step size does not grow with ‖g‖;
4. ``"lstm"``: replace the Elman cell by an LSTM, whose additive cell path carries the gradient back.

:func:`apply_fixes` applies a subset of them to a configuration and :func:`ladder` gives the cumulative
sequence (broken, + clip, + init, + adam, + lstm). :func:`run` trains one configuration with
:func:`labkit.train.train`; :func:`train_step` and :func:`run_with_step` are the same training written as
a hand-made loop whose update is a function you pass in (the capstone problem set grades a student's
``train_step`` this way). :func:`summarize` turns a run into the numbers of the chapter's table.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit._checks import one_of, positive_float, positive_int
from labkit.fixes import clip_grad_norm_
from labkit.models import LSTM, ElmanRNN, spectral_radius_of
from labkit.tasks import SequenceTask
from labkit import train as training
from labkit.train import (EVAL_SEED_OFFSET, OPTIMIZERS, Divergence, TrainConfig, TrainingHistory,
                          evaluate, train)

CELLS = ("rnn", "lstm")
INITS = ("default", "gaussian", "orthogonal")
TARGET_LOSS = 0.02  # held-out MSE the repaired run must reach: 1/8 of the memoryless baseline 1/6
EVAL_BATCH_SIZE = 512
EVALS_PER_RUN = 10  # held-out evaluations per run, evenly spaced


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides a training run on the adding problem: model, optimizer, clipping, budget.

    The defaults are the fully repaired run (an LSTM, Adam, clipping); :data:`BROKEN` is the run that
    explodes.

    Attributes:
        cell: ``"rnn"`` (a tanh :class:`~labkit.models.ElmanRNN`) or ``"lstm"`` (:class:`~labkit.models.LSTM`).
        hidden_size: hidden units H.
        init: the Elman RNN's W_hh init (``"default"``, ``"gaussian"``, ``"orthogonal"``); unused by the LSTM.
        spectral_radius: if set, W_hh is rescaled to this ρ after ``init`` (Elman RNN only).
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"rmsprop"``.
        lr: the learning rate η.
        clip_norm: the global-norm clipping threshold τ, or ``None`` for no clipping.
        seq_len: T of the adding problem (uRNN variant, memoryless baseline MSE 1/6).
        batch_size: sequences per update.
        steps: optimizer updates (the budget).
    """

    cell: str = "lstm"
    hidden_size: int = 32
    init: str = "orthogonal"
    spectral_radius: float | None = 1.0
    optimizer: str = "adam"
    lr: float = 1e-2
    clip_norm: float | None = 1.0
    seq_len: int = 10
    batch_size: int = 32
    steps: int = 300

    def __post_init__(self) -> None:
        one_of(self.cell, "cell", CELLS)
        positive_int(self.hidden_size, "hidden_size")
        one_of(self.init, "init", INITS)
        if self.spectral_radius is not None:
            positive_float(self.spectral_radius, "spectral_radius")
        one_of(self.optimizer, "optimizer", OPTIMIZERS)
        positive_float(self.lr, "lr")
        if self.clip_norm is not None:
            positive_float(self.clip_norm, "clip_norm")
        positive_int(self.seq_len, "seq_len", minimum=2)
        positive_int(self.batch_size, "batch_size")
        positive_int(self.steps, "steps")

    def changes_from(self, other: RunSettings) -> dict[str, tuple[Any, Any]]:
        """``{field: (other's value, this value)}`` for every field in which the two differ."""
        if not isinstance(other, RunSettings):
            raise TypeError(f"other must be a RunSettings, got {type(other).__name__}")
        return {f.name: (getattr(other, f.name), getattr(self, f.name))
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)}


BROKEN = RunSettings(cell="rnn", init="gaussian", spectral_radius=3.0, optimizer="sgd", lr=0.1, clip_norm=None)

FIXES: dict[str, dict[str, Any]] = {
    "clip": {"clip_norm": 1.0},
    "init": {"init": "orthogonal", "spectral_radius": 1.0},
    "adam": {"optimizer": "adam", "lr": 1e-2},
    "lstm": {"cell": "lstm"},
}
FIX_LABELS = {
    "clip": "clip the global norm at 1",
    "init": "orthogonal W_hh, ρ = 1",
    "adam": "Adam, η = 0.01",
    "lstm": "LSTM instead of tanh RNN",
}


def apply_fixes(fixes: Iterable[str], base: RunSettings = BROKEN) -> RunSettings:
    """``base`` with the named fixes of :data:`FIXES` applied (in :data:`FIXES`'s order, whatever the order given)."""
    if not isinstance(base, RunSettings):
        raise TypeError(f"base must be a RunSettings, got {type(base).__name__}")
    if isinstance(fixes, str):
        raise TypeError(f"fixes must be a collection of fix names such as ['clip', 'init'], got the string {fixes!r}")
    chosen = set(fixes)
    unknown = sorted(chosen - set(FIXES))
    if unknown:
        raise ValueError(f"unknown fix(es) {unknown}; the fixes are {list(FIXES)}")
    settings = base
    for name, change in FIXES.items():
        if name in chosen:
            settings = replace(settings, **change)
    return settings


def ladder(base: RunSettings = BROKEN) -> list[tuple[str, RunSettings]]:
    """The cumulative repairs: ``[("broken", base), ("+ clip", …), …, ("+ lstm", …)]``."""
    rungs = [("broken", base)]
    for i, name in enumerate(FIXES):
        rungs.append((f"+ {name}", apply_fixes(list(FIXES)[:i + 1], base)))
    return rungs


def task_of(settings: RunSettings) -> SequenceTask:
    """The adding problem (uRNN variant) of length ``settings.seq_len``."""
    return SequenceTask.adding(settings.seq_len)


def build_model(settings: RunSettings, seed: int = 0) -> nn.Module:
    """The model ``settings`` describe, input 2 → hidden H → one output, its weights drawn from ``seed``."""
    if not isinstance(settings, RunSettings):
        raise TypeError(f"settings must be a RunSettings, got {type(settings).__name__}")
    generator = torch.Generator().manual_seed(positive_int(seed, "seed", minimum=0))
    if settings.cell == "lstm":
        return LSTM(2, settings.hidden_size, 1, generator=generator)
    return ElmanRNN(2, settings.hidden_size, 1, init=settings.init, spectral_radius=settings.spectral_radius,
                    generator=generator)


def train_config(settings: RunSettings, seed: int = 0) -> TrainConfig:
    """The :class:`~labkit.train.TrainConfig` of ``settings``: batches from ``seed``, evaluated 10 times."""
    return TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                       optimizer=settings.optimizer, clip_norm=settings.clip_norm, seed=seed,
                       eval_every=max(1, settings.steps // EVALS_PER_RUN), eval_batch_size=EVAL_BATCH_SIZE)


def run(settings: RunSettings, seed: int = 0, *, callbacks: Sequence[object] = (),
        model: nn.Module | None = None) -> TrainingHistory:
    """Train ``build_model(settings, seed)`` (or ``model``) with :func:`labkit.train.train`; a divergence never raises."""
    if model is None:
        model = build_model(settings, seed)
    return train(model, task_of(settings), train_config(settings, seed), callbacks=callbacks)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               max_norm: float | None = None) -> tuple[float, float]:
    """One update, in the order that makes clipping mean what it says.

    zero the gradients → forward → loss → ``backward()`` → measure ‖g‖ and clip it to ``max_norm``
    → ``optimizer.step()``. Clipping after the step would change gradients the update has already used.

    Args:
        model: maps ``x`` (B, T, I) to outputs (B, T, O), as they are or as the first item of a tuple.
        optimizer: updates ``model``'s parameters.
        x, y: one batch.
        loss_fn: ``loss_fn(outputs, y) -> scalar``, e.g. ``task.loss``.
        max_norm: the global-norm clipping threshold τ, or ``None`` for no clipping.

    Returns:
        ``(loss, grad_norm)``: the batch loss before the update and the global gradient norm before clipping.
    """
    optimizer.zero_grad(set_to_none=True)
    outputs = model(x)
    loss = loss_fn(outputs[0] if isinstance(outputs, tuple) else outputs, y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if max_norm is None:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    else:
        norm = clip_grad_norm_(model.parameters(), max_norm)  # rescales every .grad in place
    optimizer.step()
    return loss.item(), norm.item()


def make_optimizer(settings: RunSettings, model: nn.Module, seed: int = 0) -> torch.optim.Optimizer:
    """The optimizer ``settings`` name, over ``model``'s parameters, built as :func:`labkit.train.train` builds it."""
    return training.make_optimizer(None, [p for p in model.parameters() if p.requires_grad],
                                   train_config(settings, seed))


def run_with_step(settings: RunSettings, step_fn: Callable[..., Any] = train_step, seed: int = 0) -> TrainingHistory:
    """Train like :func:`run` (same model, batches and evaluations) but make every update with ``step_fn``.

    ``step_fn(model, optimizer, x, y, loss_fn, max_norm)`` must update the model and return
    ``(loss, grad_norm)`` (numbers or 0-d tensors). With the default :func:`train_step` the run equals
    :func:`run`'s. The run stops, without raising, at the first non-finite loss, gradient norm or parameter.

    Returns:
        A :class:`~labkit.train.TrainingHistory` (``loss``, ``grad_norm``, ``evals``, ``diverged``; ``clipped``
        is whether the returned norm exceeded ``clip_norm``).
    """
    if not callable(step_fn):
        raise TypeError(f"step_fn must be a function (model, optimizer, x, y, loss_fn, max_norm), "
                        f"got {type(step_fn).__name__}")
    task = task_of(settings)
    model = build_model(settings, seed)
    optimizer = make_optimizer(settings, model, seed)
    config = train_config(settings, seed)
    history = TrainingHistory(baseline=task.baseline, config=config)
    batches = torch.Generator().manual_seed(seed)
    last_loss, last_step = None, None
    model.train()
    for step in range(settings.steps):
        if step % config.eval_every == 0:
            history.evals.append((step, _held_out(model, task, seed)))
        x, y = task.sample(settings.batch_size, batches)
        loss, norm = (float(v) for v in step_fn(model, optimizer, x, y, task.loss, settings.clip_norm))
        reason = ("non-finite loss" if not math.isfinite(loss) else "non-finite gradient" if not math.isfinite(norm)
                  else "non-finite parameters" if not all(torch.isfinite(p).all() for p in model.parameters())
                  else None)
        if reason is not None:
            history.diverged = Divergence(step, reason, last_loss, last_step)
            return history
        last_loss, last_step = loss, step
        history.loss.append(loss)
        history.penalty.append(0.0)
        history.grad_norm.append(norm)
        history.clipped.append(settings.clip_norm is not None and norm > settings.clip_norm)
        history.steps_completed = step + 1
    history.evals.append((settings.steps, _held_out(model, task, seed)))
    return history


def _held_out(model: nn.Module, task: SequenceTask, seed: int) -> float:
    """The held-out loss exactly as :func:`labkit.train.train` measures it (the same batch every time)."""
    return evaluate(model, task, EVAL_BATCH_SIZE, torch.Generator().manual_seed(seed + EVAL_SEED_OFFSET))


@dataclass(frozen=True)
class RunSummary:
    """The numbers of one run that the chapter's table shows.

    Attributes:
        final_loss: the held-out MSE at the end (``inf`` if the run diverged).
        diverged_at: the step the run diverged at, or ``None``.
        steps_to_target: the first evaluation step with held-out MSE below the target, or ``None``.
        max_grad_norm: the largest finite gradient norm seen (before clipping).
        clipped_fraction: the fraction of steps whose gradient was clipped.
        reached_target: ``final_loss < target``.
    """

    final_loss: float
    diverged_at: int | None
    steps_to_target: int | None
    max_grad_norm: float
    clipped_fraction: float
    reached_target: bool


def summarize(history: TrainingHistory, target: float = TARGET_LOSS) -> RunSummary:
    """Read a :class:`~labkit.train.TrainingHistory` into a :class:`RunSummary` against ``target``."""
    if not isinstance(history, TrainingHistory):
        raise TypeError(f"history must be a TrainingHistory, got {type(history).__name__}")
    positive_float(target, "target")
    diverged = history.diverged
    final = math.inf if diverged is not None or not history.evals else float(history.evals[-1][1])
    below = [step for step, loss in history.evals if loss < target]
    norms = np.array(history.grad_norm, dtype=float)
    norms = norms[np.isfinite(norms)]
    return RunSummary(
        final_loss=final, diverged_at=None if diverged is None else int(diverged.step),
        steps_to_target=below[0] if below and diverged is None else None,
        max_grad_norm=float(norms.max()) if norms.size else math.nan,
        clipped_fraction=float(np.mean(history.clipped)) if history.clipped else 0.0,
        reached_target=final < target)


def recurrent_spectral_radius(model: nn.Module) -> float:
    """ρ of the recurrent weight: W_hh for the Elman RNN, the largest over the LSTM's four gate blocks."""
    weight = model.weight_hh.detach()
    rows, cols = weight.shape
    return max(spectral_radius_of(block) for block in weight.reshape(rows // cols, cols, cols))
