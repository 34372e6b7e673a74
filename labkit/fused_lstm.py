"""The LSTM's forward pass and its backward pass through time, written by hand and fused into one autograd node.

This is what :class:`labkit.models.LSTM` trains with. Letting autograd differentiate the step-by-step loop
(:meth:`labkit.models.LSTM.forward_by_autograd`) is correct but slow: autograd records a dozen small
operations per step and replays each one backwards. Here the forward pass runs without autograd, keeps the
activated gates, and the backward pass is the recursion of :mod:`labkit.bptt` (chapter 8)::

    δh_t = ∂L/∂h_t (direct) + W_hhᵀ ∂L/∂z_{t+1}
    δc_t = δh_t ⊙ o_t ⊙ (1 − tanh² c_t) + f_{t+1} ⊙ δc_{t+1}          (the additive cell path)
    ∂L/∂z_t = [δc_t, δc_t, δc_t, δh_t] ⊙ s_t,   with the gate slopes
    s_t = [g_t ⊙ i_t(1 − i_t),  c_{t-1} ⊙ f_t(1 − f_t),  i_t ⊙ (1 − g_t²),  tanh(c_t) ⊙ o_t(1 − o_t)]

The slopes need no pre-activation z_t: σ'(z) = y(1 − y) and tanh'(z) = 1 − y² are functions of the
activated gates y that the forward pass keeps. Only δh_t and δc_t are carried from step to step. The weight
gradients are sums over time, ``∂L/∂W_hh = Σ_t ∂L/∂z_t h_{t-1}ᵀ``, which become one matrix product over all
(t, batch) pairs once the loop is done.

Tensors are time-major here, (T, B, ·), so that each step's slice is contiguous in memory; the model's
interface stays batch-first. ``tests/test_fused_lstm.py`` checks every gradient against autograd in
float64, and ``benchmarks/lstm_vs_torch.py`` measures the speed against ``torch.nn.LSTM``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["LSTMTrace", "LSTMGrads", "lstm_steps", "lstm_steps_backward", "lstm_sequence"]


@dataclass
class LSTMTrace:
    """What one forward pass leaves for the backward pass, time-major.

    Attributes:
        x: the inputs, (T, B, I).
        h0, c0: the initial state, (B, H) each.
        gates: the activated gates (i_t, f_t, g_t, o_t) side by side, (T, B, 4H).
        cells: c_1..c_T, (T, B, H).
        tanh_cells: tanh(c_1)..tanh(c_T), (T, B, H).
        hidden: h_1..h_T, (T, B, H).
    """

    x: Tensor
    h0: Tensor
    c0: Tensor
    gates: Tensor
    cells: Tensor
    tanh_cells: Tensor
    hidden: Tensor


@dataclass
class LSTMGrads:
    """The gradients :func:`lstm_steps_backward` returns, and the totals it carried through time.

    Attributes:
        x: ∂L/∂x_t, (T, B, I); ``None`` unless asked for.
        h0, c0: ∂L/∂h_0 and ∂L/∂c_0, (B, H).
        weight_ih, weight_hh: (4H, I) and (4H, H).
        bias: ∂L/∂b_ih = ∂L/∂b_hh, (4H,).
        hidden: the totals δh_t = ∂L/∂h_t, (T, B, H).
        cells: the totals δc_t = ∂L/∂c_t, (T, B, H).
    """

    x: Tensor | None
    h0: Tensor
    c0: Tensor
    weight_ih: Tensor
    weight_hh: Tensor
    bias: Tensor
    hidden: Tensor
    cells: Tensor


@torch.no_grad()
def lstm_steps(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
               bias_ih: Tensor, bias_hh: Tensor) -> LSTMTrace:
    """Run the LSTM over ``x`` (T, B, I) from (h0, c0) without autograd, keeping what backward needs.

    ``z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` is built in place in ``gates[t]`` and activated there:
    σ on the i, f and o blocks, tanh on the g block.
    """
    T, B, _ = x.shape
    H = h0.shape[1]
    # the input part of every z_t at once: it does not depend on the recurrence
    gates = torch.addmm(bias_ih + bias_hh, x.reshape(T * B, -1), weight_ih.T.contiguous()).view(T, B, 4 * H)
    cells, tanh_cells, hidden = (x.new_empty(T, B, H) for _ in range(3))
    weight_hh_t = weight_hh.T
    h, c = h0, c0
    for z, c_out, tanh_c_out, h_out in zip(gates, cells, tanh_cells, hidden):  # step t's slices
        z.addmm_(h, weight_hh_t)  # z_t, (B, 4H)
        z[:, :2 * H].sigmoid_()  # i_t, f_t
        z[:, 2 * H:3 * H].tanh_()  # g_t
        z[:, 3 * H:].sigmoid_()  # o_t
        i, f, g, o = z.chunk(4, dim=1)
        c = torch.mul(f, c, out=c_out).addcmul_(i, g)  # c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
        h = torch.mul(o, torch.tanh(c, out=tanh_c_out), out=h_out)  # h_t = o_t ⊙ tanh(c_t)
    return LSTMTrace(x, h0, c0, gates, cells, tanh_cells, hidden)


@torch.no_grad()
def lstm_steps_backward(trace: LSTMTrace, weight_ih: Tensor, weight_hh: Tensor, grad_hidden: Tensor,
                        grad_h_last: Tensor | None = None, grad_c_last: Tensor | None = None, *,
                        need_grad_x: bool = True) -> LSTMGrads:
    """Backpropagate through time: from ∂L/∂h_t (direct, (T, B, H)) and ∂L/∂(h_T, c_T) to every gradient.

    Args:
        trace: from :func:`lstm_steps`.
        weight_ih, weight_hh: the weights the forward pass used.
        grad_hidden: the loss's direct derivative with respect to each h_t, (T, B, H).
        grad_h_last, grad_c_last: ∂L/∂h_T and ∂L/∂c_T through the returned final state; ``None`` for 0.
        need_grad_x: compute ∂L/∂x_t as well.
    """
    T, B, H = trace.hidden.shape
    i, f, g, o = trace.gates.chunk(4, dim=2)  # (T, B, H) each
    c_prev = torch.cat([trace.c0.unsqueeze(0), trace.cells[:-1]])  # c_0..c_{T-1}
    grad_z = torch.empty_like(trace.gates)  # ∂L/∂z_t, (T, B, 4H)
    grad_h = torch.empty_like(trace.hidden)  # δh_t
    grad_c = torch.empty_like(trace.cells)  # δc_t
    h_from_future = torch.zeros_like(trace.h0) if grad_h_last is None else grad_h_last  # W_hhᵀ ∂L/∂z_{t+1}
    c_from_future = torch.zeros_like(trace.c0) if grad_c_last is None else grad_c_last  # f_{t+1} ⊙ δc_{t+1}
    steps = zip(i, f, g, o, c_prev, trace.tanh_cells, grad_hidden, grad_h, grad_c, grad_z)  # step t's slices
    for i_t, f_t, g_t, o_t, c_prev_t, tanh_c_t, direct_t, dh, dc, dz in reversed(list(steps)):
        torch.add(direct_t, h_from_future, out=dh)  # δh_t
        torch.add(_through_tanh(dh * o_t, tanh_c_t), c_from_future, out=dc)  # δc_t
        torch.cat([
            _through_sigmoid(dc * g_t, i_t),  # ∂L/∂z_i = δc_t ⊙ g_t ⊙ i_t(1 − i_t)
            _through_sigmoid(dc * c_prev_t, f_t),  # ∂L/∂z_f = δc_t ⊙ c_{t-1} ⊙ f_t(1 − f_t)
            _through_tanh(dc * i_t, g_t),  # ∂L/∂z_g = δc_t ⊙ i_t ⊙ (1 − g_t²)
            _through_sigmoid(dh * tanh_c_t, o_t),  # ∂L/∂z_o = δh_t ⊙ tanh(c_t) ⊙ o_t(1 − o_t)
        ], dim=1, out=dz)  # ∂L/∂z_t, (B, 4H)
        h_from_future = dz @ weight_hh
        c_from_future = f_t * dc  # the cell path

    h_prev = torch.cat([trace.h0.unsqueeze(0), trace.hidden[:-1]])  # h_0..h_{T-1}
    grad_z_rows = grad_z.view(T * B, 4 * H)  # one row per (t, b): the sums over time become matrix products
    x_rows = trace.x.reshape(T * B, -1)
    return LSTMGrads(
        x=(grad_z_rows @ weight_ih).view(T, B, -1) if need_grad_x else None,
        h0=h_from_future,  # W_hhᵀ ∂L/∂z_1
        c0=c_from_future,  # f_1 ⊙ δc_1
        # Σ_t ∂L/∂z_t x_tᵀ, computed as (Σ x_t ∂L/∂z_tᵀ)ᵀ: for a small input size the CPU's matrix product
        # is ~15x faster in this orientation
        weight_ih=(x_rows.T @ grad_z_rows).T,
        weight_hh=grad_z_rows.T @ h_prev.reshape(T * B, H),  # Σ_t ∂L/∂z_t h_{t-1}ᵀ
        bias=grad_z_rows.sum(dim=0),  # Σ_t ∂L/∂z_t
        hidden=grad_h,
        cells=grad_c,
    )


# torch's one-kernel derivatives of its activations, given the activation's output y:
# grad ⊙ y(1 − y) for y = σ(z), and grad ⊙ (1 − y²) for y = tanh(z)
_through_sigmoid = torch.ops.aten.sigmoid_backward
_through_tanh = torch.ops.aten.tanh_backward


class _LSTMSequence(torch.autograd.Function):
    """One autograd node for the whole sequence: :func:`lstm_steps` forward, :func:`lstm_steps_backward` back."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor,
                bias_ih: Tensor, bias_hh: Tensor,
                on_hidden_grads: Callable[[Tensor], None] | None) -> tuple[Tensor, Tensor, Tensor]:
        trace = lstm_steps(x, h0, c0, weight_ih, weight_hh, bias_ih, bias_hh)
        ctx.on_hidden_grads = on_hidden_grads
        ctx.save_for_backward(trace.x, h0, c0, weight_ih, weight_hh, trace.gates, trace.cells,
                              trace.tanh_cells, trace.hidden)
        return trace.hidden, trace.hidden[-1].clone(), trace.cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_hidden: Tensor, grad_h_last: Tensor,
                 grad_c_last: Tensor) -> tuple[Tensor | None, ...]:
        x, h0, c0, weight_ih, weight_hh, gates, cells, tanh_cells, hidden = ctx.saved_tensors
        trace = LSTMTrace(x, h0, c0, gates, cells, tanh_cells, hidden)
        grads = lstm_steps_backward(trace, weight_ih, weight_hh, grad_hidden, grad_h_last, grad_c_last,
                                    need_grad_x=ctx.needs_input_grad[0])
        if ctx.on_hidden_grads is not None:
            ctx.on_hidden_grads(grads.hidden)
        return grads.x, grads.h0, grads.c0, grads.weight_ih, grads.weight_hh, grads.bias, grads.bias.clone(), None


def lstm_sequence(x: Tensor, h0: Tensor, c0: Tensor, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor,
                  bias_hh: Tensor, *,
                  on_hidden_grads: Callable[[Tensor], None] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The LSTM over a batch-first ``x`` (B, T, I): hidden states (B, T, H), h_T and c_T, differentiable.

    The gradient comes from :func:`lstm_steps_backward`; it is differentiable once (no ``create_graph``
    through it: use :meth:`labkit.models.LSTM.forward_by_autograd` for second derivatives).

    Args:
        on_hidden_grads: called by the backward pass with the totals ∂L/∂h_t, (T, B, H), which it computes
            anyway (the gradient monitor's per-timestep profile).
    """
    hidden, h_last, c_last = _LSTMSequence.apply(x.transpose(0, 1), h0, c0, weight_ih, weight_hh,
                                                 bias_ih, bias_hh, on_hidden_grads)
    return hidden.transpose(0, 1), h_last, c_last
