"""Fixes for exploding gradients: clipping (by global norm, by value) and weight penalties.

Written out by hand because this is what the course teaches; ``clip_grad_norm_`` and
``clip_grad_value_`` give the same results as their ``torch.nn.utils`` namesakes.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

TensorOrTensors = Tensor | Iterable[Tensor]

_EPS = 1e-6  # keeps max_norm / total_norm finite when every gradient is zero; same value as torch


def _as_tensor_list(parameters: TensorOrTensors, what: str) -> list[Tensor]:
    """Turn a single tensor or an iterable of tensors into a list (so a generator is read once)."""
    if isinstance(parameters, Tensor):
        return [parameters]
    if isinstance(parameters, Iterable):
        tensors = list(parameters)
        wrong = [type(t).__name__ for t in tensors if not isinstance(t, Tensor)]
        bad = f"an item of type {wrong[0]}" if wrong else None
    else:
        bad = f"a {type(parameters).__name__}"
    if bad is not None:
        raise TypeError(f"{what} must be a tensor or an iterable of tensors, got {bad}")
    return tensors


def _check_non_negative(value: float | Tensor, name: str) -> float:
    """Return ``value`` as a float after checking it is a real number >= 0 (inf allowed, NaN not)."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a real number >= 0, got {value}")
    return value


def _check_norm_type(norm_type: float) -> float:
    """Return ``norm_type`` as a float after checking it is a valid p for a p-norm: p > 0 or inf."""
    if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real):
        raise TypeError(f"norm_type must be a number p > 0 or float('inf'), got {type(norm_type).__name__}")
    p = float(norm_type)
    if not p > 0:  # also rejects NaN
        raise ValueError(f"norm_type must be a number p > 0 or float('inf'), got {p}")
    return p


