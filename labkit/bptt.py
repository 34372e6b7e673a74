"""Backpropagation through time written out by hand, for the Elman RNN (chapter 3) and the LSTM (chapter 8).

**Elman RNN.** Forward, for t = 1..T (biases and readout as in :class:`labkit.models.ElmanRNN`)::

    a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh        (pre-activation)
    h_t = σ(a_t)
    y_t = W_hy h_t + b_hy                               (readout; without one, y_t = h_t)

Backward. Let δ_t = ∂L/∂h_t be the *total* derivative of the loss with respect to h_t. The state h_t
reaches the loss along two paths, through its own output y_t and through the next pre-activation a_{t+1}::

    δ_t = W_hyᵀ ∂L/∂y_t + W_hhᵀ g_{t+1},    g_t = ∂L/∂a_t = σ'(a_t) ⊙ δ_t,    g_{T+1} = 0

Every weight is used at every step, so its gradient is a sum over time (and over the batch)::

    ∂L/∂W_hh = Σ_t g_t h_{t-1}ᵀ     ∂L/∂W_ih = Σ_t g_t x_tᵀ     ∂L/∂b_ih = ∂L/∂b_hh = Σ_t g_t
    ∂L/∂W_hy = Σ_t ∂L/∂y_t h_tᵀ     ∂L/∂b_hy = Σ_t ∂L/∂y_t       ∂L/∂h_0 = W_hhᵀ g_1

Unrolling the recursion shows where exploding and vanishing gradients come from: what the loss at step T
sends back to h_t is multiplied by the Jacobian product ∂h_T/∂h_t = J_T J_{T-1} ⋯ J_{t+1}, where
J_s = ∂h_s/∂h_{s-1} = diag(σ'(a_s)) W_hh (rows index h_s). :func:`jacobian_product_norms` measures it.

**LSTM.** With z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh split into gates (i, f, g, o)::

    i_t = σ(z_i)   f_t = σ(z_f)   g_t = tanh(z_g)   o_t = σ(z_o)
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t        h_t = o_t ⊙ tanh(c_t)

the backward pass carries two totals, δh_t = ∂L/∂h_t and δc_t = ∂L/∂c_t::

    δh_t = W_hyᵀ ∂L/∂y_t + W_hhᵀ ∂L/∂z_{t+1}
    δc_t = δh_t ⊙ o_t ⊙ (1 − tanh² c_t) + f_{t+1} ⊙ δc_{t+1}          (the additive cell path)
    ∂L/∂z_i = δc_t ⊙ g_t ⊙ i_t(1 − i_t)        ∂L/∂z_f = δc_t ⊙ c_{t-1} ⊙ f_t(1 − f_t)
    ∂L/∂z_g = δc_t ⊙ i_t ⊙ (1 − g_t²)          ∂L/∂z_o = δh_t ⊙ tanh(c_t) ⊙ o_t(1 − o_t)

and the weight gradients are the Elman sums with g_t replaced by ∂L/∂z_t. Along the cell path the step
Jacobian ∂c_t/∂c_{t-1} = diag(f_t) holds neither W_hh nor a squashing derivative, which is why gradients
can survive long spans when f_t ≈ 1.

In the code vectors are rows batched as (B, H), so ``W h`` is written ``h @ W.T`` and ``Wᵀ g`` is ``g @ W``.
Everything runs without autograd; the tests check every number against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from labkit._checks import positive_int, sequence_batch
from labkit.fused_lstm import LSTMTrace, lstm_steps, lstm_steps_backward
from labkit.models import ACTIVATIONS, LSTM, ElmanRNN

LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "BPTTResult", "ElmanCache", "LSTMCache",
    "elman_forward", "elman_backward", "elman_bptt", "elman_truncated_bptt", "jacobian_product_norms",
    "activation_derivative", "lstm_forward", "lstm_backward", "lstm_bptt",
]


@dataclass
class ElmanCache:
    """What the Elman backward pass needs from the forward pass (all detached).

    Attributes:
        x: the inputs x_1..x_T, (B, T, I).
        h0: the initial state h_0, (B, H).
        hidden: h_1..h_T, (B, T, H); enough to recover σ'(a_t) (see :func:`activation_derivative`).
        outputs: y_1..y_T, (B, T, O); the same tensor as ``hidden`` when the model has no readout.
    """

    x: Tensor
    h0: Tensor
    hidden: Tensor
    outputs: Tensor

    @property
    def final_state(self) -> Tensor:
        """h_T, (B, H): pass it as ``h0`` to continue with the next chunk of a sequence."""
        return self.hidden[:, -1]


@dataclass
class LSTMCache:
    """What the LSTM backward pass needs from the forward pass (all detached).

    Attributes:
        x: the inputs, (B, T, I).
        h0, c0: the initial state, (B, H) each.
        gates: the activated gates (i, f, g, o) of every step side by side, (B, T, 4H).
        cells: c_1..c_T, (B, T, H).
        hidden: h_1..h_T, (B, T, H).
        outputs: y_1..y_T, (B, T, O); the same tensor as ``hidden`` when the model has no readout.
        trace: the same tensors time-major, as :func:`labkit.fused_lstm.lstm_steps` keeps them;
            ``gates``, ``cells`` and ``hidden`` are views of it.
    """

    x: Tensor
    h0: Tensor
    c0: Tensor
    gates: Tensor
    cells: Tensor
    hidden: Tensor
    outputs: Tensor
    trace: LSTMTrace

    @property
    def final_state(self) -> tuple[Tensor, Tensor]:
        """(h_T, c_T), (B, H) each: pass it as ``state`` to continue with the next chunk."""
        return self.hidden[:, -1], self.cells[:, -1]


@dataclass
class BPTTResult:
    """The gradients of one backward pass through time, and how they flowed.

    Attributes:
        grads: ∂L/∂θ for every parameter, keyed by ``model.named_parameters()`` names.
        grad_h0: ∂L/∂h_0, (B, H).
        hidden_grad_norms: ‖∂L/∂h_t‖ (total derivative, Frobenius norm over the batch) for t = 1..T, (T,).
        jacobian_norms: Elman RNN: ‖∂h_T/∂h_t‖₂ (spectral norm) for t = 1..T of the *first* sequence in
            the batch, (T,), when asked for with ``jacobian_norms=True``; the last entry is ‖I‖₂ = 1.
            ``None`` otherwise, and always for the LSTM. :func:`jacobian_product_norms` gives every sequence.
        final_state: where the forward pass ended (detached): h_T, or (h_T, c_T) for the LSTM.
        cell_grad_norms: LSTM only: ‖∂L/∂c_t‖ (total derivative, Frobenius over the batch), (T,).
        grad_c0: LSTM only: ∂L/∂c_0, (B, H).
    """

    grads: dict[str, Tensor]
    grad_h0: Tensor
    hidden_grad_norms: Tensor
    jacobian_norms: Tensor | None
    final_state: Tensor | tuple[Tensor, Tensor]
    cell_grad_norms: Tensor | None = None
    grad_c0: Tensor | None = None

    def set_grads_(self, model: nn.Module) -> None:
        """Put ``grads`` in each parameter's ``.grad`` (replacing what was there), ready for ``optimizer.step()``."""
        for name, p in model.named_parameters():
            p.grad = self.grads[name].clone()


