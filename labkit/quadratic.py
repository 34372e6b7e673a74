"""Gradient descent on a quadratic, where every step can be predicted exactly.

The objective is ``f(θ) = ½ θᵀAθ − bᵀθ + c`` with ``A`` symmetric positive definite. Its gradient is
``∇f(θ) = Aθ − b``, its Hessian is ``A`` and its minimizer is ``θ* = A⁻¹b``. Write ``A = Q diag(λ) Qᵀ`` with
eigenvalues ``0 < λ_min = λ_1 ≤ … ≤ λ_n = λ_max`` and orthonormal eigenvectors ``q_i`` (the columns of
``Q``). One step of gradient descent, ``θ ← θ − η∇f(θ)``, maps the error ``e = θ − θ*`` to ``(I − ηA)e``, so
the error's component along ``q_i`` is multiplied by ``(1 − ηλ_i)`` every step:

    e_k = Σ_i (1 − ηλ_i)^k ⟨q_i, e_0⟩ q_i.

Every start converges if and only if ``|1 − ηλ_i| < 1`` for all ``i``, that is ``0 < η < 2/λ_max``. For
``η ≤ 1/λ_max`` every component shrinks without changing sign; for ``1/λ_max < η < 2/λ_max`` the component
along ``q_max`` flips sign every step while it shrinks; for ``η > 2/λ_max`` it grows like
``|1 − ηλ_max|^k``: gradient descent diverges.

:class:`Quadratic` holds an objective and these closed-form predictions; :func:`gradient_descent` runs
gradient descent with autograd on any differentiable function (a quadratic or a model's loss), and
:func:`growth_rate` measures the per-step factor of a geometric sequence, so predictions and runs can be
compared. Everything is float64.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from labkit._checks import positive_float, positive_int

REGIMES = ("monotone", "oscillating", "marginal", "diverging")
SYMMETRY_RTOL = 1e-10  # A may differ from Aᵀ by this much (relative to its largest entry), e.g. after A = QΛQᵀ
BOUNDARY_RTOL = 1e-9  # ηλ_max this close to 1 or 2 counts as on the boundary between regimes


@dataclass(frozen=True, eq=False)
class Quadratic:
    """The objective ``f(θ) = ½ θᵀAθ − bᵀθ + c`` with ``A`` symmetric positive definite, in float64.

    Args:
        A: the Hessian, shape (n, n), symmetric positive definite.
        b: shape (n,).
        c: the constant (it moves the values of f, not its gradient or its minimizer).

    Attributes:
        eigenvalues: the eigenvalues of ``A`` in ascending order, shape (n,).
        eigenvectors: the matching orthonormal eigenvectors as columns, shape (n, n).

    Raises:
        TypeError: if ``A`` or ``b`` is not a tensor or array of numbers.
        ValueError: if the shapes do not match, an entry is not finite, or ``A`` is not symmetric
            positive definite.
    """

    A: Tensor
    b: Tensor
    c: float = 0.0
    eigenvalues: Tensor = field(init=False, repr=False)
    eigenvectors: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        A, b = _float64(self.A, "A"), _float64(self.b, "b")
        if A.dim() != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
            raise ValueError(f"A must be a square matrix of shape (n, n), got shape {tuple(A.shape)}")
        if b.shape != (A.shape[0],):
            raise ValueError(f"b must have shape ({A.shape[0]},) to match A, got {tuple(b.shape)}")
        if (A - A.T).abs().max() > SYMMETRY_RTOL * A.abs().max():
            raise ValueError("A must be symmetric: a Hessian is, and only then are its eigenvalues real and "
                             "its eigenvectors orthogonal")
        A = (A + A.T) / 2  # exactly symmetric, so eigh sees what the checks saw
        eigenvalues, eigenvectors = torch.linalg.eigh(A)
        if eigenvalues[0] <= 0:
            raise ValueError(f"A must be positive definite, but its smallest eigenvalue is "
                             f"{eigenvalues[0].item():.6g}: then f has no unique minimizer")
        c = float(self.c)
        if not math.isfinite(c):
            raise ValueError(f"c must be a finite number, got {self.c!r}")
        for name, value in (("A", A), ("b", b), ("c", c), ("eigenvalues", eigenvalues),
                            ("eigenvectors", eigenvectors)):
            object.__setattr__(self, name, value)

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_eigenvalues(cls, eigenvalues: ArrayLike, basis: ArrayLike | None = None,
                         minimizer: ArrayLike | None = None) -> Quadratic:
        """The quadratic with ``A = Q diag(λ) Qᵀ`` and minimizer θ* (so ``b = Aθ*``).

        Args:
            eigenvalues: λ, shape (n,), all > 0.
            basis: Q, an orthogonal (n, n) matrix whose columns become the eigenvectors (default: the
                identity, so the eigenvectors are the coordinate axes).
            minimizer: θ*, shape (n,) (default: the origin).
        """
        lam = _float64(eigenvalues, "eigenvalues")
        if lam.dim() != 1 or lam.numel() == 0:
            raise ValueError(f"eigenvalues must be a non-empty 1-D array, got shape {tuple(lam.shape)}")
        if not bool((lam > 0).all()):
            raise ValueError(f"eigenvalues must all be > 0 for a positive definite A, got {lam.tolist()}")
        n = lam.numel()
        Q = torch.eye(n, dtype=torch.float64) if basis is None else _float64(basis, "basis")
        if Q.shape != (n, n) or not torch.allclose(Q.T @ Q, torch.eye(n, dtype=torch.float64), atol=1e-10):
            raise ValueError(f"basis must be an orthogonal matrix of shape ({n}, {n}) (QᵀQ = I)")
        theta_star = torch.zeros(n, dtype=torch.float64) if minimizer is None else _float64(minimizer, "minimizer")
        if theta_star.shape != (n,):
            raise ValueError(f"minimizer must have shape ({n},), got {tuple(theta_star.shape)}")
        A = Q @ torch.diag(lam) @ Q.T
        return cls((A + A.T) / 2, A @ theta_star)

    @classmethod
    def least_squares(cls, X: ArrayLike, y: ArrayLike, *, bias: bool = True) -> Quadratic:
        """The mean squared error of a linear model, ``(1/N) Σ_j (x_jᵀw + β − y_j)²``, as a quadratic in θ = (w, β).

        With ``X̃ = [X, 1]`` (or ``X`` without a bias) the loss is ``(1/N)‖X̃θ − y‖²
        = ½ θᵀAθ − bᵀθ + c`` with ``A = 2X̃ᵀX̃/N``, ``b = 2X̃ᵀy/N`` and ``c = ‖y‖²/N``: exactly the loss
        ``torch.nn.functional.mse_loss(X @ w + β, y)`` that autograd differentiates.

        Args:
            X: inputs, shape (N, d).
            y: targets, shape (N,).
            bias: whether θ ends with a bias β.

        Raises:
            ValueError: if the shapes do not match or ``X̃`` has dependent columns (then A is singular).
        """
        X, y = _float64(X, "X"), _float64(y, "y")
        if X.dim() != 2 or X.shape[0] == 0 or y.shape != (X.shape[0],):
            raise ValueError(f"X must have shape (N, d) and y shape (N,), got {tuple(X.shape)} and {tuple(y.shape)}")
        if bias:
            X = torch.cat([X, torch.ones(X.shape[0], 1, dtype=torch.float64)], dim=1)  # (N, d + 1)
        N = X.shape[0]
        return cls(2 * X.T @ X / N, 2 * X.T @ y / N, float(y @ y) / N)

    # --- the objective ----------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """n, the number of parameters."""
        return self.b.numel()

    def __call__(self, theta: Tensor) -> Tensor:
        """f(θ) for θ of shape (..., n), in θ's dtype and differentiable by autograd; shape (...)."""
        A, b = self._like(theta)
        return 0.5 * ((theta @ A) * theta).sum(-1) - theta @ b + self.c

    def grad(self, theta: Tensor) -> Tensor:
        """The exact gradient ``Aθ − b`` for θ of shape (..., n); shape (..., n)."""
        A, b = self._like(theta)
        return theta @ A - b  # A is symmetric, so θA = (Aθ)ᵀ

    @property
    def minimizer(self) -> Tensor:
        """θ* = A⁻¹b, where ∇f = 0."""
        return torch.linalg.solve(self.A, self.b)

    @property
    def minimum(self) -> float:
        """f(θ*) = c − ½ bᵀθ*."""
        return self.c - 0.5 * float(self.b @ self.minimizer)

    # --- the spectrum and the learning rate ---------------------------------------------------------------

    @property
    def lambda_min(self) -> float:
        """The smallest eigenvalue of A: the curvature of the flattest direction."""
        return self.eigenvalues[0].item()

    @property
    def lambda_max(self) -> float:
        """The largest eigenvalue of A: the curvature of the steepest direction."""
        return self.eigenvalues[-1].item()

    @property
    def condition_number(self) -> float:
        """κ = λ_max / λ_min."""
        return self.lambda_max / self.lambda_min

    @property
    def critical_lr(self) -> float:
        """2/λ_max: gradient descent converges from every start if and only if η is below it."""
        return 2.0 / self.lambda_max

    @property
    def overshoot_lr(self) -> float:
        """1/λ_max: above it the component along q_max overshoots (changes sign) every step."""
        return 1.0 / self.lambda_max

    @property
    def optimal_lr(self) -> float:
        """2/(λ_min + λ_max): the η that minimizes :meth:`contraction`, to (κ − 1)/(κ + 1)."""
        return 2.0 / (self.lambda_min + self.lambda_max)

    def step_factors(self, lr: float) -> Tensor:
        """1 − ηλ_i for each eigenvalue (ascending λ): the error along q_i is multiplied by it every step."""
        return 1.0 - positive_float(lr, "lr") * self.eigenvalues

    def contraction(self, lr: float) -> float:
        """max_i |1 − ηλ_i|, the spectral radius of I − ηA: ‖θ_k − θ*‖ shrinks (< 1) or grows (> 1) by it per step.

        It is the asymptotic factor; the error's component along each eigenvector follows its own
        ``|1 − ηλ_i|`` exactly (see :meth:`predicted_iterates`).
        """
        return self.step_factors(lr).abs().max().item()

    def regime(self, lr: float) -> str:
        """What gradient descent does at this η, decided by ηλ_max alone.

        Returns:
            ``"monotone"`` (ηλ_max ≤ 1: every component of the error shrinks without changing sign),
            ``"oscillating"`` (1 < ηλ_max < 2: the component along q_max flips sign every step and
            shrinks), ``"marginal"`` (ηλ_max = 2 up to rounding: it flips sign and keeps its size, so
            the iterates end in a 2-cycle) or ``"diverging"`` (ηλ_max > 2: it grows like |1 − ηλ_max|^k).
        """
        scaled = positive_float(lr, "lr") * self.lambda_max
        if scaled <= 1.0 or math.isclose(scaled, 1.0, rel_tol=BOUNDARY_RTOL):
            return "monotone"
        if math.isclose(scaled, 2.0, rel_tol=BOUNDARY_RTOL):
            return "marginal"
        return "oscillating" if scaled < 2.0 else "diverging"

    def eigen_components(self, theta: Tensor) -> Tensor:
        """The error θ − θ* in the eigenvector basis, ``Qᵀ(θ − θ*)``, for θ of shape (..., n); shape (..., n)."""
        theta = _float64(theta, "theta")
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have shape (..., {self.dim}), got {tuple(theta.shape)}")
        return (theta - self.minimizer) @ self.eigenvectors

    def predicted_iterates(self, theta0: ArrayLike, lr: float, steps: int) -> Tensor:
        """The iterates of gradient descent in closed form, θ_k = θ* + Q diag((1 − ηλ)^k) Qᵀ(θ_0 − θ*).

        Returns:
            θ_0, …, θ_steps, shape (steps + 1, n).
        """
        factors = self.step_factors(lr)  # (n,)
        k = torch.arange(positive_int(steps, "steps", minimum=0) + 1, dtype=torch.float64)
        powers = factors ** k[:, None]  # (steps + 1, n)
        components = self.eigen_components(_float64(theta0, "theta0"))  # (n,)
        return self.minimizer + (powers * components) @ self.eigenvectors.T

    def _like(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """A and b in θ's dtype and device, after checking θ."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a torch.Tensor of shape (..., {self.dim}), got {type(theta).__name__}")
        if theta.shape[-1:] != (self.dim,):
            raise ValueError(f"theta must have shape (..., {self.dim}), got {tuple(theta.shape)}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must be a floating-point tensor, got dtype {theta.dtype}")
        return self.A.to(theta), self.b.to(theta)


@dataclass(frozen=True)
class DescentRun:
    """A run of gradient descent: every finite iterate, with its loss and gradient norm.

    Attributes:
        iterates: θ_0, θ_1, …, shape (k + 1, n), where k is ``steps`` unless the run diverged first.
        losses: f(θ_k), shape (k + 1,).
        grad_norms: ‖∇f(θ_k)‖, shape (k + 1,).
        lr: the learning rate η.
        diverged: True when a loss or gradient overflowed to inf or NaN, which ended the run early.
    """

    iterates: Tensor
    losses: Tensor
    grad_norms: Tensor
    lr: float
    diverged: bool

    @property
    def steps(self) -> int:
        """How many updates were made and recorded."""
        return len(self.iterates) - 1


def gradient_descent(loss_fn: Callable[[Tensor], Tensor], theta0: Tensor, lr: float, steps: int) -> DescentRun:
    """Plain gradient descent, θ_{k+1} = θ_k − η ∇f(θ_k), with the gradient from autograd.

    Each step evaluates f at a fresh leaf tensor, asks autograd for ∇f, and makes the update out of
    place, on a detached tensor: the recorded iterates never change afterwards and no autograd graph
    links one step to the next.

    Args:
        loss_fn: f, maps a parameter vector of shape (n,) to a scalar tensor, differentiably.
        theta0: the start θ_0, a floating-point tensor of shape (n,); it is not modified.
        lr: the learning rate η > 0.
        steps: how many updates to make (0 records the start only).

    Returns:
        The :class:`DescentRun`. A run whose loss or gradient overflows stops there, keeps its finite
        part and is marked ``diverged``; it does not raise.

    Raises:
        TypeError: if ``theta0`` is not a floating-point tensor.
        ValueError: if ``theta0`` is not 1-D and finite, ``loss_fn`` does not return a scalar that depends
            on θ, or the loss is not finite at θ_0.
    """
    lr = positive_float(lr, "lr")
    positive_int(steps, "steps", minimum=0)
    theta = _start(theta0)
    iterates, losses, grad_norms = [], [], []
    for _ in range(steps + 1):
        theta.requires_grad_(True)
        loss = _scalar_loss(loss_fn, theta)
        (grad,) = torch.autograd.grad(loss, theta)
        theta = theta.detach()
        if not (torch.isfinite(loss) and torch.isfinite(grad).all()):
            break  # overflowed: keep the finite part of the run
        iterates.append(theta)
        losses.append(loss.detach())
        grad_norms.append(torch.linalg.vector_norm(grad))
        theta = theta - lr * grad  # a new tensor: the iterate just recorded stays as it was
    if not iterates:
        raise ValueError("the loss or its gradient is not finite at theta0")
    return DescentRun(torch.stack(iterates), torch.stack(losses), torch.stack(grad_norms), lr,
                      diverged=len(iterates) < steps + 1)


def growth_rate(values: ArrayLike, *, tail: float = 0.5) -> float:
    """The per-step factor r of a sequence that behaves like C·r^k, measured from its last part.

    It is ``exp`` of the least-squares slope of ``log values[k]`` against k over the last ``tail``
    fraction of the sequence (at least two values), where the slowest-decaying or fastest-growing
    component has taken over. r > 1 means geometric growth, r < 1 geometric decay.

    Args:
        values: positive, finite numbers such as ‖θ_k − θ*‖ or ‖∇f(θ_k)‖, shape (K,) with K ≥ 2.
        tail: the fraction of the sequence to fit, in (0, 1].

    Raises:
        ValueError: if there are fewer than two values, or a fitted value is not positive and finite.
    """
    y = np.asarray(torch.as_tensor(values, dtype=torch.float64).cpu(), dtype=np.float64)
    if y.ndim != 1 or len(y) < 2:
        raise ValueError(f"values must be a 1-D sequence of at least 2 numbers, got shape {y.shape}")
    if not 0 < tail <= 1:
        raise ValueError(f"tail must be in (0, 1], got {tail!r}")
    start = len(y) - max(2, math.ceil(tail * len(y)))
    window = y[start:]
    if not np.all(np.isfinite(window) & (window > 0)):
        raise ValueError("the fitted values must be positive and finite (a diverged run's inf, or an exact 0, "
                         "has no logarithm): fit a shorter or earlier part of the run")
    slope = np.polyfit(np.arange(start, len(y)), np.log(window), 1)[0]
    return float(np.exp(slope))


def rotation_2d(angle: float) -> Tensor:
    """The 2×2 rotation by ``angle`` radians, a basis for :meth:`Quadratic.from_eigenvalues` in the plane."""
    cos, sin = math.cos(angle), math.sin(angle)
    return torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)


def _float64(value: ArrayLike, name: str) -> Tensor:
    """``value`` as a float64 CPU tensor of finite numbers (a copy, detached), or a clear error."""
    if isinstance(value, Tensor):
        tensor = value.detach().to("cpu", torch.float64).clone()
    else:
        try:
            tensor = torch.as_tensor(np.asarray(value, dtype=np.float64))
        except (TypeError, ValueError) as error:
            raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from error
    if not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must hold finite numbers only")
    return tensor


def _start(theta0: Tensor) -> Tensor:
    if not isinstance(theta0, Tensor) or not theta0.is_floating_point():
        raise TypeError(f"theta0 must be a floating-point torch.Tensor of shape (n,), got "
                        f"{type(theta0).__name__}{'' if not isinstance(theta0, Tensor) else ' ' + str(theta0.dtype)}")
    if theta0.dim() != 1 or theta0.numel() == 0:
        raise ValueError(f"theta0 must have shape (n,), got {tuple(theta0.shape)}")
    if not bool(torch.isfinite(theta0).all()):
        raise ValueError("theta0 must hold finite numbers only")
    return theta0.detach().clone()


def _scalar_loss(loss_fn: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    loss = loss_fn(theta)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError(f"loss_fn must return a scalar tensor, got "
                         f"{type(loss).__name__ if not isinstance(loss, Tensor) else tuple(loss.shape)}")
    if not loss.requires_grad:
        raise ValueError("loss_fn(theta) does not depend on theta through autograd (was theta detached?)")
    return loss
