"""Interactive explorers for JupyterLab, each with a static figure for the book.

- :class:`RecurrentWeightExplorer`: a slider for the spectral radius ρ of a tanh RNN's recurrent matrix →
  how much gradient reaches each earlier time step, against the bound ρ^(T-t).
- :class:`CliffExplorer`: learning-rate and clipping-threshold sliders → plain and clipped gradient descent
  on the loss cliff of :mod:`labkit.cliff`.
- :class:`TrainingDashboard`: a callback for :func:`labkit.train.train` that redraws the loss and gradient
  norm every ``every`` steps while a run trains.

Each is an ``ipywidgets.VBox`` (controls above an ``Output``): put it last in a cell to show it. The data
behind the current plot is kept as attributes, and ``figure()`` returns that plot as a matplotlib figure.
``static_figure(...)`` computes and draws the same plot without creating any widget, for pages that must
render without a running kernel.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from labkit import cliff, plots
from labkit._checks import positive_float, positive_int
from labkit.models import ElmanRNN

RHO = 1.0  # default spectral radius of the recurrent-weight explorer
RHO_RANGE = (0.5, 2.0)
HIDDEN_SIZE = 32
SEQ_LEN = 100
BATCH_SIZE = 8
CLIFF_VIEW = ((3.0, 6.0), (-3.5, -0.5))  # (w range, b range) around the demo start and the top of the wall
CLIFF_RESOLUTION = 161


def gradient_profile(rho: float, *, hidden_size: int = HIDDEN_SIZE, seq_len: int = SEQ_LEN,
                     batch_size: int = BATCH_SIZE, seed: int = 0) -> np.ndarray:
    """‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ for t = 1..T in a tanh RNN whose W_hh is a random orthogonal matrix times ρ.

    Every singular value of such a W_hh equals ρ, so λ₁ = ρ, and with γ = max|tanh'| = 1 the ratio is at
    most (λ₁γ)^(T-t) = ρ^(T-t) (Pascanu et al. 2013, §2.1). The same seed gives the same orthogonal matrix,
    inputs (x ~ N(0, 1)) and loss (L = Σ_batch u·h_T for a random unit vector u) for every ρ, so curves for
    different ρ differ only by ρ. Computed in float64 so that vanishing gradients do not underflow to 0.

    Returns:
        The ratios, shape (T,); the last one is 1.
    """
    positive_float(rho, "rho")
    gen = torch.Generator().manual_seed(seed)
    model = ElmanRNN(1, positive_int(hidden_size, "hidden_size"), init="orthogonal", spectral_radius=rho,
                     generator=gen).double()
    model.record_hidden_grads = True
    x = torch.randn(positive_int(batch_size, "batch_size"), positive_int(seq_len, "seq_len"), 1,
                    generator=gen, dtype=torch.float64)  # (B, T, 1)
    u = torch.randn(hidden_size, generator=gen, dtype=torch.float64)
    hidden = model(x).hidden  # (B, T, H)
    (hidden[:, -1] @ (u / u.norm())).sum().backward()
    norms = model.hidden_grad_norms()
    return (norms / norms[-1]).numpy()


def recurrent_weight_figure(rho: float, profile: np.ndarray) -> Figure:
    """The explorer's plot: the measured profile for this ρ and the bound ρ^(T-t)."""
    T = len(profile)
    bound = rho ** np.arange(T - 1, -1, -1.0)
    if rho < 1.0 - 1e-9:
        verdict = "λ₁ = ρ < 1/γ = 1: vanishing is guaranteed"
    elif rho <= 1.0 + 1e-9:
        verdict = "λ₁ = ρ = 1/γ: the bound is flat, so no explosion, but vanishing is not guaranteed"
    else:
        verdict = "λ₁ = ρ > 1/γ = 1: explosion is possible, not guaranteed (tanh' < 1 where units saturate)"
    return plots.plot_timestep_profile(
        {f"tanh RNN, H = {HIDDEN_SIZE}, ρ = {rho:.2f}": profile},
        references={r"bound $(\lambda_1\gamma)^{T-t} = \rho^{T-t}$ ($\gamma$ = 1 for tanh)": bound},
        ylabel=r"$\|\partial L/\partial h_t\| \,/\, \|\partial L/\partial h_T\|$",
        title=f"Gradient reaching step t from step T = {T}\n{verdict}")