# ---------------------------------------------------------------------------------------------- Elman RNN

@torch.no_grad()
def elman_forward(model: ElmanRNN, x: Tensor, h0: Tensor | None = None) -> ElmanCache:
    """Run the Elman RNN over ``x`` (B, T, I) from ``h0`` (B, H; zeros when omitted), keeping what backward needs.

    Returns:
        An :class:`ElmanCache`; its ``outputs`` equal ``model(x, h0).outputs``.
    """
    _check_model(model, ElmanRNN)
    _check_inputs(model, x)
    B, T, H = x.shape[0], x.shape[1], model.hidden_size
    h0 = x.new_zeros(B, H) if h0 is None else _check_tensor(h0, "h0", (B, H), x.dtype).detach()
    h = h0
    sigma = ACTIVATIONS[model.nonlinearity]
    x_proj = x @ model.weight_ih.T + (model.bias_ih + model.bias_hh)  # (B, T, H)
    hidden = x.new_empty(B, T, H)
    for t, x_t in enumerate(x_proj.unbind(1)):
        a = x_t + h @ model.weight_hh.T  # a_t, (B, H)
        h = sigma(a)  # h_t, (B, H)
        hidden[:, t] = h  # a_t itself is not kept: σ'(a_t) can be computed from h_t
    outputs = model.readout(hidden) if model.readout is not None else hidden  # (B, T, O)
    return ElmanCache(x.detach(), h0, hidden, outputs)


