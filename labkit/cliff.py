"""The loss cliff of Pascanu, Mikolov & Bengio (2013, §3, eq. 8 and Fig. 6), computed exactly.

The model is one sigmoid unit run for T = 50 steps, ``x_t = w·σ(x_{t-1}) + b`` from ``x_0 = 0.5``, with the
loss ``L(w, b) = (σ(x_T) - 0.7)²``. Since σ' ≤ 1/4, the map ``x ↦ w·σ(x) + b`` contracts for |w| < 4 and
the loss is smooth. For larger w it can have two stable fixed points with a repelling one between them;
where ``x_0`` is exactly that repelling point (:func:`cliff_wall`, w > 4.25) the orbit from ``x_0`` flips
from one attractor to the other, so ``x_T`` jumps and the loss has a wall. On the wall the gradient grows
like ``(w·σ'(x_0))^T``, orders of magnitude above its size elsewhere: one plain gradient step that touches
the wall is thrown far away, while a step whose gradient norm is clipped to τ moves at most η·τ (the
paper's Algorithm 1).

Everything is computed in float64 with :class:`labkit.models.ScalarRNN` and autograd.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike

from labkit._checks import positive_float, positive_int
from labkit.fixes import clip_grad_norm_
from labkit.models import ScalarRNN

STEPS = 50  # T, the number of recurrent steps
X0 = 0.5  # the initial state x_0
TARGET = 0.7  # the target for σ(x_T)
W_RANGE = (2.0, 8.0)  # default grid: the wall starts near w = 4.25 and runs down to the right
B_RANGE = (-6.0, 0.0)
RESOLUTION = 201  # default points per axis
# A start and step sizes where plain gradient descent hits the wall and is thrown off the grid while the
# clipped run stays and reaches a low loss (robust to perturbing the start by 1e-3).
DEMO_START = (4.2, -2.6)
DEMO_LR = 1.0
DEMO_CLIP = 0.25
DEMO_STEPS = 30


@dataclass(frozen=True)
class Trajectory:
    """A run of gradient descent on the cliff loss.

    Attributes:
        points: one row ``(w, b, loss, grad_norm)`` per iterate, shape (n, 4); ``grad_norm`` is the norm
            of the gradient at that iterate *before* any clipping. Only finite iterates are kept.
        lr: the learning rate η.
        clip_norm: the clipping threshold τ, or ``None`` for plain gradient descent.
        diverged: True when a non-finite loss, gradient or parameter stopped the run early.
    """

    points: np.ndarray
    lr: float
    clip_norm: float | None
    diverged: bool

    @property
    def w(self) -> np.ndarray:
        """The recurrent weight at each iterate, (n,)."""
        return self.points[:, 0]

    @property
    def b(self) -> np.ndarray:
        """The bias at each iterate, (n,)."""
        return self.points[:, 1]

    @property
    def loss(self) -> np.ndarray:
        """The loss at each iterate, (n,)."""
        return self.points[:, 2]

    @property
    def grad_norm(self) -> np.ndarray:
        """‖∇L‖ at each iterate, before clipping, (n,)."""
        return self.points[:, 3]

    @property
    def step_lengths(self) -> np.ndarray:
        """‖θ_{k+1} - θ_k‖ in the (w, b) plane, shape (n - 1,); at most η·τ when clipped."""
        return np.hypot(np.diff(self.w), np.diff(self.b))


def default_grid(resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """The (w, b) grid on which the cliff is drawn: ``W_RANGE`` × ``B_RANGE``, ``resolution`` points each."""
    positive_int(resolution, "resolution", minimum=2)
    return np.linspace(*W_RANGE, resolution), np.linspace(*B_RANGE, resolution)


def cliff_wall(w_values: ArrayLike, x0: float = X0) -> np.ndarray:
    """The bias b at which the wall stands for each w: where ``x0`` is the unstable fixed point of the map.

    There ``x0 = w·σ(x0) + b``, i.e. ``b = x0 - w·σ(x0)``, and the fixed point repels when
    ``w·σ'(x0) > 1`` (w > 4.25 for x0 = 0.5). Starting just above it the state climbs to the upper stable
    fixed point, just below it falls to the lower one; on it the gradient grows like ``(w·σ'(x0))^T``.

    Returns:
        b for each w, NaN where ``w·σ'(x0) <= 1`` (no wall there).
    """
    w = _finite_vector(w_values, "w_values").numpy()
    s = 1.0 / (1.0 + math.exp(-_finite_float(x0, "x0")))
    return np.where(w * s * (1.0 - s) > 1.0, x0 - w * s, np.nan)


def cliff_loss_surface(w_values: ArrayLike, b_values: ArrayLike, steps: int = STEPS, x0: float = X0,
                       target: float = TARGET) -> tuple[np.ndarray, np.ndarray]:
    """The loss and its gradient norm at every point of a (w, b) grid, all in one forward/backward pass.

    Points of the grid do not interact, so one ``backward()`` of the summed loss leaves each point's own
    gradient ``(∂L/∂w, ∂L/∂b)`` in ``w.grad`` and ``b.grad``.

    Args:
        w_values: the recurrent weights, a 1-D array of length n_w (the x axis).
        b_values: the biases, a 1-D array of length n_b (the y axis).
        steps: T, the number of recurrent steps.
        x0: the initial state.
        target: the target for σ(x_T).

    Returns:
        ``(loss, grad_norm)``, two arrays of shape (n_b, n_w): entry ``[i, j]`` is at
        ``(w_values[j], b_values[i])``, the layout ``pcolormesh(w_values, b_values, loss)`` expects.
    """
    w = _finite_vector(w_values, "w_values")
    b = _finite_vector(b_values, "b_values")
    W, B = torch.meshgrid(w, b, indexing="xy")  # (n_b, n_w)
    model = _cliff_model(W, B)
    loss = _cliff_loss(model, steps, x0, target)
    loss.sum().backward()
    return loss.detach().numpy(), torch.hypot(model.w.grad, model.b.grad).numpy()


def gradient_descent_trajectory(w0: float, b0: float, lr: float, steps: int, clip_norm: float | None = None,
                                *, time_steps: int = STEPS, x0: float = X0, target: float = TARGET) -> Trajectory:
    """Run gradient descent on the cliff loss from ``(w0, b0)``, optionally clipping the gradient's norm.

    With ``clip_norm = τ`` each step follows Pascanu et al.'s Algorithm 1: if ‖g‖ > τ then g ← τ·g/‖g‖
    (through :func:`labkit.fixes.clip_grad_norm_`), so every step keeps g's direction and has length ≤ η·τ.
    A run that meets a non-finite loss, gradient or parameter stops there with ``diverged=True``; it never
    raises.

    Args:
        w0: the starting recurrent weight.
        b0: the starting bias.
        lr: the learning rate η > 0.
        steps: the number of gradient-descent updates (the trajectory has up to ``steps + 1`` points).
        clip_norm: the threshold τ > 0, or ``None`` for no clipping.
        time_steps: T, the number of recurrent steps of the model (``steps`` of :func:`cliff_loss_surface`).
        x0: the initial state.
        target: the target for σ(x_T).

    Returns:
        A :class:`Trajectory`.
    """
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps")
    if clip_norm is not None:
        clip_norm = positive_float(clip_norm, "clip_norm")
    model = _cliff_model(torch.tensor(_finite_float(w0, "w0"), dtype=torch.float64),
                         torch.tensor(_finite_float(b0, "b0"), dtype=torch.float64))
    points = []
    for k in range(steps + 1):
        model.zero_grad()
        loss = _cliff_loss(model, time_steps, x0, target)
        loss.backward()
        grad_norm = torch.hypot(model.w.grad, model.b.grad)
        if not all(torch.isfinite(v) for v in (model.w, model.b, loss, grad_norm)):
            return Trajectory(_rows(points), lr, clip_norm, diverged=True)
        points.append((model.w.item(), model.b.item(), loss.item(), grad_norm.item()))
        if k == steps:
            break
        if clip_norm is not None:
            clip_grad_norm_(model.parameters(), clip_norm)
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return Trajectory(_rows(points), lr, clip_norm, diverged=False)


def _cliff_model(w: torch.Tensor, b: torch.Tensor) -> ScalarRNN:
    """A float64 ScalarRNN holding exactly ``w`` and ``b`` (any matching shape)."""
    model = ScalarRNN(w, b).double()
    with torch.no_grad():  # the constructor rounds to the default dtype; put the exact values back
        model.w.copy_(w)
        model.b.copy_(b)
    return model


def _cliff_loss(model: ScalarRNN, steps: int, x0: float, target: float) -> torch.Tensor:
    """(σ(x_T) - target)² for every (w, b) pair the model holds."""
    positive_int(steps, "steps")
    x_T = model(_finite_float(x0, "x0"), steps)[-1]
    return (torch.sigmoid(x_T) - _finite_float(target, "target")) ** 2


def _rows(points: list[tuple[float, float, float, float]]) -> np.ndarray:
    rows = np.array(points, dtype=np.float64).reshape(-1, 4)
    rows.flags.writeable = False  # a Trajectory is a record; the explorers share cached ones
    return rows


def _finite_vector(values: ArrayLike, name: str) -> torch.Tensor:
    array = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
    if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{name} must be a non-empty 1-D array of numbers, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite")
    return torch.as_tensor(array, dtype=torch.float64)


def _finite_float(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
