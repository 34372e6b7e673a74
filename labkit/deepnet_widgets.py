"""The gradient at every layer of a deep network, as a figure and as an explorer for JupyterLab.

- :func:`plot_layer_profiles`: ‖δ_l‖/‖δ_L‖ (the backpropagated gradient) and ‖∂L/∂W_l‖/‖∂L/∂W_L‖ (the
  weight gradient) against the layer l, one line per configuration, with mean-field predictions dashed.
- :class:`DepthExplorer`: choose the activation, the initialization, its gain and the depth; watch how much
  gradient reaches each layer of a freshly initialized :class:`labkit.deepnets.DeepMLP`.

Like the explorers of :mod:`labkit.widgets`, the explorer is an ``ipywidgets.VBox`` whose ``figure()`` returns
the current plot, and ``DepthExplorer.static_figure(...)`` draws the same plot without creating any widget.
"""
from __future__ import annotations

from collections.abc import Mapping

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit import deepnets, plots
from labkit._checks import one_of, positive_float, positive_int
from labkit.widgets import show_figure

ACTIVATION = "tanh"
INIT = "standard"
DEPTH = 10
DEPTH_RANGE = (2, 50)
GAIN_RANGE = (0.25, 3.0)
WIDTH = 128  # narrower than the book's 256: a slider move recomputes in well under a second
SEEDS = range(3)
MIN_VIEW = (0.3, 3.0)
PREDICTION_STYLE = (0, (2, 2))  # short dashes, unlike any of plots.LINESTYLES


def _geometric_mean(rows: np.ndarray) -> np.ndarray:
    return np.exp(np.log(rows).mean(axis=0))


def plot_layer_profiles(profiles: Mapping[str, deepnets.DepthProfile], *,
                        predictions: Mapping[str, np.ndarray] | None = None,
                        title: str | None = None) -> Figure:
    """Two panels against the hidden layer l = 1..L: ‖δ_l‖/‖δ_L‖ and ‖∂L/∂W_l‖/‖∂L/∂W_L‖, on log axes.

    Each configuration is drawn as the geometric mean over its seeds (a line with markers) and each seed as a
    faint line, so the spread between networks shows.

    Args:
        profiles: label → a :class:`labkit.deepnets.DepthProfile` (one row per seed).
        predictions: label → predicted ‖δ_l‖/‖δ_L‖ of shape (L,) (e.g. ``mean_field_profile(...).signal_ratio``),
            drawn with short dashes in the colour of the profile with the same label (black if there is none),
            under one legend entry.
        title: the figure's title.

    Returns:
        The figure. In each panel the first ``len(profiles)`` lines are the geometric means, in order.
    """
    if not isinstance(profiles, Mapping) or not profiles:
        raise TypeError("profiles must be a non-empty mapping label -> DepthProfile")
    labels = list(profiles)
    fig, axes = plots.course_subplots(1, 2, figsize=(11.0, 4.2))
    panels = (
        (axes[0, 0], "signal_ratios", r"$\|\partial L/\partial a_l\| \,/\, \|\partial L/\partial a_L\|$",
         "Backpropagated gradient at layer $l$"),
        (axes[0, 1], "weight_ratios", r"$\|\partial L/\partial W_l\| \,/\, \|\partial L/\partial W_L\|$",
         "Weight gradient of layer $l$"),
    )
    with plots.course_style():
        for ax, ratios, ylabel, panel_title in panels:
            for i, label in enumerate(labels):
                rows = getattr(profiles[label], ratios)()  # (S, L)
                layers = np.arange(1, rows.shape[1] + 1)
                color = plots.PALETTE[i % len(plots.PALETTE)]
                ax.plot(layers, _geometric_mean(rows), color=color, marker=plots.MARKERS[i % len(plots.MARKERS)],
                        markersize=3.5, linestyle=plots.LINESTYLES[i % len(plots.LINESTYLES)], label=label)
            for i, label in enumerate(labels):
                rows = getattr(profiles[label], ratios)()
                layers = np.arange(1, rows.shape[1] + 1)
                for row in rows:
                    ax.plot(layers, row, color=plots.PALETTE[i % len(plots.PALETTE)], alpha=0.25, linewidth=0.8)
            ax.set(yscale="log", xlabel="hidden layer $l$", ylabel=ylabel, title=panel_title)
            low, high = ax.get_ylim()  # at least a factor 10 in view, so seed-to-seed noise is not read as a trend
            ax.set_ylim(min(low, MIN_VIEW[0]), max(high, MIN_VIEW[1]))
        signal_ax = axes[0, 0]
        for label, predicted in (predictions or {}).items():
            predicted = plots.as_array(predicted, f"predictions[{label!r}]", ndim=1)
            color = (plots.PALETTE[labels.index(label) % len(plots.PALETTE)] if label in labels
                     else plots.REFERENCE_COLOR)
            signal_ax.plot(np.arange(1, len(predicted) + 1), predicted, color=color, linestyle=PREDICTION_STYLE,
                           linewidth=1.0)
        if predictions:  # one legend entry for all the dashed lines
            signal_ax.plot([], [], color=plots.REFERENCE_COLOR, linestyle=PREDICTION_STYLE, linewidth=1.0,
                           label="mean-field prediction")
        signal_ax.legend()
        axes[0, 1].legend()
        if title:
            fig.suptitle(title)
    return fig