@torch.no_grad()
def elman_backward(model: ElmanRNN, cache: ElmanCache, grad_outputs: Tensor, *,
                   jacobian_norms: bool = False) -> BPTTResult:
    """Backpropagate ``grad_outputs`` = ∂L/∂y through time, by the recursion in the module docstring.

    Args:
        model: the ElmanRNN that produced ``cache``.
        cache: from :func:`elman_forward`.
        grad_outputs: ∂L/∂y_t for every step, shape of ``cache.outputs``: (B, T, O), or (B, T, H) without a
            readout. Any loss works: get it with autograd on the loss alone (see :func:`elman_bptt`).
        jacobian_norms: also compute ``result.jacobian_norms`` for the first sequence. Off by default:
            T products and spectral norms of H×H matrices cost several times the backward pass itself.

    Returns:
        A :class:`BPTTResult`: the gradients, ∂L/∂h_0, ‖∂L/∂h_t‖ for t = 1..T and, if asked for,
        ‖∂h_T/∂h_t‖₂.
    """
    _check_model(model, ElmanRNN)
    _check_cache(model, cache, ElmanCache)
    _check_tensor(grad_outputs, "grad_outputs", tuple(cache.outputs.shape), cache.outputs.dtype)
    B, T, H = cache.hidden.shape
    W_hh = model.weight_hh
    grad_direct, grads = _readout_backward(model, cache.hidden, grad_outputs)  # W_hyᵀ ∂L/∂y_t, (B, T, H)
    sigma_prime = activation_derivative(model.nonlinearity, cache.hidden)  # σ'(a_t), (B, T, H)
    direct, local = grad_direct.unbind(1), sigma_prime.unbind(1)  # T tensors (B, H) each

    grad_hidden = cache.hidden.new_empty(B, T, H)  # δ_t = ∂L/∂h_t
    grad_pre = cache.hidden.new_empty(B, T, H)  # g_t = ∂L/∂a_t
    from_future = cache.hidden.new_zeros(B, H)  # W_hhᵀ g_{t+1}: nothing comes back from beyond step T
    for t in reversed(range(T)):
        delta = direct[t] + from_future  # δ_t, (B, H)
        g = local[t] * delta  # g_t = σ'(a_t) ⊙ δ_t, (B, H)
        from_future = g @ W_hh  # W_hhᵀ g_t, this step's share of δ_{t-1}, (B, H)
        grad_hidden[:, t] = delta
        grad_pre[:, t] = g

    h_prev = torch.cat([cache.h0.unsqueeze(1), cache.hidden[:, :-1]], dim=1)  # h_0..h_{T-1}, (B, T, H)
    grads.update(_input_and_recurrent_grads(grad_pre, cache.x, h_prev))
    return BPTTResult(
        grads=_in_parameter_order(model, grads),
        grad_h0=from_future,  # ∂L/∂h_0 = W_hhᵀ g_1
        hidden_grad_norms=torch.linalg.vector_norm(grad_hidden, dim=(0, 2)),  # (T,)
        jacobian_norms=_jacobian_norms(W_hh, sigma_prime[:1])[0] if jacobian_norms else None,
        final_state=cache.final_state,
    )


def elman_bptt(model: ElmanRNN, x: Tensor, y: Tensor, loss_fn: LossFn, h0: Tensor | None = None, *,
               jacobian_norms: bool = False) -> tuple[Tensor, BPTTResult]:
    """Forward, loss and manual backward through time in one call.

    Autograd is used only for ∂L/∂y, the derivative of ``loss_fn`` with respect to the model's outputs;
    everything that flows through the recurrence is done by :func:`elman_backward`.

    Args:
        model: an :class:`~labkit.models.ElmanRNN`.
        x: inputs (B, T, I).
        y: targets, whatever ``loss_fn`` expects.
        loss_fn: ``loss_fn(outputs, y) -> scalar``, e.g. ``task.loss`` of a :class:`~labkit.tasks.SequenceTask`.
        h0: the initial state (B, H), zeros when omitted. For truncated BPTT pass the previous chunk's
            ``result.final_state``: it is detached, so no gradient flows into the previous chunk.
        jacobian_norms: as for :func:`elman_backward`.

    Returns:
        ``(loss, result)``: the loss (detached) and the :class:`BPTTResult`.
    """
    cache = elman_forward(model, x, h0)
    loss, grad_outputs = _loss_and_output_grad(loss_fn, cache.outputs, y)
    return loss, elman_backward(model, cache, grad_outputs, jacobian_norms=jacobian_norms)


