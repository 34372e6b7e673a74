"""Truncated backpropagation through time, drawn and explored (chapter 3).

- :func:`unrolled_graph_figure`: the Elman RNN folded and unrolled over T steps; with a chunk length k, the
  forward arrows that cross a chunk boundary carry the state on, while the gradient stops there (``detach``).
- :func:`truncation_study`: truncated against full BPTT on one fixed network and batch: the per-timestep
  profile ‖∂L/∂h_t‖ of each and the relative error of the truncated ∂L/∂W_rec.
- :class:`TruncationExplorer`: sliders for the chunk length k and the spectral radius ρ of W_rec.

With chunks of k steps, the total derivative δ_t = ∂L/∂h_t keeps only what the losses of its own chunk send
back: a step at the end of a chunk gets its direct term ∂L_t/∂h_t alone, a step at the start gets k − 1
steps of the future. No term that links a loss to a state k or more steps earlier survives, so the
gradient cannot see dependencies that long, whatever the network remembers in its forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from labkit import plots
from labkit._checks import positive_float, positive_int
from labkit.bptt import elman_bptt, elman_truncated_bptt
from labkit.models import ElmanRNN
from labkit.widgets import show_figure

SEQ_LEN = 48
CHUNK_LEN = 8  # default k of the explorer
RHO = 1.5  # default spectral radius of W_rec: long-range terms dominate the full gradient
RHO_RANGE = (0.5, 2.0)
HIDDEN_SIZE = 16
BATCH_SIZE = 4
ECHO_DELAY = 5  # the target y_t is the input x_{t-d}: a loss at every step that needs memory


def echo_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L = Σ_t L_t with L_t = ½‖y_t − z_t‖², averaged over the batch; outputs and targets (B, T, 1)."""
    return 0.5 * ((outputs - targets) ** 2).sum() / outputs.shape[0]


def echo_problem(spectral_radius: float, *, seq_len: int = SEQ_LEN, hidden_size: int = HIDDEN_SIZE,
                 batch_size: int = BATCH_SIZE, delay: int = ECHO_DELAY,
                 seed: int = 0) -> tuple[ElmanRNN, torch.Tensor, torch.Tensor]:
    """A float64 tanh RNN with a scalar readout, inputs x ~ N(0, 1) (B, T, 1) and echo targets z_t = x_{t-d}.

    W_rec is a random orthogonal matrix times ``spectral_radius``, so each of its singular values equals ρ.
    The same seed gives the same orthogonal matrix, inputs and readout for every ρ.

    Returns:
        ``(model, x, targets)``; ``targets`` is 0 for the first ``delay`` steps.
    """
    positive_float(spectral_radius, "spectral_radius")
    positive_int(delay, "delay")
    gen = torch.Generator().manual_seed(seed)
    model = ElmanRNN(1, positive_int(hidden_size, "hidden_size"), 1, init="orthogonal",
                     spectral_radius=spectral_radius, generator=gen).double()
    x = torch.randn(positive_int(batch_size, "batch_size"), positive_int(seq_len, "seq_len"), 1,
                    generator=gen, dtype=torch.float64)  # (B, T, 1)
    targets = torch.zeros_like(x)
    targets[:, delay:] = x[:, :-delay]
    return model, x, targets


@dataclass(frozen=True)
class TruncationStudy:
    """Truncated against full BPTT on one network and batch.

    Attributes:
        chunk_len: k, steps per chunk.
        spectral_radius: ρ(W_rec) of the network.
        full_profile: ‖∂L/∂h_t‖ for t = 1..T with full BPTT, (T,).
        truncated_profile: the same with the gradient stopped at every chunk boundary, (T,).
        relative_error: ‖G_k − G‖ / ‖G‖ for G = ∂L/∂W_rec (0 when k ≥ T).
    """

    chunk_len: int
    spectral_radius: float
    full_profile: np.ndarray
    truncated_profile: np.ndarray
    relative_error: float

    @property
    def boundaries(self) -> list[int]:
        """The last time step of every chunk but the final one: where the gradient stops."""
        T = len(self.full_profile)
        return list(range(self.chunk_len, T, self.chunk_len))


def truncation_study(chunk_len: int, spectral_radius: float = RHO, *, seed: int = 0) -> TruncationStudy:
    """Run full and truncated BPTT (chunks of ``chunk_len`` steps) on :func:`echo_problem`'s network."""
    positive_int(chunk_len, "chunk_len")
    rho = positive_float(spectral_radius, "spectral_radius")
    (full_profile, full_grad), (profile, grad) = _gradients(rho, seed, None), _gradients(rho, seed, chunk_len)
    return TruncationStudy(chunk_len, rho, full_profile, profile, _relative_error(grad, full_grad))


def truncation_error_curve(spectral_radius: float = RHO, *, seed: int = 0) -> np.ndarray:
    """‖G_k − G‖ / ‖G‖ for k = 1..T (entry k − 1); the last entry, k = T, is full BPTT: 0."""
    rho = positive_float(spectral_radius, "spectral_radius")
    full = _gradients(rho, seed, None)[1]
    return np.array([_relative_error(_gradients(rho, seed, k)[1], full) for k in range(1, SEQ_LEN + 1)])


