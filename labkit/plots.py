"""The course's figures: gradient-norm traces, per-timestep gradient maps, the loss cliff, spectral radius
and side-by-side runs.

Every function returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``: in a notebook the
returned figure is displayed once, in a script save it with ``fig.savefig``. Functions with an ``ax``
argument draw into an axes you pass instead of making a new figure.

Inputs are numbers as numpy arrays, torch tensors (any device or dtype) or lists; a *history* is a mapping
(``history["loss"]``) or an object with attributes (``history.loss``). Values that a log axis cannot show
(zero, negative, NaN, inf) are left out of the line rather than passed to matplotlib, and non-finite ones
(a diverged step) are marked with an ✕ along the top of the axes.

The style is one colour-blind-safe palette (Okabe & Ito 2008) for lines and ``viridis`` for surfaces,
applied inside each function by :func:`course_style` and never globally.
"""
from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from numpy.typing import ArrayLike  # numpy arrays, lists of numbers, and torch tensors (they have __array__)

# Okabe–Ito, ordered so that the first colours are the most distinct; yellow (weak on white) last.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
LINESTYLES = ("-", "--", ":", "-.")  # a second cue besides colour, for grayscale prints
MARKERS = ("o", "s", "^", "D", "v", "P")
SURFACE_CMAP = "viridis"  # perceptually uniform, colour-blind safe, monotone in lightness
REFERENCE_COLOR = "#000000"
STYLE = {
    "axes.prop_cycle": cycler(color=PALETTE),
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": "medium",
    "font.size": 10,
    "legend.fontsize": "small",
    "legend.frameon": False,
    "lines.linewidth": 1.6,
    "image.cmap": SURFACE_CMAP,
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
}
METRIC_LABELS = {
    "loss": "training loss",
    "grad_norm": r"global gradient norm $\|g\|$",
}
NONFINITE_MARKER = "X"
NONFINITE_HEIGHT = 0.97  # where the ✕ of a non-finite value sits, in axes coordinates (0 bottom, 1 top)


def course_style() -> contextlib.AbstractContextManager:
    """The course's matplotlib settings as a context: ``with course_style(): ...``."""
    return mpl.rc_context(STYLE)


def course_subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, np.ndarray]:
    """A new figure in the course style and its 2-D array of axes, owned by the caller (not left open in pyplot).

    Args:
        nrows: rows of panels.
        ncols: columns of panels.
        **kwargs: passed to ``plt.subplots`` (e.g. ``figsize``).

    Returns:
        ``(fig, axes)`` with ``axes`` of shape (nrows, ncols).
    """
    with course_style():
        fig, axes = plt.subplots(nrows, ncols, squeeze=False, **kwargs)
    plt.close(fig)  # pyplot only built it: shown once when returned in a notebook, never piling up
    return fig, axes