def elman_truncated_bptt(model: ElmanRNN, x: Tensor, y: Tensor, loss_fn: LossFn, chunk_len: int,
                         h0: Tensor | None = None) -> tuple[Tensor, BPTTResult]:
    """Truncated BPTT: the whole sequence's loss, with gradients stopped at every chunk boundary.

    The sequence is cut into chunks of ``chunk_len`` steps (the last may be shorter). The forward pass runs
    through all of them, each chunk starting from the previous one's final state, so the outputs and the
    loss are exactly those of the untruncated model. Backward runs inside each chunk only: the state that
    enters a chunk is treated as a constant, as ``h.detach()`` does in an autograd training loop. So
    δ_t keeps its direct term but loses everything the loss at later chunks would have sent back through
    the recurrence, and the gradients are the sums of the per-chunk gradients.

    Args:
        model, x, y, loss_fn, h0: as for :func:`elman_bptt`.
        chunk_len: steps per chunk, k ≥ 1; ``chunk_len >= T`` is ordinary BPTT.

    Returns:
        ``(loss, result)``; ``result.grad_h0`` is ∂L/∂h_0 through the first chunk only, ``hidden_grad_norms``
        are the truncated ‖∂L/∂h_t‖, and ``jacobian_norms`` is ``None`` (truncation cuts the product to 0).
    """
    positive_int(chunk_len, "chunk_len")
    _check_model(model, ElmanRNN)
    _check_inputs(model, x)
    caches = []
    state = h0
    for x_chunk in x.split(chunk_len, dim=1):
        caches.append(elman_forward(model, x_chunk, state))
        state = caches[-1].final_state
    outputs = torch.cat([cache.outputs for cache in caches], dim=1)  # (B, T, O)
    loss, grad_outputs = _loss_and_output_grad(loss_fn, outputs, y)
    results = [elman_backward(model, cache, grad_chunk, jacobian_norms=False)
               for cache, grad_chunk in zip(caches, grad_outputs.split(chunk_len, dim=1))]
    return loss, BPTTResult(
        grads={name: sum(r.grads[name] for r in results) for name in results[0].grads},
        grad_h0=results[0].grad_h0,
        hidden_grad_norms=torch.cat([r.hidden_grad_norms for r in results]),
        jacobian_norms=None,
        final_state=state,
    )


def jacobian_product_norms(model: ElmanRNN, x: Tensor, h0: Tensor | None = None) -> Tensor:
    """‖∂h_T/∂h_t‖₂ for every sequence in the batch and t = 1..T: how much of a change in h_t reaches h_T.

    ∂h_T/∂h_t = J_T J_{T-1} ⋯ J_{t+1} with J_s = diag(σ'(a_s)) W_hh (rows index h_s); Pascanu et al.
    (2013) write the transpose, a product of W_hhᵀ diag(σ'), which has the same spectral norm, the largest
    singular value. For t = T the product is empty, the identity, of norm 1.

    Args:
        model: an :class:`~labkit.models.ElmanRNN`.
        x: inputs (B, T, I).
        h0: the initial state (B, H), zeros when omitted.

    Returns:
        A tensor of shape (B, T); ``.mean(0)`` gives the batch average.
    """
    cache = elman_forward(model, x, h0)
    sigma_prime = activation_derivative(model.nonlinearity, cache.hidden)  # (B, T, H)
    return _jacobian_norms(model.weight_hh.detach(), sigma_prime)


def activation_derivative(nonlinearity: str, h: Tensor) -> Tensor:
    """σ'(a) written through h = σ(a), so the forward pass need keep only the states.

    tanh' = 1 − h², sigmoid' = h(1 − h), relu' = [a > 0] = [h > 0].
    """
    if nonlinearity == "tanh":
        return 1.0 - h ** 2
    if nonlinearity == "sigmoid":
        return h * (1.0 - h)
    if nonlinearity == "relu":
        return (h > 0).to(h.dtype)
    raise ValueError(f"nonlinearity must be one of {tuple(ACTIVATIONS)}, got {nonlinearity!r}")


