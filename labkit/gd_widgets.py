"""Figures and an explorer for gradient descent on a 2-D quadratic (chapter 1).

- :func:`plot_descent_on_contours`: a run's iterates on the contours of f, with the eigenvector axes.
- :func:`plot_eigen_components`: the error along each eigenvector, step by step, against (1 − ηλ_i)^k.
- :func:`plot_contraction_sweep`: the per-step factor max_i |1 − ηλ_i| against η, predicted and measured.
- :class:`LearningRateExplorer`: sliders for η and the condition number κ → the run on the contours and
  its distance to the minimizer, measured and predicted.

Like :mod:`labkit.widgets`, the explorer is an ``ipywidgets.VBox`` whose ``figure()`` is the current plot
and whose ``static_figure(...)`` draws the same plot without widgets, for the book.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

from labkit import plots
from labkit._checks import positive_float, positive_int
from labkit.quadratic import DescentRun, Quadratic, gradient_descent, rotation_2d
from labkit.widgets import show_figure

DEMO_LAMBDA_MAX = 10.0  # so the critical learning rate 2/λ_max is 0.2
DEMO_CONDITION = 10.0  # κ = λ_max/λ_min
DEMO_ANGLE = math.radians(30.0)  # the eigenvectors, turned off the coordinate axes
DEMO_MINIMIZER = (1.0, 0.5)
DEMO_START = (-2.0, 2.5)
DEMO_STEPS = 30
DEMO_LR = 0.17  # between 1/λ_max and 2/λ_max: the iterates zigzag but converge
LR_RANGE = (0.005, 0.25)
CONDITION_RANGE = (1.0, 50.0)
VIEW_MARGIN = 1.3  # the contour view spans this many times the start's distance from θ* on each side
GRID_POINTS = 161
REGIME_TEXT = {
    "monotone": "monotone: every error component shrinks without changing sign",
    "oscillating": "oscillating: the steep component flips sign each step, but shrinks",
    "marginal": "marginal: the steep component flips sign and keeps its size (a 2-cycle)",
    "diverging": "diverging: the steep component grows by |1 − ηλ_max| each step",
}


def demo_quadratic(condition: float = DEMO_CONDITION) -> Quadratic:
    """The chapter's 2-D quadratic: λ_max = 10, λ_min = 10/κ, eigenvectors turned by 30°, θ* = (1, 0.5)."""
    condition = positive_float(condition, "condition")
    if condition < 1:
        raise ValueError(f"condition must be >= 1 (it is λ_max/λ_min), got {condition}")
    return Quadratic.from_eigenvalues([DEMO_LAMBDA_MAX / condition, DEMO_LAMBDA_MAX],
                                      basis=rotation_2d(DEMO_ANGLE), minimizer=DEMO_MINIMIZER)


def demo_run(quadratic: Quadratic, lr: float, steps: int = DEMO_STEPS,
             start: Sequence[float] = DEMO_START) -> DescentRun:
    """Gradient descent (autograd) on ``quadratic`` from ``start``, as the figures and the explorer use it."""
    return gradient_descent(quadratic, torch.tensor(start, dtype=torch.float64), lr, steps)


def plot_descent_on_contours(quadratic: Quadratic, run: DescentRun, *, ax: Axes | None = None,
                             title: str | None = None) -> Figure:
    """The iterates of a 2-D run on the contours of f, with the eigenvector directions through θ*.

    The view is a square around θ* fixed by the start, so runs at different η share it; a diverging run
    leaves the frame, and its legend entry says after which step.

    Args:
        quadratic: a 2-D :class:`~labkit.quadratic.Quadratic`.
        run: a :class:`~labkit.quadratic.DescentRun` on it.
        ax: draw into this axes instead of a new figure.
        title: the axes title (default: η and the regime).

    Returns:
        The figure. ``ax.lines`` holds the two eigenvector axes, the run, the start and the minimizer.
    """
    if quadratic.dim != 2:
        raise ValueError(f"contours need a 2-D quadratic, got one with {quadratic.dim} parameters")
    theta_star = quadratic.minimizer.numpy()
    path = run.iterates.detach().cpu().numpy()  # (k + 1, 2)
    half_width = VIEW_MARGIN * float(np.abs(path[0] - theta_star).max())
    lo, hi = theta_star - half_width, theta_star + half_width
    u, v = np.linspace(lo[0], hi[0], GRID_POINTS), np.linspace(lo[1], hi[1], GRID_POINTS)
    grid = torch.from_numpy(np.stack(np.meshgrid(u, v), axis=-1))  # (G, G, 2)
    excess = (quadratic(grid) - quadratic.minimum).numpy()  # f − f*, (G, G)
    start_excess = float(quadratic(run.iterates[0]) - quadratic.minimum)
    levels = start_excess * np.geomspace(1e-3, 1.5, 9)
    outside = np.flatnonzero(np.any((path < lo) | (path > hi), axis=1))
    left = f", leaves the frame after step {outside[0] - 1}" if outside.size else ""
    with plots.course_style():
        fig, ax = _axes(ax, (5.0, 4.6))
        ax.contour(u, v, excess, levels=levels, cmap=plots.SURFACE_CMAP, linewidths=0.8)
        for i, name in ((1, "max"), (0, "min")):
            direction = quadratic.eigenvectors[:, i].numpy()
            ends = theta_star + np.outer([-2.0, 2.0], direction) * half_width
            ax.plot(ends[:, 0], ends[:, 1], color="0.55", linewidth=0.9, linestyle="--" if i else ":",
                    label=rf"$q_{{\max}}$, $\lambda_{{\max}}$ = {quadratic.lambda_max:.3g}" if i else
                    rf"$q_{{\min}}$, $\lambda_{{\min}}$ = {quadratic.lambda_min:.3g}")
        ax.plot(path[:, 0], path[:, 1], color=plots.PALETTE[1], marker="o", markersize=3.0, linewidth=1.0,
                label=f"gradient descent, {run.steps} steps{left}")
        ax.plot(*path[0], linestyle="none", marker="s", markersize=7, color=plots.PALETTE[1],
                label=r"start $\theta_0$")
        ax.plot(*theta_star, linestyle="none", marker="*", markersize=12, color=plots.REFERENCE_COLOR,
                label=r"minimizer $\theta^*$")
        ax.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel=r"$\theta_1$", ylabel=r"$\theta_2$", aspect="equal",
               title=title or f"η = {run.lr:.3g} = {run.lr * quadratic.lambda_max:.2f}/λ_max: "
                               f"{quadratic.regime(run.lr)}")
        ax.grid(False)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    return fig


