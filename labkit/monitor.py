"""Instruments for exploding (and vanishing) gradients: record the signals, then read them.

- :class:`GradientMonitor` records, step by step, what a gradient problem looks like from the inside:
  the global and per-parameter gradient norms, the weight norms, the update-to-weight ratio, non-finite
  flags, the per-timestep profile ‖∂L/∂h_t‖ and the spectrum of the recurrent weight. It is a callback of
  :func:`labkit.train.train` and also works in a hand-written loop.
- :class:`ExplosionDetector` (defined in :mod:`labkit.detector`, available here too) turns those records
  into a :class:`Diagnosis`: exploding, vanishing or healthy, with the evidence and the remedies.

Why every rule here is *relative*: the size of a gradient depends on the scale of the loss, the batch
size, the number of parameters and the architecture. A healthy model can have ‖g‖ = 50 at every step and
a broken one ‖g‖ = 0.5, so "the gradient is above 1" means nothing. What does mean something is a norm
far above its own recent past, a NaN or inf, weights that keep multiplying, or a gradient that shrinks
(or grows) geometrically as it travels back in time. No rule compares a norm with an absolute number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from labkit._checks import positive_int
from labkit.detector import Diagnosis, ExplosionDetector, Finding, Trace  # noqa: F401 (re-exported)
from labkit.models import largest_singular_value, spectral_radius_of

RECURRENT_WEIGHT_NAMES = ("weight_hh", "weight_hh_l0")  # labkit's models, then torch.nn.RNN/LSTM/GRU


# ---------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------

@dataclass
class MonitorHistory:
    """What a :class:`GradientMonitor` recorded, as NumPy arrays that plot directly.

    ``plt.semilogy(h.steps, h.global_grad_norm)`` draws the classic trace; every per-step array is
    aligned with ``steps``. The per-timestep profile and the spectrum are measured on their own
    schedules and come with their own step arrays.

    Attributes:
        steps: the recorded steps, (N,).
        loss: the loss that was back-propagated at each step, (N,).
        global_grad_norm: ‖g‖₂ of all gradients as one vector, before clipping, (N,).
        global_weight_norm: ‖θ‖₂ of all parameters as one vector, before the step, (N,).
        global_update_ratio: ‖Δθ‖₂ / ‖θ‖₂ over all parameters, (N,); NaN where no ``after_step`` came.
        param_grad_norm: parameter name → ‖g_i‖₂, (N,) each; NaN where that parameter had no gradient.
        weight_norm: parameter name → ‖θ_i‖₂ before the step.
        update_ratio: parameter name → ‖Δθ_i‖₂ / ‖θ_i‖₂. (The three dicts are empty with
            ``per_parameter=False``.)
        nonfinite_loss, nonfinite_grad: (N,) bool; the gradient counts as non-finite when its global
            norm is NaN or inf, the test ``clip_grad_norm_(error_if_nonfinite=True)`` makes.
        nonfinite: ``nonfinite_loss | nonfinite_grad``.
        timestep_steps: the steps at which the profile was recorded, (M,).
        hidden_grad_norms: ‖∂L/∂h_t‖ for t = 1..T at each of those steps, (M, T); ``None`` if not recorded.
        spectral_steps: the steps at which the recurrent weight's spectrum was measured, (K,).
        spectral_radius: ρ(W_hh) = max |eigenvalue|, (K,); for a stacked gate matrix (k·H, H), one column
            per square gate block, (K, k), in the module's gate order (i, f, g, o for an LSTM).
        largest_singular_value: λ₁ = ‖W_hh‖₂ of the whole (possibly stacked) matrix, (K,).
        recurrent_weight: the name of the parameter the spectrum is taken of, or ``None``.
        diverged: the training loop's divergence record (with ``step`` and ``reason``), if any.
    """

    steps: np.ndarray
    loss: np.ndarray
    global_grad_norm: np.ndarray
    global_weight_norm: np.ndarray
    global_update_ratio: np.ndarray
    param_grad_norm: dict[str, np.ndarray]
    weight_norm: dict[str, np.ndarray]
    update_ratio: dict[str, np.ndarray]
    nonfinite_loss: np.ndarray
    nonfinite_grad: np.ndarray
    nonfinite: np.ndarray
    timestep_steps: np.ndarray
    hidden_grad_norms: np.ndarray | None
    spectral_steps: np.ndarray
    spectral_radius: np.ndarray | None
    largest_singular_value: np.ndarray | None
    recurrent_weight: str | None = None
    diverged: Any = None

    def to_dict(self) -> dict[str, Any]:
        """Plain Python lists, numbers and dicts, ready for ``json.dump`` (NaN stays NaN)."""
        def plain(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                return value.tolist()
            if isinstance(value, dict):
                return {name: plain(v) for name, v in value.items()}
            return value
        out = {name: plain(getattr(self, name)) for name in self.__dataclass_fields__ if name != "diverged"}
        d = self.diverged
        out["diverged"] = None if d is None else {"step": int(d.step), "reason": str(d.reason)}
        return out


class GradientMonitor:
    """Record gradient, weight and update statistics of any ``nn.Module``, cheaply enough to leave on.

    With the training loop: ``train(model, task, callbacks=[monitor])``. By hand::

        monitor = GradientMonitor(model, optimizer=opt)   # opt: the update ratio is then automatic
        for step in range(steps):
            opt.zero_grad(); loss = ...; loss.backward()
            monitor.record(step, loss)                    # raw gradients, before any clipping
            opt.step()                                    # (without optimizer=: monitor.after_step(step))
        monitor.detach(); plt.semilogy(monitor.history.steps, monitor.history.global_grad_norm)

    At a recorded step, ``record``/``after_backward`` computes, from ``p.grad`` and ``p``::

        ‖g_i‖₂ and ‖θ_i‖₂ for each parameter  (one ``torch._foreach_norm`` call for all of them)
        ‖g‖₂ = ‖(‖g_1‖₂, …, ‖g_n‖₂)‖₂        (the norm of all gradients as one vector, as clipping measures it)

    and copies the parameters into a reusable buffer; ``after_step`` then gives the update-to-weight ratio
    ``‖θ_after − θ_before‖₂ / ‖θ_before‖₂`` (for plain SGD, ``lr·‖g‖/‖θ‖``; around 1e-3 is a common
    rule of thumb, from Karpathy's CS231n notes; near 1 a single step rewrites the weights). Nothing is
    copied to the CPU during training: the numbers stay on the model's device until :attr:`history` is
    read (the spectrum, every ``spectral_every`` steps, is the exception).

    Args:
        model: the module to watch; every parameter with ``requires_grad`` is tracked.
        per_parameter: also keep each parameter's series (``history.param_grad_norm`` etc.), not
            only the global ones. The cost is the same; the history is smaller without.
        per_timestep: record ‖∂L/∂h_t‖ for t = 1..T. Only labkit's :class:`~labkit.models.ElmanRNN` and
            :class:`~labkit.models.LSTM` (as the model or a submodule; the first one found) can do this,
            while ``record_hidden_grads`` is on: the Elman RNN keeps every h_t with ``retain_grad()``, the
            LSTM's hand-written backward pass records the norms it computes anyway (the monitor turns the
            flag on for the forward passes of the recorded steps only, and :meth:`detach` restores it). ``torch.nn``'s fused RNN kernels never materialise h_t for autograd, so for them (or
            an MLP) it is unavailable and asking for it raises ``ValueError``.
        recurrent_weight: the parameter whose spectral radius ρ and largest singular value λ₁ are
            tracked: ``"auto"`` takes the first parameter named ``weight_hh`` (labkit) or
            ``weight_hh_l0`` (torch.nn.RNN/LSTM/GRU, first layer), if any; a name picks that parameter;
            ``None`` turns it off. A stacked gate matrix (k·H, H), like an LSTM's (4H, H), has no
            eigenvalues: ρ is reported per square H×H gate block and λ₁ for the whole stack, which
            bounds how strongly h_{t-1} can move all the gates' pre-activations at once.
        every: record the per-step signals at steps ``step % every == 0``.
        spectral_every: measure ρ and λ₁ at steps ``step % spectral_every == 0`` (an eigen- and a
            singular-value decomposition: the one costly signal).
        optimizer: in a hand-written loop, the optimizer whose ``step()`` should trigger
            :meth:`after_step` automatically (through a step hook that :meth:`detach` removes).

    Raises:
        TypeError, ValueError: for a bad argument, an unknown ``recurrent_weight``, a model without
            trainable parameters, or ``per_timestep=True`` on a model that cannot record it.
    """

    def __init__(self, model: nn.Module, *, per_parameter: bool = True, per_timestep: bool = False,
                 recurrent_weight: str | None = "auto", every: int = 1, spectral_every: int = 10,
                 optimizer: torch.optim.Optimizer | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        for flag, name in ((per_parameter, "per_parameter"), (per_timestep, "per_timestep")):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {type(flag).__name__} {flag!r}")
        self.model = model
        self.per_parameter = per_parameter
        self.every = positive_int(every, "every")
        self.spectral_every = positive_int(spectral_every, "spectral_every")
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("model has no parameters that require grad: there is nothing to monitor")
        self.names = [name for name, _ in named]
        self._params = [p for _, p in named]
        self.recurrent_weight = _find_recurrent_weight(model, recurrent_weight)
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")

        # everything the monitor changes outside itself, and detach() undoes
        self._hidden_module = _find_hidden_recorder(model) if per_timestep else None
        self._hidden_flag_before = None
        if self._hidden_module is not None:
            self._hidden_flag_before = self._hidden_module.record_hidden_grads
            self._hidden_module.record_hidden_grads = True
        self._hook = (optimizer.register_step_post_hook(lambda *_: self._auto_after_step())
                      if optimizer is not None else None)

        self._steps: list[int] = []
        self._rows: list[torch.Tensor] = []  # per step: (loss, ‖g‖, ‖g_1‖..‖g_n‖, ‖θ_1‖..‖θ_n‖)
        self._deltas: list[torch.Tensor | None] = []  # per step: (‖Δθ_1‖..‖Δθ_n‖) or None
        self._snapshot: list[torch.Tensor] | None = None
        self._pending_step: int | None = None  # a recorded step whose update has not been measured yet
        self._timestep_steps: list[int] = []
        self._profiles: list[torch.Tensor] = []
        self._spectral_steps: list[int] = []
        self._radii: list[list[float]] = []
        self._sigmas: list[float] = []
        self._diverged: Any = None
        self._attached = True
        self._history: MonitorHistory | None = None

    # -- the training loop's callback interface -------------------------------------------------------

    def on_train_begin(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Check that the loop trains the model this monitor watches."""
        if model is not self.model:
            raise ValueError("this GradientMonitor watches a different model than the one being trained")

    def after_backward(self, step: int, model: nn.Module, loss: torch.Tensor) -> None:
        """Record this step's raw gradients (call it after ``backward()``, before clipping)."""
        self.record(step, loss)

    def after_step(self, step: int, model: nn.Module | None = None) -> None:
        """Measure the update ``θ_after − θ_before`` of a recorded step (after ``optimizer.step()``)."""
        if self._pending_step != step:
            return  # not a recorded step, or already measured (e.g. by the optimizer hook)
        with torch.no_grad():
            torch._foreach_sub_(self._snapshot, self._params)  # the buffer now holds θ_before − θ_after
            self._deltas[-1] = torch.stack(torch._foreach_norm(self._snapshot))
        self._pending_step = None
        self._history = None

    def on_train_end(self, history: Any) -> None:
        """Keep the loop's divergence record (a run that stops at a NaN loss never calls backward)."""
        self._diverged = getattr(history, "diverged", None)
        self._history = None

    # -- recording ------------------------------------------------------------------------------------

    @torch.no_grad()
    def record(self, step: int, loss: torch.Tensor | float) -> None:
        """Record step ``step`` from the current ``p.grad``; call it after ``loss.backward()``.

        Args:
            step: the update's index (0, 1, ...); steps that are not a multiple of ``every`` are skipped.
            loss: the loss that was back-propagated (a scalar tensor or a number).
        """
        if not self._attached:
            raise RuntimeError("this GradientMonitor was detached; create a new one to keep recording")
        positive_int(step, "step", minimum=0)
        if step % self.spectral_every == 0 and self.recurrent_weight is not None:
            self._record_spectrum(step)
        if self._hidden_module is not None:
            if step % self.every == 0:
                self._record_profile(step)
            # retain_grad() on every h_t costs: keep it on only for the forward pass of the next recorded step
            self._hidden_module.record_hidden_grads = (step + 1) % self.every == 0
        if step % self.every != 0:
            return

        params = self._params
        grads = [p.grad for p in params if p.grad is not None]
        norms = torch.stack(torch._foreach_norm(grads + params))  # (‖g_i‖ for i with a gradient, ‖θ_1‖..‖θ_n‖)
        grad_norms, weight_norms = norms[:len(grads)], norms[len(grads):]
        global_norm = torch.linalg.vector_norm(grad_norms).reshape(1)
        if len(grads) < len(params):  # a parameter without a gradient: left out of ‖g‖, NaN in its own series
            has_grad = torch.tensor([p.grad is not None for p in params], device=norms.device)
            norms = torch.cat([torch.full_like(weight_norms, math.nan).masked_scatter(has_grad, grad_norms),
                               weight_norms])
        loss = torch.as_tensor(loss).detach().to(device=norms.device).reshape(1)
        self._rows.append(torch.cat([loss, global_norm, norms]))
        self._steps.append(step)

        if self._snapshot is None:
            self._snapshot = [p.detach().clone() for p in params]
        else:
            torch._foreach_copy_(self._snapshot, params)
        self._deltas.append(None)
        self._pending_step = step
        self._history = None

    def _auto_after_step(self) -> None:
        if self._pending_step is not None:
            self.after_step(self._pending_step)

    def _record_profile(self, step: int) -> None:
        module = self._hidden_module
        if module.has_hidden_grads():
            self._profiles.append(module.hidden_grad_norms())  # (T,)
            self._timestep_steps.append(step)

    def _record_spectrum(self, step: int) -> None:
        weight = dict(self.model.named_parameters())[self.recurrent_weight].detach()
        rows, cols = weight.shape
        if not torch.isfinite(weight).all():
            self._radii.append([math.nan] * (rows // cols))
            self._sigmas.append(math.nan)
        else:
            self._radii.append([spectral_radius_of(block) for block in weight.reshape(rows // cols, cols, cols)])
            self._sigmas.append(largest_singular_value(weight))
        self._spectral_steps.append(step)

    # -- reading --------------------------------------------------------------------------------------

    @property
    def history(self) -> MonitorHistory:
        """Everything recorded so far as NumPy arrays (built on first access after new records)."""
        if self._history is None:
            self._history = self._build_history()
        return self._history

    def _build_history(self) -> MonitorHistory:
        n = len(self._params)
        if self._rows:
            rows = torch.stack([r.to(self._rows[0].dtype) for r in self._rows]).cpu().double().numpy()
        else:
            rows = np.zeros((0, 2 + 2 * n))
        loss, global_grad = rows[:, 0], rows[:, 1]
        grad_norms, weight_norms = rows[:, 2:2 + n], rows[:, 2 + n:]
        deltas = np.full_like(weight_norms, np.nan)
        for i, d in enumerate(self._deltas):
            if d is not None:
                deltas[i] = d.cpu().double().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero weight gives inf, as it should
            ratios = deltas / weight_norms
            global_weight = np.sqrt((weight_norms ** 2).sum(axis=1))
            global_ratio = np.sqrt((deltas ** 2).sum(axis=1)) / global_weight

        def per_param(values: np.ndarray) -> dict[str, np.ndarray]:
            return {name: values[:, i].copy() for i, name in enumerate(self.names)} if self.per_parameter else {}

        nonfinite_loss, nonfinite_grad = ~np.isfinite(loss), ~np.isfinite(global_grad)
        radii = np.array(self._radii, dtype=float) if self._radii else None
        if radii is not None and radii.shape[1] == 1:
            radii = radii[:, 0]
        return MonitorHistory(
            steps=np.array(self._steps, dtype=np.int64), loss=loss, global_grad_norm=global_grad,
            global_weight_norm=global_weight, global_update_ratio=global_ratio,
            param_grad_norm=per_param(grad_norms), weight_norm=per_param(weight_norms),
            update_ratio=per_param(ratios), nonfinite_loss=nonfinite_loss, nonfinite_grad=nonfinite_grad,
            nonfinite=nonfinite_loss | nonfinite_grad,
            timestep_steps=np.array(self._timestep_steps, dtype=np.int64),
            hidden_grad_norms=_pad_rows(self._profiles) if self._profiles else None,
            spectral_steps=np.array(self._spectral_steps, dtype=np.int64), spectral_radius=radii,
            largest_singular_value=np.array(self._sigmas, dtype=float) if self._sigmas else None,
            recurrent_weight=self.recurrent_weight, diverged=self._diverged,
        )

    def diagnose(self, detector: ExplosionDetector | None = None) -> Diagnosis:
        """Read the history with ``detector`` (the default :class:`ExplosionDetector` when ``None``)."""
        return (detector or ExplosionDetector()).diagnose(self.history)

    # -- detaching ------------------------------------------------------------------------------------

    def detach(self) -> None:
        """Undo everything the monitor changed: ``record_hidden_grads`` restored, the optimizer hook removed.

        The history stays readable; recording again raises ``RuntimeError``. Calling it twice is harmless.
        """
        if not self._attached:
            return
        if self._hidden_module is not None:
            self._hidden_module.record_hidden_grads = self._hidden_flag_before
        if self._hook is not None:
            self._hook.remove()
        self._snapshot = None
        self._attached = False

    def __enter__(self) -> GradientMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


def _find_recurrent_weight(model: nn.Module, choice: str | None) -> str | None:
    """The name of the parameter whose spectrum is tracked (see ``GradientMonitor``'s ``recurrent_weight``)."""
    if choice is None:
        return None
    if not isinstance(choice, str):
        raise TypeError(f"recurrent_weight must be 'auto', a parameter name or None, got {type(choice).__name__}")
    params = dict(model.named_parameters())

    def fits(p: torch.Tensor) -> bool:  # square, or a stack of square gate blocks (k·H, H)
        return p.dim() == 2 and p.shape[0] % p.shape[1] == 0

    if choice == "auto":
        return next((name for name, p in params.items()
                     if name.rsplit(".", 1)[-1] in RECURRENT_WEIGHT_NAMES and fits(p)), None)
    if choice not in params:
        raise ValueError(f"recurrent_weight {choice!r} is not a parameter of the model; "
                         f"its parameters are {list(params)}")
    if not fits(params[choice]):
        raise ValueError(f"recurrent_weight must be a square (H, H) matrix or a stack of them (k·H, H), "
                         f"got {choice!r} of shape {tuple(params[choice].shape)}")
    return choice


def _find_hidden_recorder(model: nn.Module) -> nn.Module:
    """The first submodule that can record ‖∂L/∂h_t‖ (labkit's ElmanRNN and LSTM)."""
    for module in model.modules():
        if hasattr(module, "record_hidden_grads") and callable(getattr(module, "has_hidden_grads", None)):
            return module
    raise ValueError(f"per_timestep=True needs a model that keeps its hidden states for autograd, such as "
                     f"labkit.models.ElmanRNN or LSTM; {type(model).__name__} has none (torch.nn.RNN/LSTM "
                     f"compute h_t inside one fused kernel, so ‖∂L/∂h_t‖ is unavailable for them)")


def _pad_rows(rows: list[torch.Tensor]) -> np.ndarray:
    """Stack 1-D profiles into (M, T_max), padding shorter sequences with NaN on the right."""
    length = max(len(r) for r in rows)
    out = np.full((len(rows), length), np.nan)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r.cpu().double().numpy()
    return out
