"""What an L2 penalty does to the recurrent matrix, with a strength slider and a clipping switch (chapter 7).

- :func:`strength_figure`: for one strength λ, λ₁(W_hh) and the training loss over training, next to the
  same run without a penalty.
- :class:`StrengthExplorer`: a slider for log₁₀ λ and a checkbox for clipping the global gradient norm at
  τ = 1 over that figure.

The runs are a small version of chapter 6's exploding tanh RNN (:data:`SETUP`), trained with plain SGD at
η = 0.2 on loss + (λ/2) Σ w² (biases left out), so the penalty is exactly weight decay: a factor 1 − ηλ
per step. Clipped, a stronger penalty holds λ₁ lower and the loss higher; unclipped, every strength that
still lets the network learn blows up within a few dozen steps.
"""
from __future__ import annotations

import math
from functools import lru_cache

import ipywidgets as widgets
from matplotlib.figure import Figure

from labkit import plots
from labkit.clip_study import ExplodingRNN
from labkit.regularization_study import RegularizedRun, plot_singular_value_trajectories, regularized_run
from labkit.widgets import show_figure

SETUP = ExplodingRNN(seq_len=10, hidden_size=16, batch_size=32, steps=300)
CLIP_NORM = 1.0
STRENGTH = 1e-2  # the explorer's default λ
LOG_STRENGTH_RANGE = (-4.0, 0.5)  # the slider's log10 λ range


@lru_cache(maxsize=64)
def _run(strength: float, clipped: bool, seed: int) -> RegularizedRun:
    run = regularized_run(SETUP, strength, seed=seed, clip_norm=CLIP_NORM if clipped else None)
    for array in (run.steps, run.sigma_max, run.frobenius):
        array.flags.writeable = False
    return run


def strength_figure(strength: float = STRENGTH, clipped: bool = True, *, seed: int = 0) -> Figure:
    """λ₁(W_hh) (left) and the training loss (right) for L2 strength ``strength`` and for no penalty.

    Args:
        strength: λ > 0 of the L2 penalty (λ/2) Σ w².
        clipped: clip the global gradient norm at τ = 1 in both runs.
        seed: the initial weights and batches, the same for both runs.

    Returns:
        The figure: two panels, the run without a penalty first in each.
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not (math.isfinite(strength)
                                                                                  and strength > 0):
        raise ValueError(f"strength must be a finite number > 0, got {strength!r}")
    runs = {"no penalty": _run(0.0, bool(clipped), seed), f"L2, λ = {strength:.3g}": _run(float(strength),
                                                                                           bool(clipped), seed)}
    with plots.course_style():
        fig, axes = plots.course_subplots(1, 2, figsize=(11.0, 4.2))
        plot_singular_value_trajectories(runs, ax=axes[0, 0], title=r"$\lambda_1(W_{hh})$")
        histories = {label: run.history.as_arrays() for label, run in runs.items()}
        plots.plot_comparison(histories, ("loss",), baseline=SETUP.task().baseline, log_metrics=("loss",),
                              axes=[axes[0, 1]])
        run = runs[f"L2, λ = {strength:.3g}"]
        outcome = (f"diverged at step {run.history.diverged.step}" if run.diverged
                   else f"final λ₁ = {run.sigma_max[-1]:.2f}, held-out MSE = {run.final_loss:.3f}")
        how = f"clipped at τ = {CLIP_NORM:g}" if clipped else "not clipped"
        fig.suptitle(f"Adding problem T = {SETUP.seq_len}, tanh RNN H = {SETUP.hidden_size}, SGD η = {SETUP.lr:g}, "
                     f"{how}\nλ = {strength:.3g} (weight decay {1 - SETUP.lr * strength:.4g} per step): {outcome}")
    return fig


class StrengthExplorer(widgets.VBox):
    """Slide the L2 strength and switch clipping on and off; watch λ₁(W_hh) and the loss.

    Attributes:
        strength_slider: log₁₀ λ.
        clip_box: whether both runs clip the global gradient norm at τ = 1.
        output: where the plot is drawn.
    """

    def __init__(self, strength: float = STRENGTH, clipped: bool = True, *, seed: int = 0) -> None:
        self.seed = seed
        self.strength_slider = widgets.FloatLogSlider(value=strength, base=10, min=LOG_STRENGTH_RANGE[0],
                                                      max=LOG_STRENGTH_RANGE[1], step=0.25, description="λ (L2)",
                                                      continuous_update=False)
        self.clip_box = widgets.Checkbox(value=clipped, description=f"clip at τ = {CLIP_NORM:g}")
        self.output = widgets.Output()
        super().__init__([widgets.HBox([self.strength_slider, self.clip_box]), self.output])
        self.strength_slider.observe(self._update, names="value")
        self.clip_box.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return strength_figure(self.strength_slider.value, self.clip_box.value, seed=self.seed)

    @staticmethod
    def static_figure(strength: float = STRENGTH, clipped: bool = True, *, seed: int = 0) -> Figure:
        """The explorer's plot at this strength, computed without creating widgets."""
        return strength_figure(strength, clipped, seed=seed)