@torch.no_grad()
def clip_grad_norm_(
    parameters: TensorOrTensors,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> Tensor:
    r"""Rescale the gradients of ``parameters`` in place so that their global norm is at most ``max_norm``.

    All gradients are treated as one long vector g. Its p-norm is the p-norm of the per-parameter norms,

    .. math::
        \|g\|_p = \big\| (\|g_1\|_p, \dots, \|g_n\|_p) \big\|_p ,

    and every gradient is multiplied by the same factor
    :math:`c = \min\!\big(1, \text{max\_norm} / (\|g\|_p + 10^{-6})\big)`, so the direction of g is kept.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped; tensors whose
            ``.grad`` is ``None`` are skipped.
        max_norm: the largest global norm allowed, a real number >= 0.
        norm_type: p of the p-norm, a number > 0; ``float('inf')`` gives the largest absolute entry.
        error_if_nonfinite: raise ``RuntimeError`` when the global norm is NaN or inf instead of
            multiplying the gradients by a non-finite factor.

    Returns:
        The global norm of the gradients before clipping, as a 0-d tensor (``tensor(0.)`` when no
        tensor has a gradient).
    """
    max_norm = _check_non_negative(max_norm, "max_norm")
    norm_type = _check_norm_type(norm_type)
    grads = [p.grad for p in _as_tensor_list(parameters, "parameters") if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)

    device = grads[0].device
    per_param = torch.stack([torch.linalg.vector_norm(g, norm_type).to(device) for g in grads])  # (n,)
    total_norm = torch.linalg.vector_norm(per_param, norm_type)
    if error_if_nonfinite and not torch.isfinite(total_norm):
        raise RuntimeError(
            f"The global {norm_type}-norm of the gradients is {total_norm.item()}, so they cannot be "
            "clipped. The loss or the gradients already hold NaN or inf: find where they first appear "
            "(e.g. with torch.autograd.set_detect_anomaly) before clipping."
        )

    # A tensor factor, not `if total_norm > max_norm:`, so no GPU-to-CPU sync is needed.
    clip_coef = torch.clamp(max_norm / (total_norm + _EPS), max=1.0)
    for g in grads:
        g.mul_(clip_coef.to(g.device))
    return total_norm


@torch.no_grad()
def clip_grad_value_(parameters: TensorOrTensors, clip_value: float) -> None:
    r"""Clamp every gradient entry of ``parameters`` in place to :math:`[-c, c]`.

    Unlike :func:`clip_grad_norm_` this changes the direction of the gradient whenever some, but not
    all, entries are clamped.

    Args:
        parameters: a tensor or an iterable of tensors whose ``.grad`` is clipped; tensors whose
            ``.grad`` is ``None`` are skipped.
        clip_value: c, a real number >= 0.
    """
    clip_value = _check_non_negative(clip_value, "clip_value")
    for p in _as_tensor_list(parameters, "parameters"):
        if p.grad is not None:
            p.grad.clamp_(min=-clip_value, max=clip_value)


def _is_bias_name(name: str) -> bool:
    """``bias``, ``bias_hh_l0``, ``layer.b`` and ``b_h`` are bias names; ``weight`` and ``w_rec`` are not."""
    leaf = name.rsplit(".", 1)[-1]
    return leaf.startswith("bias") or leaf == "b" or leaf.startswith("b_")


def _penalized(module_or_params: nn.Module | TensorOrTensors, include_biases: bool) -> list[Tensor]:
    """The tensors a penalty sums over: a module's weights (and biases if asked) or all tensors given."""
    if isinstance(module_or_params, nn.Module):
        named = module_or_params.named_parameters()
        return [p for name, p in named if include_biases or not _is_bias_name(name)]
    return _as_tensor_list(module_or_params, "module_or_params")


def _penalty(terms: Sequence[Tensor], scale: float) -> Tensor:
    """``scale`` times the sum of ``terms``, or a zero tensor when there are none."""
    return scale * torch.stack(terms).sum() if terms else torch.tensor(0.0)


def l2_penalty(
    module_or_params: nn.Module | TensorOrTensors, strength: float, *, include_biases: bool = False
) -> Tensor:
    r"""The L2 (weight-decay) penalty :math:`\frac{\lambda}{2} \sum_i w_i^2` over the weights.

    Added to the loss, its gradient is :math:`\lambda w`: besides following the loss, a gradient step
    of size η multiplies every weight by :math:`1 - \eta\lambda` (weight decay, for plain SGD).

    Which tensors count as weights: given a module, a parameter is a *bias* when the last part of its
    name is ``bias`` or ``b``, or starts with ``bias`` or ``b_`` (``bias``, ``bias_hh_l0``, ``b``,
    ``b_h``); biases are left out unless ``include_biases=True``. Given bare tensors there are no
    names to go by, so every tensor given is penalized and ``include_biases`` has no effect.

    Args:
        module_or_params: a module, or a tensor or an iterable of tensors.
        strength: λ, a real number >= 0.
        include_biases: also penalize a module's biases.

    Returns:
        The penalty as a differentiable 0-d tensor (``tensor(0.)`` when there is nothing to penalize).
    """
    strength = _check_non_negative(strength, "strength")
    return _penalty([w.pow(2).sum() for w in _penalized(module_or_params, include_biases)], strength / 2)


def l1_penalty(
    module_or_params: nn.Module | TensorOrTensors, strength: float, *, include_biases: bool = False
) -> Tensor:
    r"""The L1 penalty :math:`\lambda \sum_i |w_i|` over the weights.

    Added to the loss, its (sub)gradient is :math:`\lambda\,\operatorname{sign}(w)`: every weight is
    pulled towards zero by the same amount, which drives small weights to exactly zero.
    Weights and biases are told apart as in :func:`l2_penalty`.

    Args:
        module_or_params: a module, or a tensor or an iterable of tensors.
        strength: λ, a real number >= 0.
        include_biases: also penalize a module's biases.

    Returns:
        The penalty as a differentiable 0-d tensor (``tensor(0.)`` when there is nothing to penalize).
    """
    strength = _check_non_negative(strength, "strength")
    return _penalty([w.abs().sum() for w in _penalized(module_or_params, include_biases)], strength)


def pascanu_regularizer(loss: Tensor, hidden_states: Sequence[Tensor]) -> Tensor:
    r"""The vanishing-gradient regularizer Ω of Pascanu, Mikolov & Bengio (2013, §3.3).

    .. math::
        \Omega = \sum_k \left( \frac{\big\| \frac{\partial E}{\partial x_{k+1}}
                 \frac{\partial x_{k+1}}{\partial x_k} \big\|}
                 {\big\| \frac{\partial E}{\partial x_{k+1}} \big\|} - 1 \right)^2

    Ω is zero when back-propagating one step neither shrinks nor grows the error signal. As in the
    paper, :math:`\partial E / \partial x_{k+1}` is held constant: Ω's gradient flows only through the
    one-step Jacobian :math:`\partial x_{k+1} / \partial x_k`. For a batch, norms are taken per
    sequence over the last dimension and Ω is averaged over the batch. Terms whose
    :math:`\partial E / \partial x_{k+1}` is exactly zero are left out (the ratio is undefined).

    Args:
        loss: the scalar loss E.
        hidden_states: :math:`[x_0, \dots, x_T]`, each of shape (B, H) or (H,), the very tensors the
            recurrence computed (append them in the loop; slices of a stacked output are not on the
            path from :math:`x_k` to :math:`x_{k+1}`). :math:`x_0` must require grad.

    Returns:
        Ω as a differentiable 0-d tensor; add ``strength * Ω`` to the loss.
    """
    if len(hidden_states) < 2:
        raise ValueError(f"hidden_states must hold at least two states x_0 and x_1, got {len(hidden_states)}")
    if not all(x.requires_grad for x in hidden_states):
        raise ValueError(
            "every hidden state must be in the autograd graph; create x_0 with requires_grad=True"
        )

    # Without create_graph these gradients carry no graph: they are the constants the paper asks for.
    error_grads = torch.autograd.grad(loss, hidden_states[1:], retain_graph=True, allow_unused=True)
    terms = []
    for x_prev, x_next, g_next in zip(hidden_states[:-1], hidden_states[1:], error_grads):
        if g_next is None:  # the loss does not depend on x_next
            continue
        (g_prev,) = torch.autograd.grad(x_next, x_prev, grad_outputs=g_next, create_graph=True)
        g_next_norm = torch.linalg.vector_norm(g_next, dim=-1)  # (B,)
        defined = g_next_norm > 0
        ratio = torch.linalg.vector_norm(g_prev, dim=-1)[defined] / g_next_norm[defined]
        terms.append((ratio - 1).pow(2).sum() / g_next_norm.numel())
    return torch.stack(terms).sum() if terms else loss.new_zeros(())