@torch.no_grad()
def _jacobian_norms(W_hh: Tensor, sigma_prime: Tensor) -> Tensor:
    """‖J_T ⋯ J_{t+1}‖₂ for t = 1..T with J_s = diag(σ'(a_s)) W_hh, from σ'(a_t) (B, T, H); returns (B, T)."""
    B, T, H = sigma_prime.shape
    product = torch.eye(H, dtype=W_hh.dtype, device=W_hh.device).expand(B, H, H)  # ∂h_T/∂h_T = I, (B, H, H)
    norms = sigma_prime.new_empty(B, T)
    norms[:, T - 1] = 1.0
    steps = sigma_prime.unbind(1)  # steps[s] = σ'(a_{s+1}): Python counts from 0, the math from 1
    for t in reversed(range(1, T)):
        # ∂h_T/∂h_t = ∂h_T/∂h_{t+1} · diag(σ'(a_{t+1})) W_hh: scale the columns, then multiply
        product = (product * steps[t].unsqueeze(1)) @ W_hh  # (B, H, H)
        norms[:, t - 1] = torch.linalg.matrix_norm(product, ord=2)
    return norms


# ---------------------------------------------------------------------------------------------- LSTM

@torch.no_grad()
def lstm_forward(model: LSTM, x: Tensor, state: tuple[Tensor, Tensor] | None = None) -> LSTMCache:
    """Run the LSTM over ``x`` (B, T, I) from ``state`` = (h_0, c_0) (zeros when omitted), caching for backward.

    The steps are :func:`labkit.fused_lstm.lstm_steps`, the same code the model runs.

    Returns:
        An :class:`LSTMCache`; its ``outputs`` equal ``model(x, state).outputs``.
    """
    _check_model(model, LSTM)
    _check_inputs(model, x)
    B, H = x.shape[0], model.hidden_size
    if state is None:
        h0 = c0 = x.new_zeros(B, H)
    else:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state must be a pair (h_0, c_0) of tensors of shape {(B, H)}, "
                            f"got {type(state).__name__}")
        h0 = _check_tensor(state[0], "h_0", (B, H), x.dtype).detach()
        c0 = _check_tensor(state[1], "c_0", (B, H), x.dtype).detach()
    trace = lstm_steps(x.detach().transpose(0, 1), h0, c0, model.weight_ih, model.weight_hh,
                       model.bias_ih, model.bias_hh)
    hidden = trace.hidden.transpose(0, 1)  # (B, T, H)
    outputs = model.readout(hidden) if model.readout is not None else hidden  # (B, T, O)
    return LSTMCache(x.detach(), h0, c0, trace.gates.transpose(0, 1), trace.cells.transpose(0, 1), hidden,
                     outputs, trace)


@torch.no_grad()
def lstm_backward(model: LSTM, cache: LSTMCache, grad_outputs: Tensor) -> BPTTResult:
    """Backpropagate ``grad_outputs`` = ∂L/∂y through the LSTM, by the recursions in the module docstring.

    The recursion itself is :func:`labkit.fused_lstm.lstm_steps_backward`, the code the model trains with;
    this adds the readout and the norms of the totals δh_t and δc_t.

    Args:
        model: the LSTM that produced ``cache``.
        cache: from :func:`lstm_forward`.
        grad_outputs: ∂L/∂y_t, shape of ``cache.outputs``: (B, T, O), or (B, T, H) without a readout.

    Returns:
        A :class:`BPTTResult` with ``grad_c0`` and ``cell_grad_norms`` ‖∂L/∂c_t‖ filled in;
        ``jacobian_norms`` is ``None`` (the state is the pair (h, c); compare ``cell_grad_norms`` instead).
    """
    _check_model(model, LSTM)
    _check_cache(model, cache, LSTMCache)
    _check_tensor(grad_outputs, "grad_outputs", tuple(cache.outputs.shape), cache.outputs.dtype)
    grad_direct, grads = _readout_backward(model, cache.hidden, grad_outputs)  # W_hyᵀ ∂L/∂y_t, (B, T, H)
    lstm = lstm_steps_backward(cache.trace, model.weight_ih, model.weight_hh, grad_direct.transpose(0, 1),
                               need_grad_x=False)
    grads.update(weight_ih=lstm.weight_ih, weight_hh=lstm.weight_hh, bias_ih=lstm.bias, bias_hh=lstm.bias.clone())
    return BPTTResult(
        grads=_in_parameter_order(model, grads),
        grad_h0=lstm.h0,
        hidden_grad_norms=torch.linalg.vector_norm(lstm.hidden, dim=(1, 2)),  # ‖δh_t‖, (T,)
        jacobian_norms=None,
        final_state=cache.final_state,
        cell_grad_norms=torch.linalg.vector_norm(lstm.cells, dim=(1, 2)),  # ‖δc_t‖, (T,)
        grad_c0=lstm.c0,
    )