def plot_grad_norms(traces: Mapping[str, ArrayLike], steps: ArrayLike | None = None, *,
                    threshold: float | None = None, threshold_label: str | None = None, ax: Axes | None = None,
                    xlabel: str = "training step", title: str = "Gradient norm during training",
                    ylabel: str = METRIC_LABELS["grad_norm"]) -> Figure:
    """Gradient-norm traces on a log scale, one line per run.

    Args:
        traces: label → 1-D array of norms, one per training step; all the same length when ``steps`` is given.
        steps: the training step of each entry (default 0, 1, 2, ...).
        threshold: draw the clipping threshold τ as a dashed line.
        threshold_label: the legend entry of that line (default "clip threshold τ = ...").
        ax: draw into this axes instead of a new figure.
        xlabel: the x-axis label.
        title: the axes title.
        ylabel: the y-axis label.

    Returns:
        The figure. ``ax.lines`` holds the traces in order (then ✕ markers for non-finite steps, then the
        threshold line).
    """
    series = _series_dict(traces, "traces")
    xs = [_steps_or_range(steps, len(y), "steps", f"values in traces[{label!r}]") for label, y in series.items()]
    with course_style():
        fig, ax = _figure_and_axes(ax)
        for i, ((label, y), x) in enumerate(zip(series.items(), xs)):
            _draw_series(ax, x, y, label=label, style=i, log=True)
        if threshold is not None:
            threshold = _positive(threshold, "threshold")
            ax.axhline(threshold, color=REFERENCE_COLOR, linestyle="--", linewidth=1.0,
                       label=threshold_label or rf"clip threshold $\tau$ = {threshold:g}")
        ax.set(yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
        _finish_log_axis(ax)
        ax.legend()
    return fig


def plot_timestep_heatmap(profiles: ArrayLike, steps: ArrayLike | None = None, *, ax: Axes | None = None,
                          title: str = r"Gradient reaching each time step, $\|\partial L/\partial h_t\|$") -> Figure:
    """‖∂L/∂h_t‖ for every time step t (x) at every recorded training step (y), on a log colour scale.

    Args:
        profiles: 2-D array (n_steps, T); row k is the profile at training step ``steps[k]``.
        steps: the training step of each row (default 0, 1, 2, ...).
        ax: draw into this axes instead of a new figure.
        title: the axes title.

    Returns:
        The figure: ``ax.collections[0]`` is the mesh (its array is ``profiles`` with zero and non-finite
        cells masked; they show as the grey background) and a colour bar is attached.
    """
    grid = as_array(profiles, "profiles", ndim=2)
    y = _steps_or_range(steps, grid.shape[0], "steps", "rows of profiles")
    t = np.arange(1, grid.shape[1] + 1)
    shown = np.ma.masked_where(~_log_showable(grid), grid)
    if shown.count() == 0:
        raise ValueError("profiles has no positive finite value to show on a log colour scale")
    with course_style():
        fig, ax = _figure_and_axes(ax)
        ax.set_facecolor("0.85")
        mesh = ax.pcolormesh(t, y, shown, shading="nearest", norm=LogNorm(shown.min(), shown.max()),
                             cmap=SURFACE_CMAP)
        fig.colorbar(mesh, ax=ax, label=r"$\|\partial L/\partial h_t\|$")
        ax.set(xlabel="time step t", ylabel="training step", title=title)
        ax.grid(False)
    return fig


def plot_timestep_profile(profiles: Mapping[str, ArrayLike], *, references: Mapping[str, ArrayLike] | None = None,
                          ax: Axes | None = None,
                          title: str = "How the gradient reaches back in time",
                          ylabel: str = r"$\|\partial L/\partial h_t\|$") -> Figure:
    """Per-timestep gradient norms ‖∂L/∂h_t‖ against t = 1..T on a log scale, one curve per profile.

    Args:
        profiles: label → 1-D array of length T.
        references: label → 1-D array of length T drawn as thin black lines (bounds such as ρ^(T-t)).
        ax: draw into this axes instead of a new figure.
        title: the axes title.
        ylabel: the y-axis label.

    Returns:
        The figure; ``ax.lines`` holds the profiles, then their ✕ markers, then the references.
    """
    series = _series_dict(profiles, "profiles")
    refs = _series_dict(references, "references") if references else {}
    lengths = {len(y) for y in (*series.values(), *refs.values())}
    if len(lengths) != 1:
        raise ValueError(f"profiles and references must all have the same length T, got lengths {sorted(lengths)}")
    t = np.arange(1, lengths.pop() + 1)
    with course_style():
        fig, ax = _figure_and_axes(ax)
        for i, (label, y) in enumerate(series.items()):
            _draw_series(ax, t, y, label=label, style=i, log=True)
        for i, (label, y) in enumerate(refs.items()):
            ax.plot(t, _log_masked(y), color=REFERENCE_COLOR, linewidth=1.0,
                    linestyle=LINESTYLES[(i + 1) % len(LINESTYLES)], label=label)
        ax.set(yscale="log", xlabel="time step t", ylabel=ylabel, title=title)
        _finish_log_axis(ax)
        ax.legend()
    return fig


def plot_loss_cliff(w: ArrayLike, b: ArrayLike, loss: ArrayLike, grad_norm: ArrayLike | None = None,
                    trajectories: Mapping[str, Any] | None = None, *, axes: Sequence[Axes] | None = None,
                    title: str = r"The loss cliff of $x_t = w\,\sigma(x_{t-1}) + b$") -> Figure:
    """The cliff loss over the (w, b) plane, its gradient norm, and gradient-descent trajectories on top.

    Args:
        w: the grid's recurrent weights, 1-D of length n_w (x axis).
        b: the grid's biases, 1-D of length n_b (y axis).
        loss: 2-D (n_b, n_w), ``loss[i, j]`` at ``(w[j], b[i])`` as :func:`labkit.cliff.cliff_loss_surface` returns.
        grad_norm: 2-D (n_b, n_w) gradient norms; adds a second panel on a log colour scale.
        trajectories: label → a :class:`labkit.cliff.Trajectory` (anything with ``.w`` and ``.b``) or an
            array of shape (n, ≥2) whose first two columns are w and b. Each gets its own colour, marker and
            line style; a trajectory that diverged ends in a black ✕.
        axes: draw into these axes (one, or two with ``grad_norm``) instead of a new figure.
        title: the figure's title (only on a new figure).

    Returns:
        The figure. In each panel ``ax.collections[0]`` is the surface and ``ax.lines`` the trajectories in
        order (plus the ✕ of diverged ones). The view stays on the grid, so a step thrown off it leaves the frame.
    """
    w_values, b_values = as_array(w, "w", ndim=1), as_array(b, "b", ndim=1)
    expected = (len(b_values), len(w_values))
    surfaces = [("loss L(w, b)", _surface(loss, "loss", expected), None)]
    if grad_norm is not None:
        grads = _surface(grad_norm, "grad_norm", expected)
        surfaces.append((r"gradient norm $\|\nabla L\|$", grads, _log_norm(grads, "grad_norm")))
    paths = {label: _trajectory_wb(path, label) for label, path in (trajectories or {}).items()}
    with course_style():
        fig, axes, new = _panels(axes, len(surfaces), "panel", 5.2, 4.4)
        for ax, (name, surface, norm) in zip(axes, surfaces):
            shown = np.ma.masked_invalid(surface)
            mesh = ax.pcolormesh(w_values, b_values, shown, shading="nearest", cmap=SURFACE_CMAP, norm=norm)
            fig.colorbar(mesh, ax=ax, label=name)
            for i, (label, (pw, pb, diverged)) in enumerate(paths.items()):
                _draw_trajectory(ax, pw, pb, label=label, style=i, diverged=diverged)
            ax.set(xlim=(w_values.min(), w_values.max()), ylim=(b_values.min(), b_values.max()),
                   xlabel="recurrent weight w", ylabel="bias b", title=name)
            ax.grid(False)
            if paths:
                ax.legend(loc="lower left")
        if new:
            fig.suptitle(title)
    return fig


def plot_spectral_radius(steps: ArrayLike, values: ArrayLike | Mapping[str, ArrayLike], *,
                         ax: Axes | None = None, title: str = "Spectral radius of the recurrent weights",
                         ylabel: str = r"spectral radius $\rho(W_{hh})$") -> Figure:
    """Spectral radius (or any such matrix statistic) over training, with the ρ = 1 reference line.

    Args:
        steps: the training step of each value, 1-D.
        values: 1-D array of the same length, or label → such arrays (e.g. ρ and the largest singular value λ₁).
        ax: draw into this axes instead of a new figure.
        title: the axes title.
        ylabel: the y-axis label.

    Returns:
        The figure; ``ax.lines`` holds the series in order, then the reference line y = 1.
    """
    series = _series_dict(values if isinstance(values, Mapping) else {r"$\rho(W_{hh})$": values}, "values")
    x = as_array(steps, "steps", ndim=1)
    for label, y in series.items():
        if len(y) != len(x):
            raise ValueError(f"values[{label!r}] has {len(y)} entries but steps has {len(x)}")
    with course_style():
        fig, ax = _figure_and_axes(ax)
        for i, (label, y) in enumerate(series.items()):
            _draw_series(ax, x, y, label=label, style=i, log=False)
        ax.axhline(1.0, color=REFERENCE_COLOR, linestyle="--", linewidth=1.0,
                   label=r"$\rho = 1$: below it the linear RNN's gradients vanish")
        ax.set(xlabel="training step", ylabel=ylabel, title=title)
        ax.legend()
    return fig


def plot_comparison(histories: Mapping[str, Any], metrics: Sequence[str] = ("loss", "grad_norm"), *,
                    baseline: float | None = None, log_metrics: Collection[str] = ("grad_norm",),
                    axes: Sequence[Axes] | None = None, title: str | None = None) -> Figure:
    """Runs side by side: one panel per metric, one line per run.

    Args:
        histories: label → a history: a mapping or an object (such as :class:`labkit.train.TrainingHistory`)
            whose ``metric`` entry/attribute is a 1-D array of per-step values; an optional ``step``
            entry/attribute gives the x values.
        metrics: which entries to plot, one panel each.
        baseline: draw this loss (e.g. the task's memoryless baseline) as a dashed line in the ``"loss"``
            panel; by default the ``baseline`` the histories carry, if they all agree on one.
        log_metrics: the metrics drawn on a log y axis.
        axes: draw into these axes (one per metric) instead of a new figure.
        title: the figure's title (only on a new figure).

    Returns:
        The figure; in each panel ``ax.lines`` holds the runs in order (then ✕ markers, then the baseline).
    """
    if not isinstance(histories, Mapping) or not histories:
        raise TypeError("histories must be a non-empty mapping label -> history")
    if isinstance(metrics, str) or not metrics:
        raise TypeError(f"metrics must be a sequence of metric names such as ('loss', 'grad_norm'), got {metrics!r}")
    if baseline is None:
        carried = {_field(h, "baseline", label, required=False) for label, h in histories.items()}
        baseline = carried.pop() if len(carried) == 1 else None
    with course_style():
        fig, axes, new = _panels(axes, len(metrics), "metric", 5.0, 3.8)
        for ax, metric in zip(axes, metrics):
            log = metric in log_metrics
            for i, (label, history) in enumerate(histories.items()):
                y = as_array(_field(history, metric, label), f"histories[{label!r}].{metric}", ndim=1)
                step = _field(history, "step", label, required=False)
                x = _steps_or_range(step, len(y), f"histories[{label!r}].step", f"{metric} values")
                _draw_series(ax, x, y, label=label, style=i, log=log)
            if baseline is not None and metric == "loss":
                ax.axhline(baseline, color=REFERENCE_COLOR, linestyle="--", linewidth=1.0,
                           label=f"memoryless baseline = {baseline:.4g}")
            name = METRIC_LABELS.get(metric, metric)
            ax.set(xlabel="training step", ylabel=name, title=name[0].upper() + name[1:],
                   yscale="log" if log else "linear")
            if log:
                _finish_log_axis(ax)
            ax.legend()
        if title and new:
            fig.suptitle(title)
    return fig


def as_array(values: ArrayLike, name: str, ndim: int) -> np.ndarray:
    """``values`` (numpy array, torch tensor or nested list of numbers) as a float64 array with ``ndim`` axes.

    Raises:
        TypeError: if the values are not numbers.
        ValueError: if the array has another number of axes or no entries.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a numpy array, torch tensor or list of numbers, "
                        f"got {type(values).__name__}") from error
    if array.ndim != ndim or array.size == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {array.shape}")
    return array


def _figure_and_axes(ax: Axes | None) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, axes = course_subplots(figsize=(6.4, 4.0))
    return fig, axes[0, 0]


def _panels(axes: Sequence[Axes] | None, n: int, what: str, width: float,
            height: float) -> tuple[Figure, list[Axes], bool]:
    """``n`` axes side by side: new ones, or the ``axes`` given (checked). The flag says whether they are new."""
    if axes is None:
        fig, grid = course_subplots(1, n, figsize=(width * n, height))
        return fig, list(grid[0]), True
    axes = list(axes)
    if len(axes) != n:
        raise ValueError(f"axes must hold {n} axes (one per {what}), got {len(axes)}")
    return axes[0].figure, axes, False


def _series_dict(series: Mapping[str, ArrayLike], name: str) -> dict[str, np.ndarray]:
    if not isinstance(series, Mapping) or not series:
        raise TypeError(f"{name} must be a non-empty mapping label -> 1-D array, got {type(series).__name__}")
    return {str(label): as_array(y, f"{name}[{label!r}]", ndim=1) for label, y in series.items()}


def _steps_or_range(steps: ArrayLike | None, n: int, name: str, what: str) -> np.ndarray:
    if steps is None:
        return np.arange(n)
    x = as_array(steps, name, ndim=1)
    if len(x) != n:
        raise ValueError(f"{name} has {len(x)} entries but there are {n} {what}")
    return x


def _field(history: Any, key: str, label: str, required: bool = True) -> Any:
    value = history.get(key) if isinstance(history, Mapping) else getattr(history, key, None)
    if value is None and required:
        raise ValueError(f"history {label!r} has no {key!r} entry or attribute")
    return value


def _positive(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def _log_showable(y: np.ndarray) -> np.ndarray:
    return np.isfinite(y) & (y > 0)


def _log_masked(y: np.ndarray) -> np.ndarray:
    """``y`` with the values a log axis cannot show replaced by NaN (a gap in the line, no warning)."""
    return np.where(_log_showable(y), y, np.nan)


def _surface(values: ArrayLike, name: str, expected: tuple[int, int]) -> np.ndarray:
    surface = as_array(values, name, ndim=2)
    if surface.shape != expected:
        raise ValueError(f"{name} must have shape (len(b), len(w)) = {expected}, got {surface.shape}")
    return surface


def _log_norm(surface: np.ndarray, name: str) -> LogNorm:
    shown = surface[_log_showable(surface)]
    if shown.size == 0:
        raise ValueError(f"{name} has no positive finite value to show on a log colour scale")
    return LogNorm(shown.min(), shown.max())


def _draw_series(ax: Axes, x: np.ndarray, y: np.ndarray, *, label: str, style: int, log: bool) -> None:
    """One run as a line in its palette colour and line style, with ✕ on top where it was not finite."""
    color = PALETTE[style % len(PALETTE)]
    ax.plot(x, _log_masked(y) if log else np.where(np.isfinite(y), y, np.nan), color=color,
            linestyle=LINESTYLES[style % len(LINESTYLES)], label=label)
    bad = ~np.isfinite(y)
    if bad.any():
        ax.plot(x[bad], np.full(bad.sum(), NONFINITE_HEIGHT), linestyle="none", marker=NONFINITE_MARKER,
                color=color, transform=ax.get_xaxis_transform(), label=f"{label}: non-finite")


def _finish_log_axis(ax: Axes) -> None:
    """Give a log axis with nothing positive to show finite limits, instead of a matplotlib warning."""
    if not any(_log_showable(np.asarray(line.get_ydata(), dtype=float)).any()
               for line in ax.lines if line.get_transform() is ax.transData):
        ax.set_ylim(0.1, 10.0)


def _trajectory_wb(path: Any, label: str) -> tuple[np.ndarray, np.ndarray, bool]:
    if hasattr(path, "w") and hasattr(path, "b"):
        w, b = as_array(path.w, f"trajectories[{label!r}].w", 1), as_array(path.b, f"trajectories[{label!r}].b", 1)
        if len(w) != len(b):
            raise ValueError(f"trajectories[{label!r}] has {len(w)} w values but {len(b)} b values")
        return w, b, bool(getattr(path, "diverged", False))
    points = as_array(path, f"trajectories[{label!r}]", ndim=2)
    if points.shape[1] < 2:
        raise ValueError(f"trajectories[{label!r}] must have shape (n, >=2) with columns w, b; got {points.shape}")
    return points[:, 0], points[:, 1], False


def _draw_trajectory(ax: Axes, w: np.ndarray, b: np.ndarray, *, label: str, style: int, diverged: bool) -> None:
    """A descent path; colour, marker and line style all differ between paths, white marker edges keep it
    visible on any part of the surface."""
    ax.plot(w, b, color=PALETTE[style % len(PALETTE)], linestyle=LINESTYLES[style % len(LINESTYLES)],
            marker=MARKERS[style % len(MARKERS)], markersize=5, markeredgecolor="white", markeredgewidth=0.6,
            linewidth=1.4, label=label + (" (diverged)" if diverged else ""))
    if diverged:
        ax.plot(w[-1:], b[-1:], linestyle="none", marker=NONFINITE_MARKER, markersize=10, color=REFERENCE_COLOR)
