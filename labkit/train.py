"""One training loop for every experiment in the course: optimizer, clipping, regularization, monitors.

``train(model, task)`` trains ``model`` on a :class:`labkit.tasks.SequenceTask` with the defaults of
:class:`TrainConfig`; any of them can be changed by name, as in
``train(model, task, optimizer="sgd", lr=0.5, clip_norm=1.0)``. It returns a :class:`TrainingHistory`.
Each step, in this order:

1. draw a batch ``(x, y)`` from a ``torch.Generator`` seeded with ``config.seed``;
2. forward: ``outputs = model(x)`` (a :class:`labkit.models.RecurrentOutput`, a tuple whose first item
   is the outputs, or the outputs themselves, shape (B, T, O)); ``loss = task.loss(outputs, y)``, plus
   ``penalty = regularizer(model)`` if one is given;
3. stop if the loss is NaN or inf (the parameters are left as they were before this step);
4. zero the gradients, back-propagate ``loss + penalty``, call the callbacks' ``after_backward``;
5. measure the global 2-norm of the gradients; stop if it is NaN or inf, before anything is updated;
6. clip the gradients by global norm (``clip_norm``) or by value (``clip_value``): after backward,
   before the step;
7. ``optimizer.step()``, call the callbacks' ``after_step``; stop if a parameter became NaN or inf.

A run that diverges never raises: it ends early and ``history.diverged`` says at which step, why, and
what the last finite loss was. Nothing is printed unless ``progress=True``.

Callbacks
---------
A callback is any object with some of these methods; missing ones are skipped (subclass
:class:`Callback` to get no-op defaults). They are called in the order the callbacks are given.

``on_train_begin(model, optimizer)``
    once, before the first step.
``after_backward(step, model, loss)``
    every step, right after ``backward()``: ``model``'s ``.grad`` are this step's raw gradients, not
    yet clipped; ``loss`` is the (detached) scalar that was back-propagated, task loss plus penalty.
``after_step(step, model)``
    every step, right after ``optimizer.step()``: the parameters are updated.
``on_train_end(history)``
    once, after the last step or the divergence, with the finished :class:`TrainingHistory`.

``step`` counts from 0; step ``n`` is the ``n``-th update.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from labkit._checks import one_of, positive_float, positive_int
from labkit.device import get_device
from labkit.fixes import clip_grad_norm_, clip_grad_value_
from labkit.tasks import SequenceTask

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
EVAL_SEED_OFFSET = 2**63  # held-out batches use seed + 2**63, a seed that no training run (seed < 2**63) uses

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
Regularizer = Callable[[nn.Module], torch.Tensor]


@dataclass
class TrainConfig:
    """How to train: every knob of :func:`train`, with defaults that train a small RNN on an easy task.

    Attributes:
        steps: optimizer updates to run.
        batch_size: sequences per update.
        lr: learning rate.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` or ``"rmsprop"``.
        momentum: momentum for ``"sgd"`` and ``"rmsprop"``, in [0, 1); must be 0 for Adam(W), whose
            momentum is its ``betas``.
        weight_decay: the optimizer's own weight decay (for Adam: L2 added to the gradient; for AdamW:
            decoupled). For a penalty you can see in the loss, pass a ``regularizer`` instead.
        clip_norm: if set, rescale the gradients so that their global 2-norm is at most this.
        clip_value: if set, clamp every gradient entry to [-clip_value, clip_value]. At most one of
            ``clip_norm`` and ``clip_value`` may be set.
        seed: seeds the generator the training batches are drawn from (0 <= seed < 2**63). The model's
            own randomness (its initial weights, dropout) is seeded where the model is built.
        eval_every: evaluate on held-out data every this many steps (and at the end); 0 never does.
        eval_batch_size: sequences in the held-out batch: the same batch at every evaluation, drawn
            from a generator seeded with ``seed + 2**63``, so it is never a training batch.
        progress: show a progress bar with the loss and the gradient norm; when False nothing is written.
        device: where to train (``"cpu"``, ``"cuda"``, ...); the model is moved there. ``None`` trains
            wherever the model already is.
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 1e-2
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    seed: int = 0
    eval_every: int = 0
    eval_batch_size: int = 512
    progress: bool = False
    device: str | torch.device | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise TypeError/ValueError, saying what was expected, if a field holds a bad value."""
        positive_int(self.steps, "steps")
        positive_int(self.batch_size, "batch_size")
        positive_float(self.lr, "lr")
        one_of(self.optimizer, "optimizer", OPTIMIZERS)
        if positive_float(self.momentum, "momentum", allow_zero=True) >= 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.momentum and self.optimizer not in ("sgd", "rmsprop"):
            raise ValueError(f"momentum is used only by 'sgd' and 'rmsprop', got momentum={self.momentum} "
                             f"with optimizer={self.optimizer!r} (Adam's momentum is its betas)")
        positive_float(self.weight_decay, "weight_decay", allow_zero=True)
        if self.clip_norm is not None:
            positive_float(self.clip_norm, "clip_norm")
        if self.clip_value is not None:
            positive_float(self.clip_value, "clip_value")
        if self.clip_norm is not None and self.clip_value is not None:
            raise ValueError(f"set at most one of clip_norm and clip_value, got clip_norm={self.clip_norm} "
                             f"and clip_value={self.clip_value}")
        if positive_int(self.seed, "seed", minimum=0) >= EVAL_SEED_OFFSET:
            raise ValueError(f"seed must be an int in [0, 2**63), got {self.seed}")
        positive_int(self.eval_every, "eval_every", minimum=0)
        positive_int(self.eval_batch_size, "eval_batch_size")
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, got {type(self.progress).__name__} {self.progress!r}")
        if self.device is not None:
            if not isinstance(self.device, (str, torch.device)):
                raise TypeError(f"device must be None, a device name or a torch.device, "
                                f"got {type(self.device).__name__} {self.device!r}")
            get_device(self.device)  # raises ValueError for an unknown or unavailable device


@dataclass
class Divergence:
    """Why and where a run stopped early.

    Attributes:
        step: the step at which the problem appeared.
        reason: ``"non-finite loss"``, ``"non-finite gradient"`` or ``"non-finite parameters"``.
        last_finite_loss: the last finite task loss seen (``None`` if the very first one was not finite).
        last_finite_step: the step at which that loss was computed.
    """

    step: int
    reason: str
    last_finite_loss: float | None
    last_finite_step: int | None

    def __str__(self) -> str:
        last = ("no finite loss before it" if self.last_finite_loss is None
                else f"last finite loss {self.last_finite_loss:.4g} at step {self.last_finite_step}")
        return f"diverged at step {self.step}: {self.reason} ({last})"


@dataclass(repr=False)
class TrainingHistory:
    """What happened during :func:`train`, one entry per completed step.

    Attributes:
        loss: the task loss of each step's batch, before that step's update.
        penalty: the regularizer's value at each step (0.0 without a regularizer).
        grad_norm: the global 2-norm of each step's gradients, before clipping.
        clipped: whether clipping changed that step's gradients.
        evals: ``(step, eval_loss)`` pairs, the held-out loss after ``step`` updates.
        baseline: the task's memoryless baseline loss, for reference lines in plots.
        diverged: ``None``, or the :class:`Divergence` that ended the run.
        steps_completed: optimizer updates actually made.
        wall_time_s: seconds the run took.
        config: the configuration the run used.
    """

    loss: list[float] = field(default_factory=list)
    penalty: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped: list[bool] = field(default_factory=list)
    evals: list[tuple[int, float]] = field(default_factory=list)
    baseline: float | None = None
    diverged: Divergence | None = None
    steps_completed: int = 0
    wall_time_s: float = 0.0
    config: TrainConfig | None = None

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The per-step series and the evaluations as NumPy arrays, ready to plot."""
        return {
            "step": np.arange(len(self.loss)),
            "loss": np.array(self.loss, dtype=float),
            "penalty": np.array(self.penalty, dtype=float),
            "grad_norm": np.array(self.grad_norm, dtype=float),
            "clipped": np.array(self.clipped, dtype=bool),
            "eval_step": np.array([s for s, _ in self.evals], dtype=int),
            "eval_loss": np.array([v for _, v in self.evals], dtype=float),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain Python lists, numbers and dicts, ready for ``json.dump``."""
        config = None if self.config is None else {**asdict(self.config), "device": _device_name(self.config.device)}
        return {
            "loss": list(self.loss),
            "penalty": list(self.penalty),
            "grad_norm": list(self.grad_norm),
            "clipped": list(self.clipped),
            "evals": [[s, v] for s, v in self.evals],
            "baseline": self.baseline,
            "diverged": None if self.diverged is None else asdict(self.diverged),
            "steps_completed": self.steps_completed,
            "wall_time_s": self.wall_time_s,
            "config": config,
        }

    def __repr__(self) -> str:
        parts = [f"steps_completed={self.steps_completed}"]
        if self.loss:
            parts.append(f"final_loss={self.loss[-1]:.4g}")
        if self.evals:
            parts.append(f"final_eval_loss={self.evals[-1][1]:.4g}")
        if self.baseline is not None:
            parts.append(f"baseline={self.baseline:.4g}")
        parts.append(f"diverged={self.diverged}" if self.diverged is None else f"diverged='{self.diverged}'")
        return f"TrainingHistory({', '.join(parts)})"


class Callback:
    """The callback interface of :func:`train`, every method a no-op; override the ones you need."""

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Called once before the first step."""

    def after_backward(self, step: int, model: nn.Module, loss: torch.Tensor) -> None:
        """Called after ``backward()``; the gradients are raw (not yet clipped)."""

    def after_step(self, step: int, model: nn.Module) -> None:
        """Called after ``optimizer.step()``; the parameters are updated."""

    def on_train_end(self, history: TrainingHistory) -> None:
        """Called once at the end, also after a divergence."""


CALLBACK_METHODS = ("on_train_begin", "after_backward", "after_step", "on_train_end")


@torch.no_grad()
def evaluate(model: nn.Module, task: SequenceTask, batch_size: int,
             generator: torch.Generator | None = None) -> float:
    """The task loss of ``model`` on one batch drawn from ``generator``, without gradients, in eval mode."""
    positive_int(batch_size, "batch_size")
    was_training = model.training
    model.eval()
    try:
        x, y = task.sample(batch_size, generator, _model_device(model))
        return task.loss(_outputs(model(_match_dtype(x, model))), y).item()
    finally:
        model.train(was_training)


def train(
    model: nn.Module,
    task: SequenceTask,
    config: TrainConfig | None = None,
    *,
    optimizer: str | torch.optim.Optimizer | OptimizerFactory | None = None,
    regularizer: Regularizer | None = None,
    callbacks: Iterable[object] = (),
    **overrides: Any,
) -> TrainingHistory:
    """Train ``model`` on ``task`` and return what happened; a diverging run stops early, it never raises.

    Args:
        model: an ``nn.Module`` mapping ``x`` (B, T, I) to outputs (B, T, O), returned as they are,
            as a :class:`~labkit.models.RecurrentOutput`, or as the first item of a tuple.
        task: what to learn: ``task.sample(batch_size, generator, device)`` and ``task.loss(outputs, y)``.
        config: a :class:`TrainConfig`; ``None`` uses the defaults.
        optimizer: a name (the same as ``config.optimizer``), a ready ``torch.optim.Optimizer``, or a
            factory ``params -> Optimizer``. With an optimizer or a factory, ``lr``, ``momentum`` and
            ``weight_decay`` of the config are not used.
        regularizer: ``regularizer(model) -> scalar tensor``, added to the loss before ``backward()``;
            its value is recorded in ``history.penalty``.
        callbacks: objects with some of the methods described in this module's docstring.
        **overrides: config fields to change, e.g. ``train(model, task, steps=200, lr=0.1)``.

    Returns:
        The :class:`TrainingHistory` of the run.

    Raises:
        TypeError, ValueError: for a bad argument or config value (before anything is trained).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not (callable(getattr(task, "sample", None)) and callable(getattr(task, "loss", None))):
        raise TypeError(f"task must be a SequenceTask (with sample() and loss()), got {type(task).__name__}")
    if isinstance(optimizer, str):
        overrides = {**overrides, "optimizer": optimizer}
        optimizer = None
    config = _configure(config, overrides)
    if regularizer is not None and not callable(regularizer):
        raise TypeError(f"regularizer must be a callable model -> scalar tensor, got {type(regularizer).__name__}")
    hooks = _hooks(callbacks)

    if config.device is not None:
        model.to(get_device(config.device))
    device = _model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require grad: there is nothing to train")
    opt = make_optimizer(optimizer, params, config)

    history = TrainingHistory(baseline=getattr(task, "baseline", None), config=config)
    batches = torch.Generator().manual_seed(config.seed)
    last_loss, last_step = None, None  # the last finite task loss and its step, for the divergence record
    start = time.perf_counter()
    model.train()
    for hook in hooks["on_train_begin"]:
        hook(model, opt)

    with tqdm(total=config.steps, disable=not config.progress, desc="train") as bar:
        for step in range(config.steps):
            if config.eval_every and step % config.eval_every == 0:
                history.evals.append((step, _held_out_loss(model, task, config)))

            x, y = task.sample(config.batch_size, batches, device)
            loss = task.loss(_outputs(model(_match_dtype(x, model))), y)
            penalty = _penalty(regularizer, model, loss)
            loss_value, penalty_value = loss.item(), penalty.item()
            if not (math.isfinite(loss_value) and math.isfinite(penalty_value)):
                history.diverged = Divergence(step, "non-finite loss", last_loss, last_step)
                break
            last_loss, last_step = loss_value, step

            # the model's gradients, not just the optimizer's: every .grad a callback sees is this step's
            model.zero_grad(set_to_none=True)
            objective = loss + penalty
            objective.backward()
            for hook in hooks["after_backward"]:
                hook(step, model, objective.detach())

            if config.clip_norm is not None:
                norm = clip_grad_norm_(params, config.clip_norm).item()  # the norm before clipping
                clipped = norm > config.clip_norm
            else:
                norm, clipped = _global_grad_norm(params), False
            if not math.isfinite(norm):
                history.diverged = Divergence(step, "non-finite gradient", last_loss, last_step)
                break
            if config.clip_value is not None:
                clipped = _max_abs_grad(params) > config.clip_value
                clip_grad_value_(params, config.clip_value)

            opt.step()
            for hook in hooks["after_step"]:
                hook(step, model)
            history.loss.append(loss_value)
            history.penalty.append(penalty_value)
            history.grad_norm.append(norm)
            history.clipped.append(clipped)
            history.steps_completed = step + 1
            bar.set_postfix(loss=f"{loss_value:.4g}", grad_norm=f"{norm:.3g}", refresh=False)
            bar.update()
            if not _all_finite(params):
                history.diverged = Divergence(step, "non-finite parameters", last_loss, last_step)
                break
        if history.diverged is not None:
            bar.set_postfix_str(str(history.diverged), refresh=False)
        elif config.eval_every:
            history.evals.append((config.steps, _held_out_loss(model, task, config)))

    history.wall_time_s = time.perf_counter() - start
    for hook in hooks["on_train_end"]:
        hook(history)
    return history


def _configure(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or None, got {type(config).__name__}")
    names = [f.name for f in fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; valid options are {names}")
    if config is None:
        return TrainConfig(**overrides)
    return replace(config, **overrides)  # a new config: every field is checked again, even one set by hand


def _hooks(callbacks: Iterable[object]) -> dict[str, list[Callable[..., None]]]:
    is_one_callback = any(callable(getattr(callbacks, name, None)) for name in CALLBACK_METHODS)
    if is_one_callback or not isinstance(callbacks, Iterable):
        raise TypeError(f"callbacks must be a list of callback objects, e.g. callbacks=[monitor], "
                        f"got {type(callbacks).__name__}")
    callbacks = list(callbacks)
    for callback in callbacks:
        if not any(callable(getattr(callback, name, None)) for name in CALLBACK_METHODS):
            raise TypeError(f"a callback must have at least one of the methods {CALLBACK_METHODS}, "
                            f"got {type(callback).__name__}")
    return {name: [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name, None))]
            for name in CALLBACK_METHODS}


def make_optimizer(optimizer: torch.optim.Optimizer | OptimizerFactory | None, params: list[nn.Parameter],
                   config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``train`` uses: ``optimizer`` itself, the one its factory builds from ``params``, or (when
    ``None``) the one ``config.optimizer`` names, with ``config``'s learning rate, momentum and weight decay."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer is not None:
        if not callable(optimizer):
            raise TypeError(f"optimizer must be a name {OPTIMIZERS}, a torch.optim.Optimizer or a factory "
                            f"params -> Optimizer, got {type(optimizer).__name__}")
        built = optimizer(params)
        if not isinstance(built, torch.optim.Optimizer):
            raise TypeError(f"the optimizer factory must return a torch.optim.Optimizer, got {type(built).__name__}")
        return built
    lr, momentum, decay = config.lr, config.momentum, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=decay)


def _held_out_loss(model: nn.Module, task: SequenceTask, config: TrainConfig) -> float:
    """The loss on the held-out batch: a fresh generator each time, so it is the same batch every time."""
    generator = torch.Generator().manual_seed(config.seed + EVAL_SEED_OFFSET)
    return evaluate(model, task, config.eval_batch_size, generator)


def _penalty(regularizer: Regularizer | None, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    if regularizer is None:
        return loss.new_zeros(())
    penalty = regularizer(model)
    if not isinstance(penalty, torch.Tensor) or penalty.numel() != 1:
        got = f"shape {tuple(penalty.shape)}" if isinstance(penalty, torch.Tensor) else type(penalty).__name__
        raise TypeError(f"regularizer(model) must return a scalar tensor, got {got}")
    return penalty.reshape(())


def _outputs(result: Any) -> torch.Tensor:
    """The (B, T, O) outputs from what a model returned: a tensor, or the first item of a tuple."""
    outputs = result[0] if isinstance(result, tuple) else result
    if not isinstance(outputs, torch.Tensor):
        raise TypeError(f"the model must return a tensor (B, T, O), a RecurrentOutput or a tuple starting "
                        f"with one, got {type(result).__name__}")
    return outputs


def _match_dtype(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Tasks sample float32; a float64 model gets float64 inputs."""
    param = next(model.parameters(), None)
    if param is not None and x.is_floating_point() and param.is_floating_point():
        return x.to(param.dtype)
    return x


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _grads(params: list[nn.Parameter]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


@torch.no_grad()
def _global_grad_norm(params: list[nn.Parameter]) -> float:
    """‖g‖₂ over all gradients as one vector, the norm ``clip_grad_norm_`` measures."""
    grads = _grads(params)
    if not grads:
        return 0.0
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()


@torch.no_grad()
def _max_abs_grad(params: list[nn.Parameter]) -> float:
    grads = _grads(params)
    return torch.stack([g.abs().max() for g in grads]).max().item() if grads else 0.0


@torch.no_grad()
def _all_finite(params: list[nn.Parameter]) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


def _device_name(device: str | torch.device | None) -> str | None:
    return None if device is None else str(device)
