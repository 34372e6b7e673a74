"""Deep fully connected networks at initialization: how the size of the gradient changes from layer to layer.

The network has L hidden layers and a linear readout (biases start at zero, as in Glorot & Bengio 2010)::

    a_l = W_l h_{l-1} + b_l,    h_l = σ(a_l),    l = 1..L,    h_0 = x,    ŷ = R h_L + c

and the loss is the mean squared error ``L = mean((ŷ - y)²)`` over the batch and the outputs. The chain rule
sends the gradient back through one Jacobian per layer, ``J_l = ∂h_l/∂h_{l-1} = diag(σ'(a_l)) W_l``::

    δ_l = ∂L/∂a_l = σ'(a_l) ⊙ ∂L/∂h_l,    ∂L/∂h_{l-1} = J_lᵀ ∂L/∂h_l = W_lᵀ δ_l,
    ∂L/∂W_l = Σ_batch δ_l h_{l-1}ᵀ

so ``∂L/∂h_0 = J_1ᵀ ⋯ J_Lᵀ ∂L/∂h_L``: a product of L matrices, which grows or shrinks geometrically
with L.
How fast depends on the weights' scale and on σ', which is what the initialization schemes here control.

- Initializations (each returns a (fan_out, fan_in) weight drawn from an explicit generator):
  :func:`standard_uniform`, :func:`glorot_uniform`, :func:`he_normal`, :func:`lecun_normal`,
  :func:`orthogonal`; :func:`init_variance` gives the variance of one entry by formula.
- :class:`DeepMLP`: the network above, with a chosen activation and initialization.
- :func:`backward_pass`: the backward pass written out layer by layer (equal to autograd).
- :func:`layer_gradient_norms`, :func:`measure_depth_profiles`: ‖δ_l‖ and ‖∂L/∂W_l‖ per layer, over seeds.
- :func:`mean_field_profile`: the prediction of ‖δ_l‖/‖δ_L‖ from the weights' variance and σ'.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from labkit._checks import one_of, positive_float, positive_int

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "linear": lambda a: a,
}
DERIVATIVE_BOUND = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "linear": 1.0}  # γ = sup_a |σ'(a)|
QUADRATURE_POINTS = 100  # even, so no node sits on ReLU's kink at 0 and E[relu'(z)²] = 1/2 exactly


def activation_derivative(name: str, a: torch.Tensor) -> torch.Tensor:
    """σ'(a) for the activation ``name``, written from σ itself: tanh' = 1 - tanh², sigmoid' = s(1 - s).

    ReLU's derivative at 0 is taken as 0, as autograd does.
    """
    one_of(name, "activation", tuple(ACTIVATIONS))
    if name == "tanh":
        return 1.0 - torch.tanh(a) ** 2
    if name == "sigmoid":
        s = torch.sigmoid(a)
        return s * (1.0 - s)
    if name == "relu":
        return (a > 0).to(a.dtype)
    return torch.ones_like(a)


# ---------------------------------------------------------------------------------------------------
# Initializations: a (fan_out, fan_in) matrix, so that a = W h for h of size fan_in.


def standard_uniform(fan_in: int, fan_out: int, *, generator: torch.Generator, gain: float = 1.0,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
    """The old heuristic W_ij ~ U(-1/√n, 1/√n), n = fan_in (Glorot & Bengio 2010, eq. 1): Var = gain²/(3 n).

    Because n·Var(W) = 1/3, the backpropagated gradient shrinks by about √3 per tanh layer.
    """
    _check_fans(fan_in, fan_out, generator, gain)
    return _uniform(fan_in, fan_out, gain / math.sqrt(fan_in), generator, dtype)


def glorot_uniform(fan_in: int, fan_out: int, *, generator: torch.Generator, gain: float = 1.0,
                   dtype: torch.dtype | None = None) -> torch.Tensor:
    """Glorot/Xavier's "normalized" init, U(-√(6/(n_in + n_out)), +√(6/(n_in + n_out))) times ``gain``
    (Glorot & Bengio 2010, eq. 16): Var = gain²·2/(n_in + n_out), a compromise between keeping the forward
    activations' variance (n_in·Var = 1) and the backward gradients' variance (n_out·Var = 1)."""
    _check_fans(fan_in, fan_out, generator, gain)
    return _uniform(fan_in, fan_out, gain * math.sqrt(6.0 / (fan_in + fan_out)), generator, dtype)


def he_normal(fan_in: int, fan_out: int, *, generator: torch.Generator, gain: float = 1.0,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """He/Kaiming's init for ReLU, W_ij ~ N(0, 2/n_in) times ``gain`` (He et al. 2015, eq. 10):
    ReLU zeroes half the units, so n_in·Var(W) = 2 keeps the signal's second moment from layer to layer."""
    _check_fans(fan_in, fan_out, generator, gain)
    return _normal(fan_in, fan_out, gain * math.sqrt(2.0 / fan_in), generator, dtype)


