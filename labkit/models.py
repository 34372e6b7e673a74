"""Recurrent models written out step by step, so that every quantity the course talks about is visible.

- :class:`ScalarRNN`: the one-unit model of Pascanu, Mikolov & Bengio (2013, eq. 8),
  ``x_t = w·σ(x_{t-1}) + b``, vectorised over a grid of ``(w, b)`` so a whole loss surface is one call.
- :class:`ElmanRNN`: ``h_t = σ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``, ``y_t = W_hy h_t + b_hy``.
- :class:`LSTM`: the LSTM with fused gates in torch's order (i, f, g, o) and a forget-gate bias; it trains
  through the backward pass written by hand in :mod:`labkit.fused_lstm`.

Both sequence models take ``x`` of shape (B, T, I) and return a :class:`RecurrentOutput`
``(outputs, hidden, state)``. They hold their weights under ``torch.nn.RNN`` / ``torch.nn.LSTM``'s names
(``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``) and convert to and from those modules exactly.
"""
from __future__ import annotations

import math
from typing import NamedTuple, TypeVar

import torch
from torch import nn

from labkit._checks import one_of, positive_float, positive_int, sequence_batch
from labkit.fused_lstm import lstm_sequence

ACTIVATIONS = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}
ELMAN_INITS = ("default", "gaussian", "orthogonal")
M = TypeVar("M", bound=nn.Module)
R = TypeVar("R", bound=nn.RNNBase)


class RecurrentOutput(NamedTuple):
    """What a sequence model returns.

    Attributes:
        outputs: the readout at every step, (B, T, O); the hidden states themselves when there is no readout.
        hidden: the hidden states h_1..h_T, (B, T, H).
        state: the final state to continue from: h_T (B, H) for the Elman RNN, (h_T, c_T) for the LSTM.
    """

    outputs: torch.Tensor
    hidden: torch.Tensor
    state: torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class ScalarRNN(nn.Module):
    """The single-unit recurrent model of Pascanu et al. (2013, eq. 8): ``x_t = w·σ(x_{t-1}) + b``.

    ``w`` and ``b`` may be tensors of any (broadcastable) shape: the model then runs every pair at once,
    which is how the loss cliff is drawn on a grid. With a single pair they are trainable parameters.

    Args:
        w: recurrent weight(s).
        b: bias(es).
        activation: ``"sigmoid"`` (the paper's choice) or ``"tanh"``.
    """

    def __init__(self, w: float | torch.Tensor = 1.0, b: float | torch.Tensor = 0.0,
                 activation: str = "sigmoid") -> None:
        super().__init__()
        self.activation = one_of(activation, "activation", ("sigmoid", "tanh"))
        dtype = torch.get_default_dtype()
        self.w = nn.Parameter(torch.as_tensor(w, dtype=dtype).clone())
        self.b = nn.Parameter(torch.as_tensor(b, dtype=dtype).clone())

    def forward(self, x0: float | torch.Tensor, steps: int) -> torch.Tensor:
        """Run ``steps`` updates from ``x0`` and return every state ``x_0..x_steps``.

        The shape is (steps + 1, *S) where S is the broadcast shape of ``w``, ``b`` and ``x0``.
        """
        positive_int(steps, "steps")
        sigma = ACTIVATIONS[self.activation]
        x = torch.as_tensor(x0, dtype=self.w.dtype, device=self.w.device)
        x = x.expand(torch.broadcast_shapes(x.shape, self.w.shape, self.b.shape))
        states = [x]
        for _ in range(steps):
            x = self.w * sigma(x) + self.b
            states.append(x)
        return torch.stack(states)