def lstm_bptt(model: LSTM, x: Tensor, y: Tensor, loss_fn: LossFn,
              state: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, BPTTResult]:
    """Forward, loss and manual backward through the LSTM in one call; as :func:`elman_bptt`.

    Returns:
        ``(loss, result)``: the loss (detached) and the :class:`BPTTResult`.
    """
    cache = lstm_forward(model, x, state)
    loss, grad_outputs = _loss_and_output_grad(loss_fn, cache.outputs, y)
    return loss, lstm_backward(model, cache, grad_outputs)


# ---------------------------------------------------------------------------------------------- shared

def _readout_backward(model: ElmanRNN | LSTM, hidden: Tensor,
                      grad_outputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Through y_t = W_hy h_t + b_hy: return W_hyᵀ ∂L/∂y_t (B, T, H) and the readout's gradients."""
    if model.readout is None:
        return grad_outputs, {}  # y_t = h_t
    grads = {
        "readout.weight": torch.einsum("bto,bth->oh", grad_outputs, hidden),  # Σ_t ∂L/∂y_t h_tᵀ, (O, H)
        "readout.bias": grad_outputs.sum(dim=(0, 1)),  # Σ_t ∂L/∂y_t, (O,)
    }
    return grad_outputs @ model.readout.weight, grads  # (B, T, H)


def _input_and_recurrent_grads(grad_pre: Tensor, x: Tensor, h_prev: Tensor) -> dict[str, Tensor]:
    """Sums over batch and time for z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, given ∂L/∂z_t (B, T, G)."""
    bias = grad_pre.sum(dim=(0, 1))  # Σ_t ∂L/∂z_t, (G,)
    return {
        "weight_ih": torch.einsum("btg,bti->gi", grad_pre, x),  # Σ_t ∂L/∂z_t x_tᵀ, (G, I)
        "weight_hh": torch.einsum("btg,bth->gh", grad_pre, h_prev),  # Σ_t ∂L/∂z_t h_{t-1}ᵀ, (G, H)
        "bias_ih": bias,
        "bias_hh": bias.clone(),
    }


def _in_parameter_order(model: nn.Module, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: grads[name] for name, _ in model.named_parameters()}


def _loss_and_output_grad(loss_fn: LossFn, outputs: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """L = loss_fn(outputs, y) and ∂L/∂outputs, by autograd on the loss function alone."""
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(outputs, y), got {type(loss_fn).__name__}")
    outputs = outputs.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(outputs, y)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            got = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor, got {got}")
        (grad_outputs,) = torch.autograd.grad(loss, outputs, allow_unused=True)
    if grad_outputs is None:  # the loss does not depend on the outputs
        grad_outputs = torch.zeros_like(outputs)
    return loss.detach().reshape(()), grad_outputs


def _check_model(model: object, expected: type) -> None:
    if not isinstance(model, expected):
        raise TypeError(f"model must be a labkit.models.{expected.__name__}, got {type(model).__name__} "
                        f"(convert a torch.nn module with {expected.__name__}.from_torch)")


def _check_inputs(model: ElmanRNN | LSTM, x: Tensor) -> None:
    sequence_batch(x, "x", model.input_size)
    if x.dtype != model.weight_hh.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters have dtype {model.weight_hh.dtype}; "
                        f"convert one of them")


def _check_tensor(value: object, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape}, got {type(value).__name__}")
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} like the model, got {value.dtype}")
    return value


def _check_cache(model: ElmanRNN | LSTM, cache: object, expected: type) -> None:
    if not isinstance(cache, expected):
        raise TypeError(f"cache must be an {expected.__name__} from the matching forward function, "
                        f"got {type(cache).__name__}")
    if cache.hidden.shape[-1] != model.hidden_size or cache.x.shape[-1] != model.input_size:
        raise ValueError(f"cache is for input/hidden sizes {(cache.x.shape[-1], cache.hidden.shape[-1])}, "
                         f"the model has {(model.input_size, model.hidden_size)}")
