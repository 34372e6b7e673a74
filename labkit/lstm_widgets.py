"""How far back the gradient reaches in an untrained LSTM, as the forget-gate bias changes (chapter 8).

- :func:`forget_bias_figure`: for one forget-gate bias b_f, the per-step gradient norms of the Elman RNN
  (‖∂L/∂h_t‖) and of the LSTM (‖∂L/∂c_t‖), each divided by its value at the last step, with the mean
  direct-path factor Π f and the bound-free guess σ(b_f)^(T−t) drawn for reference.
- :class:`ForgetBiasExplorer`: a slider for b_f over that figure.

At initialization the weights are small, so every forget gate is close to σ(b_f), and along the cell path a
gradient survives n steps as about σ(b_f)^n: 0.5^n for b_f = 0, 0.73^n for b_f = 1, 0.95^n for b_f = 3.
"""
from __future__ import annotations

from functools import lru_cache

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit import plots
from labkit.rnn_vs_lstm import GradientReach, gradient_reach
from labkit.widgets import show_figure

FORGET_BIAS = 1.0  # the explorer's default, the common choice
FORGET_BIAS_RANGE = (-2.0, 6.0)
SEQ_LEN = 100
HIDDEN_SIZE = 64


@lru_cache(maxsize=128)
def _reach(forget_bias: float, seed: int) -> GradientReach:
    reach = gradient_reach(SEQ_LEN, HIDDEN_SIZE, forget_bias=forget_bias, seed=seed)
    for array in (reach.rnn_hidden, reach.lstm_hidden, reach.lstm_cell, reach.forget_product):
        array.flags.writeable = False
    return reach


def forget_bias_figure(forget_bias: float = FORGET_BIAS, *, seed: int = 0) -> Figure:
    """The explorer's plot at one forget-gate bias: gradient reaching step t from the loss at step T.

    The Elman RNN and the LSTM are :func:`labkit.rnn_vs_lstm.make_model`'s contestants (H = 64), untrained,
    on the same batch of the adding problem (T = 100); the curves are normalized to 1 at t = T.
    """
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not np.isfinite(forget_bias):
        raise TypeError(f"forget_bias must be a finite number, got {forget_bias!r}")
    reach = _reach(float(forget_bias), seed)
    T = len(reach.lstm_cell)
    gate = 1.0 / (1.0 + np.exp(-float(forget_bias)))
    return plots.plot_timestep_profile(
        {"LSTM, cell state: ‖∂L/∂c_t‖": reach.lstm_cell / reach.lstm_cell[-1],
         "tanh RNN, hidden state: ‖∂L/∂h_t‖": reach.rnn_hidden / reach.rnn_hidden[-1]},
        references={r"mean of $\prod_{s>t} f_s$ (the direct cell path)": reach.forget_product,
                    rf"$\sigma(b_f)^{{T-t}} = {gate:.3f}^{{T-t}}$": gate ** np.arange(T - 1, -1, -1.0)},
        ylabel="gradient norm / its value at t = T",
        title=f"Gradient reaching step t from the loss at T = {T}, untrained, forget bias $b_f$ = {forget_bias:g}")


class ForgetBiasExplorer(widgets.VBox):
    """Slide the LSTM's initial forget-gate bias and watch how far back its gradient reaches.

    Attributes:
        bias_slider: the control.
        output: where the plot is drawn.
    """

    def __init__(self, forget_bias: float = FORGET_BIAS, *, seed: int = 0) -> None:
        self.seed = seed
        self.bias_slider = widgets.FloatSlider(value=forget_bias, min=FORGET_BIAS_RANGE[0], max=FORGET_BIAS_RANGE[1],
                                               step=0.25, description="forget bias", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([self.bias_slider, self.output])
        self.bias_slider.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return forget_bias_figure(self.bias_slider.value, seed=self.seed)

    @staticmethod
    def static_figure(forget_bias: float = FORGET_BIAS, *, seed: int = 0) -> Figure:
        """The explorer's plot at this bias, computed without creating widgets."""
        return forget_bias_figure(forget_bias, seed=seed)