def plot_eigen_components(quadratic: Quadratic, run: DescentRun, *, ax: Axes | None = None,
                          title: str | None = None) -> Figure:
    """The error ⟨q_i, θ_k − θ*⟩ along each eigenvector at every step (markers) and (1 − ηλ_i)^k ⟨q_i, e_0⟩ (lines).

    Args:
        quadratic: the :class:`~labkit.quadratic.Quadratic` the run descended.
        run: the :class:`~labkit.quadratic.DescentRun`.
        ax: draw into this axes instead of a new figure.
        title: the axes title.

    Returns:
        The figure; ``ax.lines`` holds, for each eigenvector from λ_max down, the measured components then
        the prediction, then the zero line.
    """
    measured = quadratic.eigen_components(run.iterates).numpy()  # (k + 1, n)
    predicted = quadratic.eigen_components(quadratic.predicted_iterates(run.iterates[0], run.lr, run.steps)).numpy()
    k = np.arange(run.steps + 1)
    factors = quadratic.step_factors(run.lr).numpy()
    with plots.course_style():
        fig, ax = _axes(ax, (5.0, 3.6))
        for style, i in enumerate(reversed(range(quadratic.dim))):
            color = plots.PALETTE[style % len(plots.PALETTE)]
            name = "max" if i == quadratic.dim - 1 else ("min" if i == 0 else str(i + 1))
            ax.plot(k, measured[:, i], linestyle="none", marker=plots.MARKERS[style % len(plots.MARKERS)],
                    markersize=3.5, color=color, label=rf"along $q_{{\mathrm{{{name}}}}}$: measured")
            ax.plot(k, predicted[:, i], color=color, linewidth=1.0, linestyle=plots.LINESTYLES[style % 4],
                    label=rf"$({factors[i]:.3g})^k \times$ start")
        ax.axhline(0.0, color=plots.REFERENCE_COLOR, linewidth=0.6)
        ax.set(xlabel="step k", ylabel=r"error component $\langle q_i, \theta_k - \theta^*\rangle$",
               title=title or f"η = {run.lr:.3g}: each component is multiplied by $1 - \\eta\\lambda_i$ per step")
        ax.legend()
    return fig


def plot_contraction_sweep(quadratic: Quadratic, lrs: ArrayLike, measured: ArrayLike, *,
                           ax: Axes | None = None) -> Figure:
    """The per-step factor of ‖θ_k − θ*‖ against η: max_i |1 − ηλ_i| (line) and measured rates (markers).

    Vertical lines mark 1/λ_max (overshooting starts), 2/(λ_min + λ_max) (the fastest rate) and 2/λ_max
    (divergence starts); above the horizontal line at 1 the error grows.

    Args:
        quadratic: the :class:`~labkit.quadratic.Quadratic`.
        lrs: the learning rates that were run, shape (m,).
        measured: each run's measured factor (e.g. :func:`labkit.quadratic.growth_rate`), shape (m,).
        ax: draw into this axes instead of a new figure.
    """
    x = plots.as_array(lrs, "lrs", ndim=1)
    y = plots.as_array(measured, "measured", ndim=1)
    if len(x) != len(y):
        raise ValueError(f"lrs has {len(x)} entries but measured has {len(y)}")
    fine = np.linspace(0.0, max(x.max(), quadratic.critical_lr) * 1.02, 400)
    curve = np.abs(1.0 - np.outer(fine, quadratic.eigenvalues.numpy())).max(axis=1)
    with plots.course_style():
        fig, ax = _axes(ax, (6.4, 4.0))
        ax.plot(fine, curve, color=plots.PALETTE[0], label=r"predicted $\max_i |1 - \eta\lambda_i|$")
        ax.plot(x, y, linestyle="none", marker="o", markersize=4, color=plots.PALETTE[1],
                label="measured from the run")
        for lr, name, style in ((quadratic.overshoot_lr, r"$1/\lambda_{\max}$", ":"),
                                (quadratic.optimal_lr, r"$2/(\lambda_{\min} + \lambda_{\max})$", "-."),
                                (quadratic.critical_lr, r"$2/\lambda_{\max}$", "--")):
            ax.axvline(lr, color=plots.REFERENCE_COLOR, linewidth=0.9, linestyle=style, label=f"{name} = {lr:.3g}")
        ax.axhline(1.0, color="0.5", linewidth=0.8)
        ax.set(xlabel=r"learning rate $\eta$", ylabel=r"factor per step of $\|\theta_k - \theta^*\|$",
               title="How fast gradient descent converges, or diverges, at each learning rate")
        ax.legend()
    return fig