def depth_figure(activation: str, init: str, depth: int, gain: float, profile: deepnets.DepthProfile,
                 predicted: np.ndarray, *, width: int = WIDTH) -> Figure:
    """The explorer's plot for one configuration."""
    label = f"{activation}, {init} init" + (f" × {gain:g}" if gain != 1.0 else "") + f", L = {depth}"
    signal, weight = (np.exp(np.log(r).mean()) for r in profile.first_to_last())
    return plot_layer_profiles(
        {label: profile}, predictions={label: predicted},
        title=(f"Width {width}, {profile.signal.shape[0]} seeds:  "
               f"‖δ₁‖/‖δ_L‖ = {signal:.3g} (predicted {predicted[0]:.3g}),  "
               f"‖∂L/∂W₁‖/‖∂L/∂W_L‖ = {weight:.3g}"))


def depth_data(activation: str, init: str, depth: int, gain: float = 1.0, *,
               width: int = WIDTH) -> tuple[deepnets.DepthProfile, np.ndarray]:
    """The measured profile over :data:`SEEDS` and the mean-field prediction for one configuration."""
    one_of(activation, "activation", tuple(deepnets.ACTIVATIONS))
    one_of(init, "init", tuple(deepnets.INITS))
    positive_int(depth, "depth")
    positive_float(gain, "gain")
    profile = deepnets.measure_depth_profile(activation, init, depth, width=width, gain=gain, seeds=SEEDS)
    predicted = deepnets.mean_field_profile(activation, init, depth, width=width, gain=gain).signal_ratio
    return profile, predicted


class DepthExplorer(widgets.VBox):
    """Choose activation, initialization, gain and depth; see how much gradient reaches each layer.

    Args:
        activation: the starting activation (a key of :data:`labkit.deepnets.ACTIVATIONS`).
        init: the starting initialization (a key of :data:`labkit.deepnets.INITS`).
        depth: the starting number of hidden layers.
        gain: the starting multiplier of every weight.

    Attributes:
        activation_menu, init_menu, depth_slider, gain_slider: the controls.
        profile: the current :class:`labkit.deepnets.DepthProfile`.
        predicted: the current mean-field prediction of ‖δ_l‖/‖δ_L‖, shape (L,).
        output: where the plot is drawn.
    """

    def __init__(self, activation: str = ACTIVATION, init: str = INIT, depth: int = DEPTH,
                 gain: float = 1.0) -> None:
        self.activation_menu = widgets.Dropdown(options=list(deepnets.ACTIVATIONS), value=activation,
                                                description="activation")
        self.init_menu = widgets.Dropdown(options=list(deepnets.INITS), value=init, description="init")
        self.depth_slider = widgets.IntSlider(value=depth, min=DEPTH_RANGE[0], max=DEPTH_RANGE[1],
                                              description="depth L", continuous_update=False)
        self.gain_slider = widgets.FloatSlider(value=gain, min=GAIN_RANGE[0], max=GAIN_RANGE[1], step=0.05,
                                               description="gain", continuous_update=False)
        self.output = widgets.Output()
        controls = widgets.HBox([widgets.VBox([self.activation_menu, self.init_menu]),
                                 widgets.VBox([self.depth_slider, self.gain_slider])])
        super().__init__([controls, self.output])
        for control in (self.activation_menu, self.init_menu, self.depth_slider, self.gain_slider):
            control.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        self.profile, self.predicted = depth_data(self.activation_menu.value, self.init_menu.value,
                                                  self.depth_slider.value, self.gain_slider.value)
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return depth_figure(self.activation_menu.value, self.init_menu.value, self.depth_slider.value,
                            self.gain_slider.value, self.profile, self.predicted)

    @staticmethod
    def static_figure(activation: str = ACTIVATION, init: str = INIT, depth: int = DEPTH,
                      gain: float = 1.0) -> Figure:
        """The explorer's plot at these settings, computed without creating widgets."""
        return depth_figure(activation, init, depth, gain, *depth_data(activation, init, depth, gain))
