"""Choose which fixes to apply to chapter 9's broken run and watch its loss and gradient norm (the field guide).

- :func:`fixes_run`: :data:`labkit.field_guide.BROKEN` with a chosen set of :data:`labkit.field_guide.FIXES`
  applied, trained (cached by settings and seed, so toggling back is instant).
- :func:`fixes_figure`: the broken run next to the chosen one: held-out loss against the target and the
  memoryless baseline, and the global gradient norm (before clipping) on a log scale.
- :class:`FixExplorer`: one checkbox per fix and a seed; in JupyterLab it retrains on every change.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from functools import lru_cache

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from labkit import plots
from labkit._checks import positive_int
from labkit.field_guide import FIX_LABELS, FIXES, TARGET_LOSS, RunSettings, apply_fixes, run, summarize
from labkit.train import TrainingHistory
from labkit.widgets import show_figure

ALL_FIXES = tuple(FIXES)


@lru_cache(maxsize=32)
def _cached_run(settings: RunSettings, seed: int) -> TrainingHistory:
    return run(settings, seed)


def fixes_run(fixes: Collection[str] = ALL_FIXES, seed: int = 0) -> TrainingHistory:
    """Train :data:`~labkit.field_guide.BROKEN` with ``fixes`` applied (cached: the same call trains once)."""
    positive_int(seed, "seed", minimum=0)
    return _cached_run(apply_fixes(fixes), seed)


def describe(fixes: Collection[str]) -> str:
    """A legend label for a set of fixes, e.g. ``"broken + clip + adam"``."""
    chosen = [name for name in ALL_FIXES if name in set(fixes)]
    return "broken" + "".join(f" + {name}" for name in chosen) if chosen else "broken (no fix)"


def fixes_figure(runs: Mapping[str, TrainingHistory], target: float = TARGET_LOSS) -> Figure:
    """Held-out loss (with the target and the baseline) and gradient norm of each run, side by side.

    Args:
        runs: legend label → :class:`~labkit.train.TrainingHistory` (of :func:`labkit.field_guide.run`).
        target: the held-out loss the repaired run must reach, drawn as a dotted line.

    Returns:
        The figure: left the held-out MSE against the step (a diverged run ends with an ✕ at the top), right
        the global gradient norm before clipping, both on log axes.
    """
    if not isinstance(runs, Mapping) or not runs:
        raise TypeError("runs must be a non-empty mapping label -> TrainingHistory")
    for label, history in runs.items():
        if not isinstance(history, TrainingHistory):
            raise TypeError(f"runs[{label!r}] must be a TrainingHistory, got {type(history).__name__}")
    fig, axes = plots.course_subplots(1, 2, figsize=(10.5, 3.8))
    loss_ax, norm_ax = axes[0]
    with plots.course_style():
        for i, (label, history) in enumerate(runs.items()):
            steps = np.array([s for s, _ in history.evals], dtype=float)
            losses = np.array([v for _, v in history.evals], dtype=float)
            if history.diverged is not None:  # the run stopped: mark where, as a non-finite value
                steps, losses = np.append(steps, history.diverged.step), np.append(losses, np.inf)
            summary = summarize(history, target)
            end = "diverged" if summary.diverged_at is not None else f"final {summary.final_loss:.3g}"
            plots._draw_series(loss_ax, steps, losses, label=f"{label} ({end})", style=i, log=True)
            norms = np.array(history.grad_norm, dtype=float)
            plots._draw_series(norm_ax, np.arange(len(norms)), norms, label=label, style=i, log=True)
        baseline = next(iter(runs.values())).baseline
        if baseline is not None:
            loss_ax.axhline(baseline, color=plots.REFERENCE_COLOR, linestyle="--", linewidth=1.0,
                            label=f"memoryless baseline {baseline:.3g}")
        loss_ax.axhline(target, color=plots.REFERENCE_COLOR, linestyle=":", linewidth=1.2, label=f"target {target:g}")
        loss_ax.set(yscale="log", xlabel="training step", ylabel="held-out MSE", title="Held-out loss")
        norm_ax.set(yscale="log", xlabel="training step", ylabel=plots.METRIC_LABELS["grad_norm"],
                    title="Gradient norm, before clipping")
        for ax in (loss_ax, norm_ax):
            plots._finish_log_axis(ax)
            ax.legend()
    return fig


class FixExplorer(widgets.VBox):
    """Tick the fixes to apply to the broken run; the plot compares the result with the broken run.

    Args:
        fixes: the fixes ticked at the start (all of them by default).
        seed: the seed of the initial weights and the batches.

    Attributes:
        checkboxes: fix name → its checkbox.
        seed_slider: the seed.
        output: where the plot is drawn.
    """

    def __init__(self, fixes: Collection[str] = ALL_FIXES, *, seed: int = 0) -> None:
        apply_fixes(fixes)  # rejects unknown names before any widget exists
        self.checkboxes = {name: widgets.Checkbox(value=name in set(fixes), description=FIX_LABELS[name], indent=False)
                           for name in ALL_FIXES}
        self.seed_slider = widgets.IntSlider(value=seed, min=0, max=4, description="seed", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([widgets.HBox(list(self.checkboxes.values())), self.seed_slider, self.output])
        for control in (*self.checkboxes.values(), self.seed_slider):
            control.observe(self._update, names="value")
        self._update()

    @property
    def fixes(self) -> tuple[str, ...]:
        """The fixes ticked now, in the ladder's order."""
        return tuple(name for name, box in self.checkboxes.items() if box.value)

    def _update(self, change: dict | None = None) -> None:
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return self.static_figure(self.fixes, seed=self.seed_slider.value)

    @staticmethod
    def static_figure(fixes: Collection[str] = ALL_FIXES, *, seed: int = 0) -> Figure:
        """The explorer's plot for these fixes, computed without creating widgets."""
        return fixes_figure({"broken (no fix)": fixes_run((), seed), describe(fixes): fixes_run(fixes, seed)})