class RecurrentWeightExplorer(widgets.VBox):
    """Slide the spectral radius ρ of W_hh and watch how much gradient reaches each earlier time step.

    Args:
        rho: the starting ρ.
        seed: fixes W_hh's orthogonal part and the inputs, so only ρ changes between slider positions.

    Attributes:
        rho_slider: the control.
        profile: ‖∂L/∂h_t‖ / ‖∂L/∂h_T‖ at the current ρ, shape (T,).
        output: where the plot is drawn.
    """

    def __init__(self, rho: float = RHO, *, seed: int = 0) -> None:
        self.seed = seed
        self.rho_slider = widgets.FloatSlider(value=rho, min=RHO_RANGE[0], max=RHO_RANGE[1], step=0.05,
                                              description="ρ(W_hh)", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([self.rho_slider, self.output])
        self.profile = np.empty(0)
        self.rho_slider.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        self.profile = gradient_profile(self.rho_slider.value, seed=self.seed)
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return recurrent_weight_figure(self.rho_slider.value, self.profile)

    @staticmethod
    def static_figure(rho: float = RHO, *, seed: int = 0) -> Figure:
        """The explorer's plot at ``rho``, computed without creating widgets."""
        return recurrent_weight_figure(rho, gradient_profile(rho, seed=seed))


@lru_cache(maxsize=1)
def _cliff_view_surface() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The loss over ``CLIFF_VIEW``, computed once per session."""
    w = np.linspace(*CLIFF_VIEW[0], CLIFF_RESOLUTION)
    b = np.linspace(*CLIFF_VIEW[1], CLIFF_RESOLUTION)
    loss, _ = cliff.cliff_loss_surface(w, b)
    for array in (w, b, loss):
        array.flags.writeable = False  # shared by every explorer
    return w, b, loss


@lru_cache(maxsize=64)
def _descent(start: tuple[float, float], lr: float, clip_norm: float | None, steps: int) -> cliff.Trajectory:
    """Cached, so moving only the threshold slider does not rerun the plain descent."""
    return cliff.gradient_descent_trajectory(*start, lr, steps, clip_norm)


def cliff_explorer_figure(unclipped: cliff.Trajectory, clipped: cliff.Trajectory) -> Figure:
    """The cliff explorer's plot: both descents on the loss surface, and their step lengths."""
    w, b, loss = _cliff_view_surface()
    lr, tau = clipped.lr, clipped.clip_norm
    fig, axes = plots.course_subplots(1, 2, figsize=(11.0, 4.4))
    plots.plot_loss_cliff(w, b, loss, trajectories={
        f"plain GD (ends at loss {unclipped.loss[-1]:.3g})": unclipped,
        f"clipped, τ = {tau:.3g} (ends at loss {clipped.loss[-1]:.3g})": clipped,
    }, axes=[axes[0, 0]])
    stuck = " (then 0: stuck where the gradient vanishes)" if np.any(unclipped.step_lengths == 0) else ""
    plots.plot_grad_norms(
        {"plain GD" + stuck: unclipped.step_lengths, "clipped": clipped.step_lengths},
        threshold=lr * tau, threshold_label=f"η·τ = {lr * tau:.3g}", ax=axes[0, 1],
        xlabel="gradient-descent step k", ylabel=r"step length $\|\theta_{k+1} - \theta_k\|$",
        title=f"Step lengths at η = {lr:.3g}: clipped steps never exceed η·τ")
    fig.suptitle(r"Gradient descent on the loss cliff of $x_t = w\,\sigma(x_{t-1}) + b$")
    return fig


class CliffExplorer(widgets.VBox):
    """Slide the learning rate η and the clipping threshold τ; watch plain and clipped descent on the cliff.

    Both runs start at the same point with the same η; the clipped one rescales its gradient to norm τ
    whenever it is larger, so each of its steps is at most η·τ long.

    Args:
        lr: the starting η.
        clip_norm: the starting τ.
        start: the (w, b) both runs start from.
        steps: gradient-descent steps per run.

    Attributes:
        lr_slider, clip_slider: the controls (log scale).
        unclipped, clipped: the current :class:`labkit.cliff.Trajectory` of each run.
        output: where the plot is drawn.
    """

    def __init__(self, lr: float = cliff.DEMO_LR, clip_norm: float = cliff.DEMO_CLIP, *,
                 start: tuple[float, float] = cliff.DEMO_START, steps: int = cliff.DEMO_STEPS) -> None:
        self.start = (float(start[0]), float(start[1]))
        self.steps = positive_int(steps, "steps")
        self.lr_slider = widgets.FloatLogSlider(value=lr, base=10, min=-2, max=1, step=0.05, description="η",
                                                continuous_update=False)
        self.clip_slider = widgets.FloatLogSlider(value=clip_norm, base=10, min=-2, max=1, step=0.05,
                                                  description="τ", continuous_update=False)
        self.output = widgets.Output()
        super().__init__([widgets.HBox([self.lr_slider, self.clip_slider]), self.output])
        self.lr_slider.observe(self._update, names="value")
        self.clip_slider.observe(self._update, names="value")
        self._update()

    def _update(self, change: dict | None = None) -> None:
        lr, tau = self.lr_slider.value, self.clip_slider.value
        self.unclipped = _descent(self.start, lr, None, self.steps)
        self.clipped = _descent(self.start, lr, tau, self.steps)
        show_figure(self.output, self.figure())

    def figure(self) -> Figure:
        """The current plot as a matplotlib figure."""
        return cliff_explorer_figure(self.unclipped, self.clipped)

    @staticmethod
    def static_figure(lr: float = cliff.DEMO_LR, clip_norm: float = cliff.DEMO_CLIP, *,
                      start: tuple[float, float] = cliff.DEMO_START, steps: int = cliff.DEMO_STEPS) -> Figure:
        """The explorer's plot at these settings, computed without creating widgets."""
        start = (float(start[0]), float(start[1]))
        return cliff_explorer_figure(_descent(start, lr, None, steps), _descent(start, lr, clip_norm, steps))


class TrainingDashboard(widgets.VBox):
    """A live plot of the loss and gradient norm, as a callback for :func:`labkit.train.train`.

    Show it, then pass it to the training loop::

        dashboard = TrainingDashboard(every=20, baseline=task.baseline)
        display(dashboard)
        history = train(model, task, callbacks=[dashboard])

    The gradient norm is the global norm of all gradients right after ``backward()``, before any clipping.

    Args:
        every: redraw after every ``every`` optimizer steps (and once at the end); each redraw renders a
            figure (a few tenths of a second), so keep it well below the number of steps.
        baseline: a loss to draw as a reference line (the task's memoryless baseline).

    Attributes:
        history: what has been recorded: ``{"step": [...], "loss": [...], "grad_norm": [...]}``.
        drawn_at: how many steps had been recorded at each redraw.
        status: a one-line text summary of the latest step.
        output: where the plot is drawn.
    """

    def __init__(self, every: int = 25, baseline: float | None = None) -> None:
        self.every = positive_int(every, "every")
        self.baseline = baseline
        self.status = widgets.HTML()
        self.output = widgets.Output()
        super().__init__([self.status, self.output])
        self.history: dict[str, list[float]] = {"step": [], "loss": [], "grad_norm": []}
        self.drawn_at: list[int] = []

    def on_train_begin(self, model: torch.nn.Module, optimizer: Any) -> None:
        """Start a fresh record."""
        self.history = {"step": [], "loss": [], "grad_norm": []}
        self.drawn_at = []
        self.status.value = "training…"

    def after_backward(self, step: int, model: torch.nn.Module, loss: torch.Tensor | float) -> None:
        """Record this step's loss and the global gradient norm (before clipping)."""
        grads = [p.grad.detach().double() for p in model.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item() \
            if grads else 0.0
        loss = loss.detach().item() if isinstance(loss, torch.Tensor) else float(loss)
        self.history["step"].append(step)
        self.history["loss"].append(loss)
        self.history["grad_norm"].append(norm)
        self.status.value = f"step {step}: loss {loss:.4g}, gradient norm {norm:.3g}"

    def after_step(self, step: int, model: torch.nn.Module) -> None:
        """Redraw every ``every`` recorded steps."""
        recorded = len(self.history["step"])
        if recorded and recorded % self.every == 0:
            self._draw()

    def on_train_end(self, history: Any) -> None:
        """Draw the final state and say whether the run diverged."""
        diverged = getattr(history, "diverged", None)
        if diverged:
            self.status.value = f"stopped: {diverged}"
        if self.baseline is None:
            self.baseline = getattr(history, "baseline", None)
        if self.history["step"]:
            self._draw()

    def figure(self) -> Figure:
        """The loss and gradient norm recorded so far, as a matplotlib figure."""
        return plots.plot_comparison({"this run": self.history}, baseline=self.baseline,
                                     title="Training dashboard")

    def _draw(self) -> None:
        self.drawn_at.append(len(self.history["step"]))
        show_figure(self.output, self.figure())


def show_figure(output: widgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (wait=True: no flicker while the new one renders); every
    explorer of the course redraws through it."""
    with output:
        output.clear_output(wait=True)
        display(fig)