class ElmanRNN(nn.Module):
    """The Elman (vanilla) RNN written out step by step.

    ``h_t = σ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` and, with a readout, ``y_t = W_hy h_t + b_hy``.

    Args:
        input_size: I, features per step.
        hidden_size: H, units in the hidden state.
        output_size: O, readout size; ``None`` for no readout (outputs are the hidden states).
        nonlinearity: ``"tanh"``, ``"sigmoid"`` or ``"relu"``.
        init: how ``W_hh`` starts: ``"default"`` (torch's U(-1/√H, 1/√H)), ``"gaussian"``
            (N(0, gain²/H) entries) or ``"orthogonal"`` (a random orthogonal matrix times ``gain``).
        spectral_radius: if given, ``W_hh`` is rescaled after ``init`` so that its largest
            |eigenvalue| ρ(W_hh) equals this value.
        gain: the scale used by the ``"gaussian"`` and ``"orthogonal"`` inits.
        generator: the source of randomness for the initial weights (a fixed seed when omitted).

    Attributes:
        record_hidden_grads: when True, ``forward`` keeps each h_t in ``hidden_steps`` with
            ``retain_grad()``, so that after ``backward()`` :meth:`hidden_grad_norms` gives ‖∂L/∂h_t‖.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None, *,
                 nonlinearity: str = "tanh", init: str = "default", spectral_radius: float | None = None,
                 gain: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        if output_size is not None:
            positive_int(output_size, "output_size")
        self.nonlinearity = one_of(nonlinearity, "nonlinearity", tuple(ACTIVATIONS))
        one_of(init, "init", ELMAN_INITS)
        positive_float(gain, "gain")
        if spectral_radius is not None:
            positive_float(spectral_radius, "spectral_radius")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(hidden_size))
        self.readout = _linear(hidden_size, output_size) if output_size is not None else None
        self._initialize(init, gain, spectral_radius, gen)
        self.record_hidden_grads = False
        self.hidden_steps: list[torch.Tensor] = []

    @torch.no_grad()
    def _initialize(self, init: str, gain: float, spectral_radius: float | None,
                    gen: torch.Generator) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.bias_ih, self.bias_hh):
            p.copy_(_uniform(p.shape, bound, gen))
        H = self.hidden_size
        if init == "default":
            self.weight_hh.copy_(_uniform((H, H), bound, gen))
        elif init == "gaussian":
            self.weight_hh.copy_(torch.randn(H, H, generator=gen) * gain / math.sqrt(H))
        else:
            self.weight_hh.copy_(gain * random_orthogonal(H, gen))
        if spectral_radius is not None:
            self.weight_hh.mul_(spectral_radius / spectral_radius_of(self.weight_hh))
        if self.readout is not None:
            self.readout.weight.copy_(_uniform(self.readout.weight.shape, bound, gen))
            self.readout.bias.copy_(_uniform(self.readout.bias.shape, bound, gen))

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> RecurrentOutput:
        """Run the RNN over ``x`` (B, T, I) from ``state`` h_0 (B, H), zeros when omitted."""
        sequence_batch(x, "x", self.input_size)
        B = x.shape[0]
        h = self._initial_state(state, B, x)
        sigma = ACTIVATIONS[self.nonlinearity]
        # the input projection for all steps at once; unbind (not x_proj[:, t]) keeps backward O(T)
        x_proj = x @ self.weight_ih.T + (self.bias_ih + self.bias_hh)  # (B, T, H)
        self.hidden_steps = []
        for x_t in x_proj.unbind(1):
            h = sigma(x_t + h @ self.weight_hh.T)  # (B, H)
            if self.record_hidden_grads and h.requires_grad:
                h.retain_grad()
            self.hidden_steps.append(h)
        hidden = torch.stack(self.hidden_steps, dim=1)  # (B, T, H)
        if not self.record_hidden_grads:
            self.hidden_steps = []
        outputs = self.readout(hidden) if self.readout is not None else hidden
        return RecurrentOutput(outputs, hidden, h)

    def _initial_state(self, state: torch.Tensor | None, batch: int, x: torch.Tensor) -> torch.Tensor:
        if state is None:
            return x.new_zeros(batch, self.hidden_size)
        if not isinstance(state, torch.Tensor) or state.shape != (batch, self.hidden_size):
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            raise ValueError(f"state must have shape (batch, hidden_size) = {(batch, self.hidden_size)}, got {got}")
        return state

    def hidden_grad_norms(self) -> torch.Tensor:
        """‖∂L/∂h_t‖ (Frobenius norm over the batch) for t = 1..T after ``backward()``, shape (T,).

        Needs ``record_hidden_grads = True`` before the forward pass.
        """
        return _hidden_grad_norms(self)

    def has_hidden_grads(self) -> bool:
        """Whether :meth:`hidden_grad_norms` has something to return: recorded, and backward has run."""
        return _retained_hidden_grads(self)

    @classmethod
    def from_torch(cls, rnn: nn.RNN, readout: nn.Linear | None = None) -> "ElmanRNN":
        """Build an ElmanRNN holding exactly the weights of a one-layer ``torch.nn.RNN`` (and a readout)."""
        if not isinstance(rnn, nn.RNN):
            raise TypeError(f"expected a torch.nn.RNN, got {type(rnn).__name__}")
        if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias:
            raise ValueError("only a one-layer, unidirectional torch.nn.RNN with biases can be converted")
        model = cls(rnn.input_size, rnn.hidden_size, readout.out_features if readout is not None else None,
                    nonlinearity=rnn.nonlinearity)
        return _load_from_torch(model, rnn, readout)

    def to_torch(self) -> tuple[nn.RNN, nn.Linear | None]:
        """Export to a ``torch.nn.RNN`` (batch_first) and a copy of the readout; sigmoid has no torch.nn.RNN."""
        if self.nonlinearity == "sigmoid":
            raise ValueError("torch.nn.RNN supports only 'tanh' and 'relu'; this model uses 'sigmoid'")
        rnn = nn.RNN(self.input_size, self.hidden_size, nonlinearity=self.nonlinearity, batch_first=True)
        return _export_to_torch(self, rnn)


class LSTM(nn.Module):
    """A one-layer LSTM written out step by step, gates fused into one matrix product per step.

    With ``z_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh`` split into (i, f, g, o) as torch does::

        i_t = σ(z_i)   f_t = σ(z_f)   g_t = tanh(z_g)   o_t = σ(z_o)
        c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t          (the additive cell path)
        h_t = o_t ⊙ tanh(c_t)

    Args:
        input_size: I, features per step.
        hidden_size: H, units in h and c.
        output_size: O, readout size; ``None`` for no readout.
        forget_bias: initial forget-gate bias (put in ``bias_ih``; ``bias_hh``'s forget part starts at 0).
            A positive value (1 is common; Gers et al. 2000) keeps the cell open at the start of training.
        generator: the source of randomness for the initial weights.

    Attributes:
        record_hidden_grads: when True, the backward pass records ‖∂L/∂h_t‖ for :meth:`hidden_grad_norms`.
            The hand-written backward computes every ∂L/∂h_t anyway, so this costs one norm per step;
            :meth:`forward_by_autograd` instead keeps each h_t in ``hidden_steps`` with ``retain_grad()``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int | None = None, *,
                 forget_bias: float = 1.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.input_size = positive_int(input_size, "input_size")
        self.hidden_size = positive_int(hidden_size, "hidden_size")
        if output_size is not None:
            positive_int(output_size, "output_size")
        if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)):
            raise TypeError(f"forget_bias must be a finite number, got {type(forget_bias).__name__} {forget_bias!r}")
        if not math.isfinite(forget_bias):
            raise ValueError(f"forget_bias must be a finite number, got {forget_bias!r}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        H = hidden_size
        bound = 1.0 / math.sqrt(H)
        self.weight_ih = nn.Parameter(_uniform((4 * H, input_size), bound, gen))
        self.weight_hh = nn.Parameter(_uniform((4 * H, H), bound, gen))
        self.bias_ih = nn.Parameter(_uniform((4 * H,), bound, gen))
        self.bias_hh = nn.Parameter(_uniform((4 * H,), bound, gen))
        with torch.no_grad():
            self.bias_ih[H:2 * H] = float(forget_bias)
            self.bias_hh[H:2 * H] = 0.0
        self.readout = _linear(H, output_size) if output_size is not None else None
        if self.readout is not None:
            with torch.no_grad():
                self.readout.weight.copy_(_uniform(self.readout.weight.shape, bound, gen))
                self.readout.bias.copy_(_uniform(self.readout.bias.shape, bound, gen))
        self.record_hidden_grads = False
        self.hidden_steps: list[torch.Tensor] = []
        self._recorded_grad_norms: torch.Tensor | None = None

    def forward(self, x: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> RecurrentOutput:
        """Run the LSTM over ``x`` (B, T, I) from ``state`` (h_0, c_0), zeros when omitted.

        The gradient is the backward pass through time written by hand (:mod:`labkit.fused_lstm`), which is
        what makes this model nearly as fast as ``torch.nn.LSTM``.
        """
        sequence_batch(x, "x", self.input_size)
        h, c = self._initial_state(state, x)
        self.hidden_steps, self._recorded_grad_norms = [], None
        record = self._record_grad_norms if self.record_hidden_grads else None
        hidden, h, c = lstm_sequence(x, h, c, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
                                     on_hidden_grads=record)
        outputs = self.readout(hidden) if self.readout is not None else hidden
        return RecurrentOutput(outputs, hidden, (h, c))

    def forward_by_autograd(self, x: torch.Tensor,
                            state: tuple[torch.Tensor, torch.Tensor] | None = None) -> RecurrentOutput:
        """The same function as :meth:`forward`, one step at a time, for autograd to differentiate.

        Slower to train than :meth:`forward`, but every h_t is a node of the graph: ``record_hidden_grads``
        keeps them in ``hidden_steps``, and second derivatives (``create_graph=True``) work.
        """
        sequence_batch(x, "x", self.input_size)
        h, c = self._initial_state(state, x)
        self._recorded_grad_norms = None
        # every step's input projection at once; W_ihᵀ is made contiguous because, for a transposed view, the
        # CPU backward pass of this tall, thin product takes a path ~10x slower
        x_proj = x @ self.weight_ih.T.contiguous() + (self.bias_ih + self.bias_hh)  # (B, T, 4H)
        self.hidden_steps = []
        for x_t in x_proj.unbind(1):
            z = x_t + h @ self.weight_hh.T  # (B, 4H)
            i, f, g, o = z.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, H)
            h = torch.sigmoid(o) * torch.tanh(c)  # (B, H)
            if self.record_hidden_grads and h.requires_grad:
                h.retain_grad()
            self.hidden_steps.append(h)
        hidden = torch.stack(self.hidden_steps, dim=1)  # (B, T, H)
        if not self.record_hidden_grads:
            self.hidden_steps = []
        outputs = self.readout(hidden) if self.readout is not None else hidden
        return RecurrentOutput(outputs, hidden, (h, c))

    def _initial_state(self, state: tuple[torch.Tensor, torch.Tensor] | None,
                       x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, H = x.shape[0], self.hidden_size
        if state is None:
            zeros = x.new_zeros(B, H)
            return zeros, zeros
        return _check_lstm_state(state, B, H)

    def hidden_grad_norms(self) -> torch.Tensor:
        """‖∂L/∂h_t‖ for t = 1..T after ``backward()`` (needs ``record_hidden_grads = True``), shape (T,)."""
        if self._recorded_grad_norms is not None:
            return self._recorded_grad_norms
        return _hidden_grad_norms(self)

    def has_hidden_grads(self) -> bool:
        """Whether :meth:`hidden_grad_norms` has something to return: recorded, and backward has run."""
        return self._recorded_grad_norms is not None or _retained_hidden_grads(self)

    def _record_grad_norms(self, grad_hidden: torch.Tensor) -> None:
        """Called by the backward pass with every ∂L/∂h_t, (T, B, H): keep their norms."""
        self._recorded_grad_norms = torch.linalg.vector_norm(grad_hidden, dim=(1, 2))

    @classmethod
    def from_torch(cls, lstm: nn.LSTM, readout: nn.Linear | None = None) -> "LSTM":
        """Build an LSTM holding exactly the weights of a one-layer ``torch.nn.LSTM`` (and a readout)."""
        if not isinstance(lstm, nn.LSTM):
            raise TypeError(f"expected a torch.nn.LSTM, got {type(lstm).__name__}")
        if lstm.num_layers != 1 or lstm.bidirectional or not lstm.bias or lstm.proj_size:
            raise ValueError("only a one-layer, unidirectional torch.nn.LSTM with biases and no projection "
                             "can be converted")
        model = cls(lstm.input_size, lstm.hidden_size, readout.out_features if readout is not None else None)
        return _load_from_torch(model, lstm, readout)

    def to_torch(self) -> tuple[nn.LSTM, nn.Linear | None]:
        """Export to a ``torch.nn.LSTM`` (batch_first) and a copy of the readout."""
        lstm = nn.LSTM(self.input_size, self.hidden_size, batch_first=True)
        return _export_to_torch(self, lstm)


def spectral_radius_of(matrix: torch.Tensor) -> float:
    """ρ(W) = max |eigenvalue| of a square matrix."""
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
    return torch.linalg.eigvals(matrix.detach().double().cpu()).abs().max().item()


def largest_singular_value(matrix: torch.Tensor) -> float:
    """λ₁(W) = the largest singular value, the spectral norm ‖W‖₂."""
    if matrix.dim() != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(matrix.shape)}")
    return torch.linalg.matrix_norm(matrix.detach().double().cpu(), ord=2).item()


def random_orthogonal(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random n×n orthogonal matrix, uniform (Haar) over the orthogonal group: QR of a Gaussian, signs fixed."""
    positive_int(n, "n")
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # makes the distribution Haar (Mezzadri 2007)
    return q.to(torch.get_default_dtype())


def _uniform(shape: tuple[int, ...] | torch.Size, bound: float, gen: torch.Generator) -> torch.Tensor:
    return (2.0 * torch.rand(*shape, generator=gen) - 1.0) * bound


def _linear(in_features: int, out_features: int) -> nn.Linear:
    # skip nn.Linear's own init: it draws from the global generator; labkit fills the weights from `gen`
    return nn.utils.skip_init(nn.Linear, in_features, out_features)


def _load_from_torch(model: M, module: nn.RNNBase, readout: nn.Linear | None) -> M:
    """Copy a one-layer torch module's ``*_l0`` weights (and a readout) into a labkit model."""
    model.to(dtype=module.weight_hh_l0.dtype, device=module.weight_hh_l0.device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(model, name).copy_(getattr(module, f"{name}_l0"))
        if readout is not None:
            model.readout.load_state_dict(readout.state_dict())
    return model


def _export_to_torch(model: ElmanRNN | LSTM, module: R) -> tuple[R, nn.Linear | None]:
    """Copy a labkit model's weights into a fresh one-layer torch module; return it with a readout copy."""
    module.to(dtype=model.weight_hh.dtype, device=model.weight_hh.device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(module, f"{name}_l0").copy_(getattr(model, name))
    return module, _copy_linear(model.readout)


def _copy_linear(linear: nn.Linear | None) -> nn.Linear | None:
    if linear is None:
        return None
    copy = nn.Linear(linear.in_features, linear.out_features)
    copy.to(dtype=linear.weight.dtype, device=linear.weight.device)
    copy.load_state_dict(linear.state_dict())
    return copy


def _check_lstm_state(state: object, batch: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    expected = (batch, hidden)
    if (not isinstance(state, (tuple, list)) or len(state) != 2
            or not all(isinstance(s, torch.Tensor) and tuple(s.shape) == expected for s in state)):
        raise ValueError(f"state must be a pair (h_0, c_0) of tensors of shape {expected}")
    return state[0], state[1]


def _retained_hidden_grads(model: ElmanRNN | LSTM) -> bool:
    return bool(model.record_hidden_grads and model.hidden_steps and model.hidden_steps[0].grad is not None)


def _hidden_grad_norms(model: ElmanRNN | LSTM) -> torch.Tensor:
    if not model.record_hidden_grads:
        raise RuntimeError("set model.record_hidden_grads = True before the forward pass to record ‖∂L/∂h_t‖")
    if not model.hidden_steps or model.hidden_steps[0].grad is None:
        raise RuntimeError("no hidden-state gradients recorded yet: run forward, then loss.backward()")
    return torch.stack([h.grad.norm() for h in model.hidden_steps]).detach()