def learning_rate_figure(quadratic: Quadratic, run: DescentRun) -> Figure:
    """The explorer's plot: the run on the contours, and ‖θ_k − θ*‖ measured against the closed form."""
    fig, axes = plots.course_subplots(1, 2, figsize=(11.0, 4.6))
    plot_descent_on_contours(quadratic, run, ax=axes[0, 0], title="Iterates on the contours of f")
    predicted = quadratic.predicted_iterates(run.iterates[0], run.lr, run.steps)
    theta_star = quadratic.minimizer
    distance = torch.linalg.vector_norm(run.iterates - theta_star, dim=1).numpy()
    rate = quadratic.contraction(run.lr)
    k = np.arange(run.steps + 1)
    ax = axes[0, 1]
    with plots.course_style():
        ax.plot(k, torch.linalg.vector_norm(predicted - theta_star, dim=1).numpy(), color=plots.PALETTE[0],
                label=r"predicted: $\sum_i (1 - \eta\lambda_i)^k \langle q_i, e_0\rangle q_i$")
        ax.plot(k, distance, linestyle="none", marker="o", markersize=3.5, color=plots.PALETTE[1],
                label="measured (autograd)")
        ax.plot(k, distance[0] * rate ** k, color=plots.REFERENCE_COLOR, linestyle="--", linewidth=0.9,
                label=rf"$\|e_0\| \cdot {rate:.3g}^k$: the largest factor, which wins")
        ax.set(yscale="log", xlabel="step k", ylabel=r"distance to the minimizer $\|\theta_k - \theta^*\|$",
               title=f"max |1 − ηλ_i| = {rate:.3g} per step")
        ax.legend()
    fig.suptitle(f"η = {run.lr:.3g}, η·λ_max = {run.lr * quadratic.lambda_max:.2f} (critical: 2), "
                 f"κ = {quadratic.condition_number:.3g} — {REGIME_TEXT[quadratic.regime(run.lr)]}")
    return fig


class LearningRateExplorer(widgets.VBox):
    """Slide the learning rate η and the condition number κ; watch gradient descent on a 2-D quadratic.

    λ_max stays 10, so the critical learning rate stays 2/λ_max = 0.2 while κ changes λ_min = 10/κ: the
    limit on η is set by the steepest direction, and κ sets how slowly the flattest one then converges.

    Args:
        lr: the starting η.
        condition: the starting κ = λ_max/λ_min.
        steps: gradient-descent steps per run.

    Attributes:
        lr_slider, condition_slider: the controls.
        quadratic: the current :class:`~labkit.quadratic.Quadratic`.
        run: the current :class:`~labkit.quadratic.DescentRun`.
        output: where the plot is drawn.
    """

    def __init__(self, lr: float = DEMO_LR, condition: float = DEMO_CONDITION, *, steps: int = DEMO_STEPS) -> None:
        self.steps = positive_int(steps, "steps")
        self.lr_slider = widgets.FloatSlider(value=lr, min=LR_RANGE[0], max=LR_RANGE[1], step=0.005,
                                             readout_format=".3f", description="η", continuous_update=False)
        self.condition_slider = widgets.FloatSlider(value=condition, min=CONDITION_RANGE[0], max=CONDITION_RANGE[1],
                                                    step=1.0, description="κ", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([widgets.HBox([self.lr_slider, self.condition_slider]), self.output])
        self.lr_slider.observe(self._update, names="value")
        self.condition_slider.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        self.quadratic = demo_quadratic(self.condition_slider.value)
        self.run = demo_run(self.quadratic, self.lr_slider.value, self.steps)
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return learning_rate_figure(self.quadratic, self.run)

    @staticmethod
    def static_figure(lr: float = DEMO_LR, condition: float = DEMO_CONDITION, *, steps: int = DEMO_STEPS) -> Figure:
        """The explorer's plot at these settings, computed without creating widgets."""
        quadratic = demo_quadratic(condition)
        return learning_rate_figure(quadratic, demo_run(quadratic, lr, positive_int(steps, "steps")))


def _axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, axes = plots.course_subplots(figsize=figsize)
    return fig, axes[0, 0]