@lru_cache(maxsize=512)
def _gradients(spectral_radius: float, seed: int, chunk_len: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(‖∂L/∂h_t‖ for t = 1..T, ∂L/∂W_rec), full BPTT when ``chunk_len`` is None; cached, read-only."""
    model, x, targets = echo_problem(spectral_radius, seed=seed)
    if chunk_len is None:
        _, result = elman_bptt(model, x, targets, echo_loss)
    else:
        _, result = elman_truncated_bptt(model, x, targets, echo_loss, chunk_len)
    profile, grad = result.hidden_grad_norms.numpy(), result.grads["weight_hh"].numpy()
    for array in (profile, grad):
        array.flags.writeable = False
    return profile, grad


def _relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))


def truncation_figure(study: TruncationStudy, error_curve: np.ndarray) -> Figure:
    """The explorer's plot: both profiles with the chunk boundaries, and the error of ∂L/∂W_rec against k."""
    T, k = len(study.full_profile), study.chunk_len
    fig, axes = plots.course_subplots(1, 2, figsize=(11.0, 4.2))
    left, right = axes[0, 0], axes[0, 1]
    plots.plot_timestep_profile(
        {"full BPTT": study.full_profile, f"truncated, k = {k}": study.truncated_profile}, ax=left,
        ylabel=r"$\|\partial L/\partial h_t\|$",
        title=f"Gradient reaching each step (ρ = {study.spectral_radius:.2f}, T = {T})")
    for i, step in enumerate(study.boundaries):
        # the state carries on from step `step` to `step + 1`; the gradient does not come back
        left.axvline(step + 0.5, color=plots.REFERENCE_COLOR, linewidth=0.8, linestyle=":",
                     label="chunk boundary (detach)" if i == 0 else None)
    left.legend()
    ks = np.arange(1, T + 1)
    shown = ks < T  # k = T is full BPTT, error 0, which a log axis cannot show
    with plots.course_style():
        right.plot(ks[shown], error_curve[shown], color=plots.PALETTE[0], marker="o", markersize=3)
        if k < T:
            right.plot([k], [error_curve[k - 1]], linestyle="none", marker="o", markersize=9,
                       markerfacecolor="none", markeredgecolor=plots.PALETTE[1], markeredgewidth=2,
                       label=f"k = {k}: error {study.relative_error:.2g}")
            right.legend()
        right.set(yscale="log", xlabel="chunk length k",
                  ylabel=r"$\|G_k - G\| \,/\, \|G\|$ for $G = \partial L/\partial W_{\mathrm{rec}}$",
                  title=f"Error of the truncated gradient (k ≥ {T}: exact)")
    return fig


class TruncationExplorer(widgets.VBox):
    """Slide the chunk length k and the spectral radius ρ; compare truncated with full BPTT.

    Args:
        chunk_len: the starting k.
        spectral_radius: the starting ρ.
        seed: fixes the network's orthogonal part, readout and inputs, so only k and ρ change.

    Attributes:
        chunk_slider, rho_slider: the controls.
        study: the :class:`TruncationStudy` at the current k and ρ.
        error_curve: the relative error of ∂L/∂W_rec for k = 1..T at the current ρ, (T,).
        output: where the plot is drawn.
    """

    def __init__(self, chunk_len: int = CHUNK_LEN, spectral_radius: float = RHO, *, seed: int = 0) -> None:
        self.seed = seed
        self.chunk_slider = widgets.IntSlider(value=chunk_len, min=1, max=SEQ_LEN, step=1,
                                              description="chunk k", continuous_update=False)
        self.rho_slider = widgets.FloatSlider(value=spectral_radius, min=RHO_RANGE[0], max=RHO_RANGE[1],
                                              step=0.05, description="ρ(W_rec)", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([widgets.HBox([self.chunk_slider, self.rho_slider]), self.output])
        self.chunk_slider.observe(self._update, names="value")
        self.rho_slider.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        rho = self.rho_slider.value
        self.study = truncation_study(self.chunk_slider.value, rho, seed=self.seed)
        self.error_curve = truncation_error_curve(rho, seed=self.seed)
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return truncation_figure(self.study, self.error_curve)

    @staticmethod
    def static_figure(chunk_len: int = CHUNK_LEN, spectral_radius: float = RHO, *, seed: int = 0) -> Figure:
        """The explorer's plot at these settings, computed without creating widgets."""
        return truncation_figure(truncation_study(chunk_len, spectral_radius, seed=seed),
                                 truncation_error_curve(spectral_radius, seed=seed))


# ---------------------------------------------------------------------------------------------- the diagram

FORWARD_COLOR = plots.PALETTE[0]
BACKWARD_COLOR = plots.PALETTE[1]


def unrolled_graph_figure(seq_len: int = 5, chunk_len: int | None = None) -> Figure:
    """The Elman RNN folded (a loop through W_rec) and unrolled over ``seq_len`` steps.

    Solid arrows are the forward pass: x_t → h_t through W_in, h_{t-1} → h_t through W_rec, h_t → L_t.
    Dashed arrows are the backward pass: the gradient δ flows from each loss down into h_t and from h_t back
    to h_{t-1}. With ``chunk_len`` = k, a dotted line follows every k-th step: the state still crosses it
    forward, but the backward arrow across it is struck out, as ``h = h.detach()`` does.
    """
    T = positive_int(seq_len, "seq_len")
    if chunk_len is not None:
        positive_int(chunk_len, "chunk_len")
    fig, axes = plots.course_subplots(figsize=(0.85 * (3.6 + 1.45 * T), 3.0))
    ax = axes[0, 0]
    ax.set_axis_off()
    ax.set_aspect("equal")
    y_x, y_h, y_L = 0.0, 1.5, 3.0
    # folded: one cell with a self-loop
    _node(ax, 0.0, y_x, r"$x_t$", "input")
    _node(ax, 0.0, y_h, r"$h_t$", "state")
    _node(ax, 0.0, y_L, r"$L_t$", "loss")
    _arrow(ax, (0.0, y_x + 0.3), (0.0, y_h - 0.3), r"$W_{\mathrm{in}}$", label_side="left")
    _arrow(ax, (0.0, y_h + 0.3), (0.0, y_L - 0.3))
    ax.add_patch(FancyArrowPatch((0.2, y_h + 0.28), (0.2, y_h - 0.28), connectionstyle="arc3,rad=-2.0",
                                 arrowstyle="-|>", mutation_scale=12, color=FORWARD_COLOR, linewidth=1.4))
    ax.text(0.9, y_h, r"$W_{\mathrm{rec}}$", ha="left", va="center", fontsize=9, color=FORWARD_COLOR)
    ax.text(2.0, y_h, "unroll\n" + r"$\Longrightarrow$", ha="center", va="center", fontsize=10)
    # unrolled: h_0 .. h_T
    x0, dx = 3.0, 1.45
    xs = [x0 + dx * t for t in range(T + 1)]
    _node(ax, xs[0], y_h, r"$h_0$", "state")
    for t in range(1, T + 1):
        _node(ax, xs[t], y_x, rf"$x_{{{t}}}$", "input")
        _node(ax, xs[t], y_h, rf"$h_{{{t}}}$", "state")
        _node(ax, xs[t], y_L, rf"$L_{{{t}}}$", "loss")
        _arrow(ax, (xs[t], y_x + 0.3), (xs[t], y_h - 0.3))
        _arrow(ax, (xs[t] - 0.08, y_h + 0.3), (xs[t] - 0.08, y_L - 0.3))
        _arrow(ax, (xs[t] + 0.08, y_L - 0.3), (xs[t] + 0.08, y_h + 0.3), backward=True)
        _arrow(ax, (xs[t - 1] + 0.3, y_h + 0.08), (xs[t] - 0.3, y_h + 0.08),
               r"$W_{\mathrm{rec}}$" if t == 1 else None)
        cut = chunk_len is not None and (t - 1) % chunk_len == 0 and t > 1
        _arrow(ax, (xs[t] - 0.3, y_h - 0.12), (xs[t - 1] + 0.3, y_h - 0.12), backward=True, cut=cut)
        if cut:
            ax.plot([(xs[t - 1] + xs[t]) / 2] * 2, [y_x - 0.4, y_L + 0.4], color=plots.REFERENCE_COLOR,
                    linestyle=":", linewidth=1.0)
    title = "The unrolled Elman RNN: forward (solid) and backward (dashed) through time"
    if chunk_len is not None:
        title = f"Truncated BPTT, k = {chunk_len}: the state crosses the dotted lines, the gradient does not"
    ax.set_title(title)
    ax.set_xlim(-0.6, xs[-1] + 0.6)
    ax.set_ylim(y_x - 0.6, y_L + 0.6)
    return fig


def _node(ax: Axes, x: float, y: float, text: str, kind: str) -> None:
    shade = {"input": "#FFFFFF", "state": "#DCEBF7", "loss": "#FBE3D6"}[kind]
    ax.text(x, y, text, ha="center", va="center", fontsize=11, zorder=3,
            bbox={"boxstyle": "circle,pad=0.3" if kind == "state" else "round,pad=0.3", "facecolor": shade,
                  "edgecolor": plots.REFERENCE_COLOR, "linewidth": 1.0})


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str | None = None, *,
           backward: bool = False, cut: bool = False, label_side: str = "above") -> None:
    color = BACKWARD_COLOR if backward else FORWARD_COLOR
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.4,
                                 linestyle="--" if backward else "-", alpha=0.35 if cut else 1.0))
    mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    if cut:
        ax.text(*mid, r"$\times$", ha="center", va="center", fontsize=13, color=BACKWARD_COLOR, zorder=4)
    if label is not None:
        offset = (-0.12, 0.0) if label_side == "left" else (0.0, 0.18)
        ax.text(mid[0] + offset[0], mid[1] + offset[1], label, fontsize=9, color=color,
                ha="right" if label_side == "left" else "center", va="center" if label_side == "left" else "bottom")
