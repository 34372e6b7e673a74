"""A fixed threshold against a relative detector, on the same tanh RNN in any units (chapter 5).

- :func:`detection_run`: chapter 5's exploding setup (a tanh RNN with W_hh = ρ · orthogonal, plain SGD on
  the adding problem, T = 30) with ρ, the learning rate and the *units of the loss* as knobs, recorded by
  a :class:`~labkit.monitor.GradientMonitor` and read by an :class:`~labkit.detector.ExplosionDetector`.
- :func:`detection_figure`: the gradient norm with the detector's alarm level (``spike_factor`` × the
  running median) and a fixed threshold τ, where each of them first fires; and the per-timestep profile
  over training.
- :class:`DetectionExplorer`: sliders for ρ, the learning rate, the loss scale c and τ.

The loss scale c multiplies the loss and divides the learning rate, so the SGD updates
η/c · ∇(c·L) = η · ∇L are the same for every c: the run is the same run measured in other units, and
every gradient norm is c times larger. A rule that compares ‖g‖ with a fixed τ changes its answer
with c; the detector's rules are ratios and do not.
"""
from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from labkit import plots
from labkit._checks import positive_float, positive_int
from labkit.detector import Diagnosis, ExplosionDetector
from labkit.models import ElmanRNN
from labkit.monitor import GradientMonitor, MonitorHistory
from labkit.tasks import SequenceTask
from labkit.traces import scaled_task
from labkit.train import train
from labkit.widgets import show_figure

RHO = 2.0
LR = 0.1
LOSS_SCALE = 1.0
THRESHOLD = 1.0  # the folklore rule "a gradient norm above 1 is exploding"
SEQ_LEN = 30
HIDDEN_SIZE = 32
BATCH_SIZE = 32
STEPS = 60
RHO_RANGE = (0.3, 2.5)
LR_EXPONENTS = (-3, 0)  # the learning-rate slider spans 10^-3 .. 10^0
SCALE_EXPONENTS = (-4, 4)
THRESHOLD_EXPONENTS = (-2, 4)


@dataclass(frozen=True)
class DetectionRun:
    """A recorded run and what the two rules make of it.

    Attributes:
        spectral_radius, lr, loss_scale: the settings.
        history: what the monitor recorded (every step, with the per-timestep profile).
        diagnosis: the :class:`~labkit.detector.Diagnosis` of the default :class:`ExplosionDetector`.
        spike_factor: the detector's factor: a norm above ``spike_factor`` × its running median is high.
        alarm_level: ``spike_factor`` × the running median of ‖g‖ at each step, (N,); NaN where the
            median is not yet defined. A norm above it is a high step.
    """

    spectral_radius: float
    lr: float
    loss_scale: float
    history: MonitorHistory
    diagnosis: Diagnosis
    spike_factor: float
    alarm_level: np.ndarray

    def first_above(self, threshold: float) -> int | None:
        """The first step whose ‖g‖ exceeds a fixed ``threshold`` (or is not finite), ``None`` if none."""
        norms = self.history.global_grad_norm
        fired = ~(norms <= positive_float(threshold, "threshold"))  # NaN fires too
        return int(self.history.steps[np.argmax(fired)]) if fired.any() else None


def detection_run(spectral_radius: float = RHO, lr: float = LR, loss_scale: float = LOSS_SCALE, *,
                  steps: int = STEPS, seed: int = 0,
                  detector: ExplosionDetector | None = None) -> DetectionRun:
    """Train the tanh RNN with SGD at ``lr / loss_scale`` on the loss × ``loss_scale``; record and diagnose it.

    Args:
        spectral_radius: ρ = λ₁ of the orthogonal-times-ρ recurrent matrix.
        lr: the learning rate the run would have with the loss in its own units (c = 1).
        loss_scale: c; the norms scale by c, the updates not at all.
        steps: at most this many SGD steps (a diverging run stops earlier).
        seed: the initial weights and the batches.
        detector: the rules (the default :class:`ExplosionDetector` when ``None``).
    """
    rho = positive_float(spectral_radius, "spectral_radius")
    lr, scale = positive_float(lr, "lr"), positive_float(loss_scale, "loss_scale")
    detector = detector or ExplosionDetector()
    model = ElmanRNN(2, HIDDEN_SIZE, 1, init="orthogonal", spectral_radius=rho,
                     generator=torch.Generator().manual_seed(positive_int(seed, "seed", minimum=0)))
    task = SequenceTask.adding(SEQ_LEN)
    if scale != 1.0:
        task = scaled_task(task, scale)
    with GradientMonitor(model, per_timestep=True, spectral_every=steps) as monitor:
        train(model, task, steps=positive_int(steps, "steps"), batch_size=BATCH_SIZE, lr=lr / scale,
              optimizer="sgd", seed=seed, callbacks=[monitor])
    history = monitor.history
    norms = history.global_grad_norm
    with np.errstate(divide="ignore", invalid="ignore"):
        median = norms / detector.ratio_to_running_median(norms)
    return DetectionRun(rho, lr, scale, history, detector.diagnose(history), detector.spike_factor,
                        detector.spike_factor * median)