def lecun_normal(fan_in: int, fan_out: int, *, generator: torch.Generator, gain: float = 1.0,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """W_ij ~ N(0, gain²/n_in) (LeCun et al. 1998): n_in·Var(W) = gain². ``gain = √c`` gives variance c/n."""
    _check_fans(fan_in, fan_out, generator, gain)
    return _normal(fan_in, fan_out, gain / math.sqrt(fan_in), generator, dtype)


def orthogonal(fan_in: int, fan_out: int, *, generator: torch.Generator, gain: float = 1.0,
               dtype: torch.dtype | None = None) -> torch.Tensor:
    """A random (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2014): every singular value is ``gain``.

    Orthonormal rows when fan_out ≤ fan_in, orthonormal columns otherwise; drawn uniformly (Haar) as the Q
    of a Gaussian matrix's QR with the signs fixed. Var of an entry = gain²/max(n_in, n_out). Sensible
    gains: 1 for linear and tanh layers, √2 for ReLU.
    """
    _check_fans(fan_in, fan_out, generator, gain)
    rows, cols = max(fan_in, fan_out), min(fan_in, fan_out)
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))  # q: (rows, cols)
    q = q * torch.sign(torch.diagonal(r))  # makes the distribution Haar (Mezzadri 2007)
    weight = q if fan_out >= fan_in else q.T  # (fan_out, fan_in)
    return (gain * weight).to(dtype or torch.get_default_dtype())


INITS: dict[str, Callable[..., torch.Tensor]] = {
    "standard": standard_uniform,
    "glorot": glorot_uniform,
    "he": he_normal,
    "lecun": lecun_normal,
    "orthogonal": orthogonal,
}


def init_variance(init: str, fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    """The variance of one weight entry under ``init``, by formula (what :data:`INITS` draws from)."""
    one_of(init, "init", tuple(INITS))
    positive_int(fan_in, "fan_in")
    positive_int(fan_out, "fan_out")
    g2 = positive_float(gain, "gain") ** 2
    return {
        "standard": g2 / (3.0 * fan_in),
        "glorot": g2 * 2.0 / (fan_in + fan_out),
        "he": g2 * 2.0 / fan_in,
        "lecun": g2 / fan_in,
        "orthogonal": g2 / max(fan_in, fan_out),
    }[init]


def _check_fans(fan_in: int, fan_out: int, generator: torch.Generator, gain: float) -> None:
    positive_int(fan_in, "fan_in")
    positive_int(fan_out, "fan_out")
    positive_float(gain, "gain")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _uniform(fan_in: int, fan_out: int, bound: float, generator: torch.Generator,
             dtype: torch.dtype | None) -> torch.Tensor:
    u = torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float64)
    return ((2.0 * u - 1.0) * bound).to(dtype or torch.get_default_dtype())


def _normal(fan_in: int, fan_out: int, std: float, generator: torch.Generator,
            dtype: torch.dtype | None) -> torch.Tensor:
    return (torch.randn(fan_out, fan_in, generator=generator, dtype=torch.float64) * std).to(
        dtype or torch.get_default_dtype())


# ---------------------------------------------------------------------------------------------------
# The network