def detection_figure(run: DetectionRun, threshold: float = THRESHOLD) -> Figure:
    """The explorer's plot: ‖g‖ against both rules (left), ‖∂L/∂h_t‖ over training (right)."""
    threshold = positive_float(threshold, "threshold")
    h, diagnosis, spike_factor = run.history, run.diagnosis, run.spike_factor
    fig, axes = plots.course_subplots(1, 2, figsize=(11.5, 4.2))
    left, right = axes[0, 0], axes[0, 1]
    plots.plot_grad_norms({r"$\|g\|$": h.global_grad_norm}, h.steps, threshold=threshold,
                          threshold_label=rf"fixed threshold $\tau$ = {threshold:g}", ax=left,
                          title=f"ρ = {run.spectral_radius:.2f}, η = {run.lr:.3g}, loss × {run.loss_scale:g}")
    naive = run.first_above(threshold)
    with plots.course_style():
        left.plot(h.steps, run.alarm_level, color=plots.PALETTE[2], linestyle=":",
                  label=f"detector's alarm level ({spike_factor:g} × running median)")
        if diagnosis.first_step is not None:
            left.axvline(diagnosis.first_step, color=plots.PALETTE[1], linewidth=1.2,
                         label=f"detector: {diagnosis.verdict} from step {diagnosis.first_step}")
        if naive is not None:
            left.axvline(naive, color=plots.REFERENCE_COLOR, linewidth=1.0, linestyle="-.",
                         label=rf"$\|g\| > \tau$ first at step {naive}")
        left.legend(loc="best", fontsize="x-small")
    if h.hidden_grad_norms is not None and np.any(np.isfinite(h.hidden_grad_norms) & (h.hidden_grad_norms > 0)):
        plots.plot_timestep_heatmap(h.hidden_grad_norms, h.timestep_steps, ax=right)
    else:
        right.set_axis_off()
    verdict = f"detector: {diagnosis.verdict}" + ("" if diagnosis.first_step is None
                                                  else f" from step {diagnosis.first_step}")
    fixed = "never" if naive is None else f"from step {naive}"
    fig.suptitle(f"{verdict}   ·   fixed rule ‖g‖ > {threshold:g}: {fixed}")
    return fig


class DetectionExplorer(widgets.VBox):
    """Slide ρ, the learning rate, the loss scale c and a fixed threshold τ; watch which rule fires when.

    Args:
        spectral_radius, lr, loss_scale, threshold: the starting values.
        steps: at most this many SGD steps per run.
        seed: fixes the initial weights and the batches.

    Attributes:
        rho_slider, lr_slider, scale_slider, threshold_slider: the controls.
        run: the :class:`DetectionRun` at the current settings (τ only changes the picture).
        output: where the plot is drawn.
    """

    def __init__(self, spectral_radius: float = RHO, lr: float = LR, loss_scale: float = LOSS_SCALE,
                 threshold: float = THRESHOLD, *, steps: int = STEPS, seed: int = 0) -> None:
        self.steps, self.seed = steps, seed
        self.rho_slider = widgets.FloatSlider(value=spectral_radius, min=RHO_RANGE[0], max=RHO_RANGE[1], step=0.1,
                                              description="ρ(W_hh)", continuous_update=False)
        self.lr_slider = widgets.FloatLogSlider(value=lr, base=10, min=LR_EXPONENTS[0], max=LR_EXPONENTS[1],
                                                step=0.25, description="η", continuous_update=False)
        self.scale_slider = widgets.FloatLogSlider(value=loss_scale, base=10, min=SCALE_EXPONENTS[0],
                                                   max=SCALE_EXPONENTS[1], step=0.5, description="loss × c",
                                                   continuous_update=False)
        self.threshold_slider = widgets.FloatLogSlider(value=threshold, base=10, min=THRESHOLD_EXPONENTS[0],
                                                       max=THRESHOLD_EXPONENTS[1], step=0.5,
                                                       description="τ", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([widgets.HBox([self.rho_slider, self.lr_slider]),
                          widgets.HBox([self.scale_slider, self.threshold_slider]), self.output])
        for slider in (self.rho_slider, self.lr_slider, self.scale_slider):
            slider.observe(self._rerun, names="value")
        self.threshold_slider.observe(self._redraw, names="value")
        self._rerun()

    def _rerun(self, change: dict | None = None) -> None:
        self.run = detection_run(self.rho_slider.value, self.lr_slider.value, self.scale_slider.value,
                                 steps=self.steps, seed=self.seed)
        self._redraw()

    def _redraw(self, change: dict | None = None) -> None:
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return detection_figure(self.run, self.threshold_slider.value)

    @staticmethod
    def static_figure(spectral_radius: float = RHO, lr: float = LR, loss_scale: float = LOSS_SCALE,
                      threshold: float = THRESHOLD, *, seed: int = 0) -> Figure:
        """The explorer's plot at these settings, computed without creating widgets."""
        return detection_figure(detection_run(spectral_radius, lr, loss_scale, seed=seed), threshold)