class Trace(NamedTuple):
    """Everything the forward pass computed: pre-activations a_1..a_L, activations h_0..h_L and ŷ."""

    preactivations: list[torch.Tensor]  # L tensors (B, width)
    activations: list[torch.Tensor]  # L + 1 tensors, h_0 = x (B, in_features), then (B, width)
    output: torch.Tensor  # (B, out_features)


class DeepMLP(nn.Module):
    """L hidden layers ``h_l = σ(W_l h_{l-1} + b_l)`` of the same width, then a linear readout ``ŷ = R h_L + c``.

    Args:
        in_features: size of the input x.
        width: units in every hidden layer.
        depth: L, the number of hidden layers.
        out_features: size of the output ŷ.
        activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"linear"``.
        init: a key of :data:`INITS`, used for every weight matrix including the readout.
        gain: multiplies every weight (see each init's docstring for sensible values).
        generator: the source of randomness (a fixed seed when omitted).
        dtype: the parameters' dtype (default: torch's default dtype).

    Attributes:
        hidden: the L hidden ``nn.Linear`` layers, first to last.
        readout: the output ``nn.Linear``.
    """

    def __init__(self, in_features: int, width: int, depth: int, out_features: int, *, activation: str = "tanh",
                 init: str = "glorot", gain: float = 1.0, generator: torch.Generator | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.in_features = positive_int(in_features, "in_features")
        self.width = positive_int(width, "width")
        self.depth = positive_int(depth, "depth")
        self.out_features = positive_int(out_features, "out_features")
        self.activation = one_of(activation, "activation", tuple(ACTIVATIONS))
        self.init = one_of(init, "init", tuple(INITS))
        self.gain = positive_float(gain, "gain")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        dtype = dtype or torch.get_default_dtype()
        sizes = [in_features] + [width] * depth
        self.hidden = nn.ModuleList(_layer(n_in, n_out, init, gain, gen, dtype)
                                    for n_in, n_out in zip(sizes[:-1], sizes[1:]))
        self.readout = _layer(width, out_features, init, gain, gen, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ŷ for a batch x of shape (B, in_features); returns (B, out_features)."""
        return self.trace(x).output

    def trace(self, x: torch.Tensor) -> Trace:
        """The forward pass, keeping every pre-activation a_l and activation h_l (in the autograd graph)."""
        h = self._check_input(x)
        sigma = ACTIVATIONS[self.activation]
        preactivations, activations = [], [h]
        for layer in self.hidden:
            a = layer(h)  # (B, width)
            h = sigma(a)
            preactivations.append(a)
            activations.append(h)
        return Trace(preactivations, activations, self.readout(h))

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (batch, {self.in_features}), got {type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != self.in_features or x.shape[0] == 0:
            raise ValueError(f"x must have shape (batch, {self.in_features}) with batch >= 1, got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        return x


def _layer(fan_in: int, fan_out: int, init: str, gain: float, gen: torch.Generator,
           dtype: torch.dtype) -> nn.Linear:
    # skip nn.Linear's own init: it draws from the global generator; the weights come from `gen`
    layer = nn.utils.skip_init(nn.Linear, fan_in, fan_out, dtype=dtype)
    with torch.no_grad():
        layer.weight.copy_(INITS[init](fan_in, fan_out, generator=gen, gain=gain, dtype=dtype))
        layer.bias.zero_()
    return layer


def mlp_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L = mean((ŷ - y)²) over the batch and the outputs (``torch.nn.functional.mse_loss``)."""
    return ((output - _check_target(output, target)) ** 2).mean()


def mlp_loss_grad(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """∂L/∂ŷ of :func:`mlp_loss`: 2(ŷ - y)/(B·out). The mean's 1/(B·out) belongs to the gradient."""
    return 2.0 * (output - _check_target(output, target)) / output.numel()


def _check_target(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if not isinstance(target, torch.Tensor) or target.shape != output.shape:
        got = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be a tensor of the output's shape {tuple(output.shape)}, got {got}")
    return target


# ---------------------------------------------------------------------------------------------------
# The backward pass, by hand


class Gradients(NamedTuple):
    """Every gradient of one backward pass; lists run from the first hidden layer to the last."""

    hidden_grads: list[torch.Tensor]  # ∂L/∂h_l for l = 0..L, (B, in_features) then (B, width)
    preactivation_grads: list[torch.Tensor]  # δ_l = ∂L/∂a_l for l = 1..L, (B, width)
    weight_grads: list[torch.Tensor]  # ∂L/∂W_l for l = 1..L, shaped like W_l
    bias_grads: list[torch.Tensor]  # ∂L/∂b_l for l = 1..L
    readout_grads: tuple[torch.Tensor, torch.Tensor]  # (∂L/∂R, ∂L/∂c)


@torch.no_grad()
def backpropagate(model: DeepMLP, trace: Trace, grad_output: torch.Tensor) -> Gradients:
    """Send ∂L/∂ŷ back through the network layer by layer with the chain rule (no autograd).

    Each hidden layer applies its Jacobian transposed, J_lᵀ = W_lᵀ diag(σ'(a_l))::

        δ_l = σ'(a_l) ⊙ ∂L/∂h_l,   ∂L/∂W_l = δ_lᵀ h_{l-1},   ∂L/∂b_l = Σ_batch δ_l,   ∂L/∂h_{l-1} = δ_l W_l

    (rows are examples, so ``δ_l W_l`` is W_lᵀ δ_l for each row).

    Args:
        model: the network.
        trace: its forward pass, ``model.trace(x)``.
        grad_output: ∂L/∂ŷ, shaped like ``trace.output``.
    """
    if not isinstance(grad_output, torch.Tensor) or grad_output.shape != trace.output.shape:
        got = tuple(grad_output.shape) if isinstance(grad_output, torch.Tensor) else type(grad_output).__name__
        raise ValueError(f"grad_output must be a tensor of the output's shape {tuple(trace.output.shape)}, "
                         f"got {got}")
    h_last = trace.activations[-1]
    readout_grads = (grad_output.T @ h_last, grad_output.sum(0))
    grad_h = grad_output @ model.readout.weight  # ∂L/∂h_L, (B, width)
    hidden_grads, deltas, weight_grads, bias_grads = [grad_h], [], [], []
    for layer, a, h_prev in zip(reversed(model.hidden), reversed(trace.preactivations),
                                reversed(trace.activations[:-1])):
        delta = activation_derivative(model.activation, a) * grad_h  # δ_l, (B, n_l)
        weight_grads.append(delta.T @ h_prev)  # (n_l, n_{l-1})
        bias_grads.append(delta.sum(0))
        grad_h = delta @ layer.weight  # ∂L/∂h_{l-1}, (B, n_{l-1})
        deltas.append(delta)
        hidden_grads.append(grad_h)
    return Gradients(hidden_grads[::-1], deltas[::-1], weight_grads[::-1], bias_grads[::-1], readout_grads)


@torch.no_grad()
def backward_pass(model: DeepMLP, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, Gradients]:
    """The loss L = mean((ŷ - y)²) and all its gradients, by hand: equal to what ``loss.backward()`` gives.

    Args:
        model: the network.
        x: inputs, (B, in_features).
        y: targets, (B, out_features).

    Returns:
        ``(loss, gradients)``.
    """
    trace = model.trace(x)
    loss = mlp_loss(trace.output, y)
    return loss, backpropagate(model, trace, mlp_loss_grad(trace.output, y))


def layer_jacobians(model: DeepMLP, x: torch.Tensor) -> list[torch.Tensor]:
    """The layer Jacobians J_l = ∂h_l/∂h_{l-1} = diag(σ'(a_l)) W_l at one input x of shape (in_features,).

    Returns L matrices, J_l of shape (n_l, n_{l-1}).

    Their product J_L ⋯ J_1 is ∂h_L/∂h_0, and ∂L/∂h_0 = J_1ᵀ ⋯ J_Lᵀ ∂L/∂h_L.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 1:
        raise ValueError(f"x must be one input, a 1-D tensor of size {model.in_features}")
    with torch.no_grad():
        trace = model.trace(x.unsqueeze(0))
        return [activation_derivative(model.activation, a[0]).unsqueeze(1) * layer.weight
                for layer, a in zip(model.hidden, trace.preactivations)]


# ---------------------------------------------------------------------------------------------------
# Measuring and predicting the per-layer gradient size


class LayerNorms(NamedTuple):
    """Per-layer gradient sizes, first hidden layer to last, each shape (L,)."""

    signal: torch.Tensor  # ‖δ_l‖ = ‖∂L/∂a_l‖ over the batch (Frobenius): the backpropagated gradient
    weight: torch.Tensor  # ‖∂L/∂W_l‖ (Frobenius)


def layer_gradient_norms(grads: Gradients) -> LayerNorms:
    """‖δ_l‖ and ‖∂L/∂W_l‖ for l = 1..L, from :func:`backward_pass`'s or :func:`backpropagate`'s gradients."""
    return LayerNorms(torch.stack([d.norm() for d in grads.preactivation_grads]),
                      torch.stack([g.norm() for g in grads.weight_grads]))


class DepthProfile(NamedTuple):
    """Per-layer gradient sizes of freshly initialized networks, one row per seed, shape (S, L).

    The ratios divide by the last hidden layer, so they start at the gradient the loss delivers (1 at l = L)
    and show what the L - l backward steps down to layer l did to it.
    """

    signal: np.ndarray  # ‖δ_l‖
    weight: np.ndarray  # ‖∂L/∂W_l‖

    def signal_ratios(self) -> np.ndarray:
        """‖δ_l‖ / ‖δ_L‖ for each seed and layer, (S, L)."""
        return self.signal / self.signal[:, -1:]

    def weight_ratios(self) -> np.ndarray:
        """‖∂L/∂W_l‖ / ‖∂L/∂W_L‖ for each seed and layer, (S, L)."""
        return self.weight / self.weight[:, -1:]

    def first_to_last(self) -> tuple[np.ndarray, np.ndarray]:
        """Per seed: ‖δ_1‖/‖δ_L‖ (the quantity of Glorot & Bengio 2010, Fig. 7) and ‖∂L/∂W_1‖/‖∂L/∂W_L‖."""
        return self.signal_ratios()[:, 0], self.weight_ratios()[:, 0]


MEASURE_LOSSES = ("mse", "random")


def measure_depth_profiles(activation: str, init: str, depth: int, *, losses: Iterable[str] = MEASURE_LOSSES,
                           width: int = 256, out_features: int = 10, batch_size: int = 64,
                           seeds: Iterable[int] = range(5), gain: float = 1.0,
                           dtype: torch.dtype = torch.float64) -> dict[str, DepthProfile]:
    """Per-layer gradient norms of fresh ``DeepMLP(width, width, depth, out_features)`` nets, one per seed.

    For each seed, one generator seeded with it draws the weights, then the inputs x ~ N(0, 1) (so
    E[x²] = 1), then y ~ N(0, 1) and u ~ N(0, 1), each of shape (B, out_features); every loss is measured on
    the same networks and inputs.

    Args:
        activation, init, gain: as in :class:`DeepMLP`.
        depth: L, the number of hidden layers.
        losses: which of :data:`MEASURE_LOSSES` to measure. ``"mse"``: L = mean((ŷ - y)²), whose gradient
            ∂L/∂ŷ = 2(ŷ - y)/(B·out) depends on the network's own output; ``"random"``: L = (1/B) Σ_b u_b·ŷ_b,
            whose gradient ∂L/∂ŷ = u/B does not, which is what the mean-field prediction assumes.
        width: n, the input size and every hidden layer's width.
        out_features: the readout's size.
        batch_size: examples per batch.
        seeds: one network per seed.
        dtype: the computation's dtype.

    Returns:
        loss name → :class:`DepthProfile`.
    """
    losses = [one_of(loss, "loss", MEASURE_LOSSES) for loss in losses]
    seeds = list(seeds)
    if not seeds or not losses:
        raise ValueError("seeds and losses must each hold at least one entry")
    positive_int(batch_size, "batch_size")
    norms: dict[str, list[LayerNorms]] = {loss: [] for loss in losses}
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        model = DeepMLP(width, width, depth, out_features, activation=activation, init=init, gain=gain,
                        generator=gen, dtype=dtype)
        x = torch.randn(batch_size, width, generator=gen, dtype=dtype)  # (B, n)
        y = torch.randn(batch_size, out_features, generator=gen, dtype=dtype)  # (B, out)
        u = torch.randn(batch_size, out_features, generator=gen, dtype=dtype)  # (B, out)
        with torch.no_grad():
            trace = model.trace(x)
        for loss in losses:
            grad_output = mlp_loss_grad(trace.output, y) if loss == "mse" else u / batch_size
            norms[loss].append(layer_gradient_norms(backpropagate(model, trace, grad_output)))
    return {loss: DepthProfile(np.array([n.signal.numpy() for n in rows]),
                               np.array([n.weight.numpy() for n in rows]))
            for loss, rows in norms.items()}


def measure_depth_profile(activation: str, init: str, depth: int, *, loss: str = "mse", width: int = 256,
                          out_features: int = 10, batch_size: int = 64, seeds: Iterable[int] = range(5),
                          gain: float = 1.0, dtype: torch.dtype = torch.float64) -> DepthProfile:
    """:func:`measure_depth_profiles` for one loss."""
    return measure_depth_profiles(activation, init, depth, losses=[loss], width=width,
                                  out_features=out_features, batch_size=batch_size, seeds=seeds, gain=gain,
                                  dtype=dtype)[loss]


class MeanFieldProfile(NamedTuple):
    """The large-width prediction for a net with every layer of the same width; arrays of shape (L,)."""

    preactivation_variance: np.ndarray  # q_l = E[a_l²]
    backward_factor: np.ndarray  # χ_l = n·Var(W)·E[σ'(a_l)²]: E‖δ_l‖² = χ_l E‖δ_{l+1}‖² (last entry unused)
    signal_ratio: np.ndarray  # predicted ‖δ_l‖/‖δ_L‖ = (χ_l ⋯ χ_{L-1})^(1/2)


def mean_field_profile(activation: str, init: str, depth: int, *, width: int = 256, gain: float = 1.0,
                       input_second_moment: float = 1.0) -> MeanFieldProfile:
    """Predict ‖δ_l‖/‖δ_L‖ for ``DeepMLP(width, width, depth, ...)`` from the weights' variance and σ'.

    With zero biases and independent weights of variance v (so σ_w² = n·v), a pre-activation is a sum of
    many independent terms, close to Gaussian with variance q_l (Glorot & Bengio 2010; Poole et al. 2016)::

        q_1 = σ_w² E[x²],    q_l = σ_w² E[σ(√q_{l-1} z)²],    z ~ N(0, 1)

    and each backward step multiplies the expected squared norm by χ_l = σ_w² E[σ'(√q_l z)²], treating
    σ'(a_l) as independent of W_{l+1}ᵀ δ_{l+1} (He et al. 2015 make the same assumption). For ReLU,
    E[σ'²] = 1/2 whatever q is, so χ = σ_w²/2; for a linear net χ = σ_w². Expectations over z are computed
    by Gauss–Hermite quadrature.
    """
    one_of(activation, "activation", tuple(ACTIVATIONS))
    positive_int(depth, "depth")
    m0 = positive_float(input_second_moment, "input_second_moment")
    sigma_w2 = width * init_variance(init, width, width, gain)
    z, w = np.polynomial.hermite_e.hermegauss(QUADRATURE_POINTS)
    w = w / w.sum()  # weights of E over z ~ N(0, 1)
    sigma = ACTIVATIONS[activation]
    q = np.empty(depth)
    chi = np.empty(depth)
    second_moment = m0
    for i in range(depth):  # layer i + 1
        q[i] = sigma_w2 * second_moment
        a = torch.from_numpy(math.sqrt(q[i]) * z)
        second_moment = float(np.dot(w, sigma(a).numpy() ** 2))
        chi[i] = sigma_w2 * float(np.dot(w, activation_derivative(activation, a).numpy() ** 2))
    # E‖δ_l‖²/E‖δ_L‖² = χ_l ⋯ χ_{L-1}: a reversed cumulative product, 1 at l = L
    squared = np.append(np.cumprod(chi[-2::-1])[::-1], 1.0) if depth > 1 else np.ones(1)
    return MeanFieldProfile(q, chi, np.sqrt(squared))
