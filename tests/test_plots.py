"""labkit.cliff and labkit.plots: the loss cliff is real and exact, and every figure carries the data it is given."""
from __future__ import annotations

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm, to_hex  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import cliff, plots  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")  # a warning would reach stderr in a notebook

OKABE_ITO = {"#000000", "#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7"}


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def hand_loss(w: float, b: float, steps: int = 50, x0: float = 0.5, target: float = 0.7) -> float:
    """Pascanu et al.'s eq. 8 unrolled with Python floats."""
    x = x0
    for _ in range(steps):
        x = w * sigmoid(x) + b
    return (sigmoid(x) - target) ** 2


def render(fig: Figure) -> Figure:
    """Draw the figure as the notebook would (glyph or log-scale problems surface as warnings here)."""
    fig.canvas.draw()
    return fig


@pytest.fixture(scope="module")
def default_surface():
    w, b = cliff.default_grid()
    loss, grad_norm = cliff.cliff_loss_surface(w, b)
    return w, b, loss, grad_norm


# --- the cliff ------------------------------------------------------------------------------------

def test_default_grid_holds_a_cliff(default_surface):
    w, b, loss, grad_norm = default_surface
    assert loss.shape == grad_norm.shape == (len(b), len(w)) == (201, 201)
    ratio = grad_norm.max() / np.median(grad_norm)
    # measured: 8.1e3 on the default 201 x 201 grid over w in [2, 8], b in [-6, 0]
    assert ratio > 1e3, f"max/median gradient norm is only {ratio:.3g}"
    i, j = np.unravel_index(grad_norm.argmax(), grad_norm.shape)
    assert 4.0 < w[j] < 5.0 and -3.0 < b[i] < -2.0, "the steepest grid point should be where the wall begins"


@pytest.mark.parametrize("resolution", [101, 301])
def test_the_cliff_is_not_an_accident_of_the_grid(resolution):
    # the wall is thinner than any grid spacing, so the sampled maximum depends on the grid (measured:
    # 2.2e3 at 101 points per axis, 1.2e4 at 301), but it stays three orders of magnitude above the median
    _, grad_norm = cliff.cliff_loss_surface(*cliff.default_grid(resolution))
    assert grad_norm.max() / np.median(grad_norm) > 1e3


@pytest.mark.parametrize("i, j", [(0, 0), (100, 37), (140, 120), (200, 200), (57, 180)])
def test_surface_equals_the_hand_unrolled_recurrence(default_surface, i, j):
    w, b, loss, _ = default_surface
    assert loss[i, j] == pytest.approx(hand_loss(w[j], b[i]), rel=1e-12, abs=1e-15)


def test_surface_gradient_equals_finite_differences():
    w, b = np.array([1.0, 3.0, 6.5]), np.array([-1.0, 0.5])  # smooth points, away from the wall
    _, grad_norm = cliff.cliff_loss_surface(w, b)
    h = 1e-6
    for i, bi in enumerate(b):
        for j, wj in enumerate(w):
            dw = (hand_loss(wj + h, bi) - hand_loss(wj - h, bi)) / (2 * h)
            db = (hand_loss(wj, bi + h) - hand_loss(wj, bi - h)) / (2 * h)
            assert grad_norm[i, j] == pytest.approx(math.hypot(dw, db), rel=1e-5, abs=1e-12)


def test_gradient_on_the_wall_has_its_closed_form(default_surface):
    # on the wall x_0 is a fixed point, so x_t = x_0 and dx_T/db = Σ m^k = (m^T - 1)/(m - 1), m = w σ'(x_0)
    w = 6.0
    b = cliff.cliff_wall([w])[0]
    s = sigmoid(0.5)
    m = w * s * (1 - s)
    closed_form = abs(2 * (s - 0.7) * s * (1 - s)) * (m ** 50 - 1) / (m - 1) * math.hypot(1.0, s)
    _, grad_norm = cliff.cliff_loss_surface([w], [b])
    assert grad_norm[0, 0] == pytest.approx(closed_form, rel=1e-6)
    # measured: 2.7e6 on the wall at w = 6, ~1e8 times the median over the default grid
    assert grad_norm[0, 0] > 1e6 * np.median(default_surface[3])


def test_wall_exists_only_where_the_fixed_point_repels():
    b = cliff.cliff_wall([4.0, 4.3, 8.0])
    assert np.isnan(b[0])  # 4 σ'(0.5) < 1: one attractor, no wall
    assert b[1:] == pytest.approx([0.5 - 4.3 * sigmoid(0.5), 0.5 - 8.0 * sigmoid(0.5)])


def test_trajectory_rows_are_the_surface_at_each_iterate():
    run = cliff.gradient_descent_trajectory(2.0, -1.0, 0.5, 5)
    assert run.points.shape == (6, 4) and not run.diverged
    assert (run.w[0], run.b[0]) == (2.0, -1.0)
    for w, b, loss, grad_norm in run.points:
        surface_loss, surface_grad = cliff.cliff_loss_surface([w], [b])
        assert loss == pytest.approx(surface_loss[0, 0], rel=1e-12)
        assert grad_norm == pytest.approx(surface_grad[0, 0], rel=1e-12)
    assert run.loss[-1] < run.loss[0]  # a smooth region: plain descent goes down


@pytest.mark.parametrize("lr, clip_norm", [(1.0, 0.25), (1.0, 0.05), (0.5, 1.0), (5.0, 0.1)])
def test_every_clipped_step_is_at_most_lr_times_threshold(lr, clip_norm):
    run = cliff.gradient_descent_trajectory(*cliff.DEMO_START, lr, 30, clip_norm=clip_norm)
    assert not run.diverged
    assert run.step_lengths.max() <= lr * clip_norm * (1 + 1e-9)
    # where the gradient was small the step is the plain one, η‖g‖
    small = run.grad_norm[:-1] < clip_norm / 2
    assert np.allclose(run.step_lengths[small], lr * run.grad_norm[:-1][small], rtol=1e-9)


def test_plain_descent_is_thrown_off_the_cliff_where_clipped_descent_is_not():
    lr, tau, steps = cliff.DEMO_LR, cliff.DEMO_CLIP, cliff.DEMO_STEPS
    plain = cliff.gradient_descent_trajectory(*cliff.DEMO_START, lr, steps)
    clipped = cliff.gradient_descent_trajectory(*cliff.DEMO_START, lr, steps, clip_norm=tau)
    # measured: one plain step of length 29.9 (at iteration 2), 120 times η·τ = 0.25
    assert plain.step_lengths.max() > 100 * lr * tau
    w_range, b_range = cliff.W_RANGE, cliff.B_RANGE
    assert not (w_range[0] <= plain.w[-1] <= w_range[1] and b_range[0] <= plain.b[-1] <= b_range[1])
    assert plain.grad_norm[-1] < 1e-12  # thrown onto a flat plateau: it never comes back
    assert clipped.loss[-1] < 0.1 * plain.loss[-1]


def test_a_diverging_run_stops_with_a_flag_instead_of_raising():
    w0 = 6.0
    b0 = cliff.cliff_wall([w0])[0]  # on the wall the gradient is ~3e6, so the first step overflows to inf
    run = cliff.gradient_descent_trajectory(w0, b0, 1e305, 10)
    assert run.diverged
    assert len(run.points) == 1 and np.isfinite(run.points).all()


@pytest.mark.parametrize("kwargs, message", [
    ({"lr": 0.0}, "lr must be"),
    ({"lr": float("nan")}, "lr must be"),
    ({"clip_norm": -1.0}, "clip_norm must be"),
    ({"w0": float("inf")}, "w0 must be a finite number"),
])
def test_bad_trajectory_arguments_are_rejected(kwargs, message):
    args = {"w0": 1.0, "b0": 0.0, "lr": 0.1, "steps": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        cliff.gradient_descent_trajectory(**args)


def test_a_start_that_is_not_a_number_is_a_type_error():
    with pytest.raises(TypeError, match="w0 must be a finite number, got str"):
        cliff.gradient_descent_trajectory("4.2", -2.6, 0.1, 3)
    run = cliff.gradient_descent_trajectory(np.float32(4.25), torch.tensor(-2.5).item(), 0.1, 1)
    assert run.w[0] == 4.25


def test_bad_grids_are_rejected():
    with pytest.raises(ValueError, match="w_values must be a non-empty 1-D array"):
        cliff.cliff_loss_surface(np.zeros((2, 2)), [0.0, 1.0])
    with pytest.raises(ValueError, match="b_values must be finite"):
        cliff.cliff_loss_surface([1.0, 2.0], [0.0, float("nan")])


def test_surface_accepts_tensors_and_lists():
    loss_list, _ = cliff.cliff_loss_surface([1.0, 2.0], [0.0, -1.0])
    loss_tensor, _ = cliff.cliff_loss_surface(torch.tensor([1.0, 2.0]), torch.tensor([0.0, -1.0]))
    np.testing.assert_array_equal(loss_list, loss_tensor)


# --- style --------------------------------------------------------------------------------------

def test_palette_is_okabe_ito_and_applied_only_inside_the_plots():
    assert {c.lower() for c in plots.PALETTE} == OKABE_ITO
    before = plt.rcParams["axes.prop_cycle"]
    with plots.course_style():
        assert [to_hex(c["color"]) for c in plt.rcParams["axes.prop_cycle"]] == [c.lower() for c in plots.PALETTE]
    render(plots.plot_grad_norms({"a": [1.0, 2.0]}))
    assert plt.rcParams["axes.prop_cycle"] == before


def test_figures_are_returned_not_left_open_in_pyplot():
    open_before = plt.get_fignums()
    fig = plots.plot_grad_norms({"a": [1.0, 2.0]})
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == open_before


# --- gradient-norm traces ----------------------------------------------------------------------------

def test_grad_norm_traces_carry_their_data_on_a_log_axis():
    a = np.array([1.0, 10.0, 100.0, 1e3])
    b = torch.tensor([2.0, 0.0, float("inf"), float("nan")], dtype=torch.float32)
    fig = render(plots.plot_grad_norms({"plain": a, "clipped": b}, threshold=5.0))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_array_equal(lines["plain"].get_ydata(), a)
    np.testing.assert_array_equal(lines["plain"].get_xdata(), np.arange(4))
    # the zero and the non-finite values are gaps on the log axis, and the non-finite steps are marked
    np.testing.assert_array_equal(lines["clipped"].get_ydata(), [2.0, np.nan, np.nan, np.nan])
    np.testing.assert_array_equal(lines["clipped: non-finite"].get_xdata(), [2, 3])
    assert "clipped" in lines["clipped: non-finite"].get_label()
    threshold = next(line for line in ax.lines if "threshold" in line.get_label())
    assert set(threshold.get_ydata()) == {5.0}
    assert to_hex(lines["plain"].get_color()) == plots.PALETTE[0].lower()
    assert to_hex(lines["clipped"].get_color()) == plots.PALETTE[1].lower()
    assert lines["plain"].get_linestyle() != lines["clipped"].get_linestyle()  # apart in grayscale too


def test_grad_norm_steps_must_match_every_trace():
    with pytest.raises(ValueError, match=r"steps has 3 entries but there are 4 values in traces\['a'\]"):
        plots.plot_grad_norms({"a": np.ones(4)}, steps=[0, 10, 20])


def test_grad_norm_rejects_bad_inputs():
    with pytest.raises(TypeError, match="traces must be a non-empty mapping"):
        plots.plot_grad_norms(np.ones(4))
    with pytest.raises(ValueError, match=r"traces\['a'\] must be a non-empty 1-D array"):
        plots.plot_grad_norms({"a": np.ones((2, 2))})
    with pytest.raises(ValueError, match="threshold must be a finite number > 0"):
        plots.plot_grad_norms({"a": np.ones(3)}, threshold=0.0)
    with pytest.raises(TypeError, match="numpy array, torch tensor or list of numbers"):
        plots.plot_grad_norms({"a": ["x", "y"]})


def test_a_trace_with_nothing_positive_draws_without_warnings():
    fig = render(plots.plot_grad_norms({"diverged": [float("nan"), float("inf")]}))
    bottom, top = fig.axes[0].get_ylim()
    assert 0 < bottom < top


def test_draws_into_a_given_axes():
    fig, ax = plt.subplots()
    try:
        assert plots.plot_grad_norms({"a": [1.0, 2.0]}, ax=ax) is fig
        assert len(ax.lines) == 1
    finally:
        plt.close(fig)


# --- per-timestep gradients ---------------------------------------------------------------------------

def test_heatmap_shows_the_profiles_on_a_log_colour_scale():
    profiles = np.outer(np.linspace(1, 2, 5), 0.5 ** np.arange(20)[::-1])  # (5 training steps, T = 20)
    profiles[1, 3] = 0.0
    profiles[2, 4] = np.nan
    fig = render(plots.plot_timestep_heatmap(torch.tensor(profiles), steps=[0, 10, 20, 30, 40]))
    ax = fig.axes[0]
    mesh = ax.collections[0]
    data = mesh.get_array()
    assert data.shape == profiles.shape
    assert data.mask[1, 3] and data.mask[2, 4]
    np.testing.assert_array_equal(data.filled(np.nan)[0], profiles[0])
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.norm.vmin == pytest.approx(profiles[profiles > 0].min())
    assert "time step" in ax.get_xlabel() and "training step" in ax.get_ylabel()
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel()  # the colour bar, labelled


def test_heatmap_rejects_bad_shapes():
    with pytest.raises(ValueError, match="profiles must be a non-empty 2-D array"):
        plots.plot_timestep_heatmap(np.ones(5))
    with pytest.raises(ValueError, match="steps has 2 entries but there are 3 rows of profiles"):
        plots.plot_timestep_heatmap(np.ones((3, 4)), steps=[0, 1])
    with pytest.raises(ValueError, match="no positive finite value"):
        plots.plot_timestep_heatmap(np.zeros((3, 4)))


def test_timestep_profiles_and_references():
    t = np.arange(1, 11)
    fig = render(plots.plot_timestep_profile({"ρ = 0.9": 0.9 ** (10 - t), "ρ = 1.1": 1.1 ** (10 - t)},
                                             references={"bound": 1.2 ** (10 - t)}))
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "time step" in ax.get_xlabel() and ax.get_ylabel()
    lines = {line.get_label(): line for line in ax.lines}
    np.testing.assert_allclose(lines["ρ = 1.1"].get_ydata(), 1.1 ** (10 - t))
    np.testing.assert_array_equal(lines["bound"].get_xdata(), t)
    with pytest.raises(ValueError, match="same length T"):
        plots.plot_timestep_profile({"a": np.ones(10)}, references={"b": np.ones(9)})


# --- the cliff figure --------------------------------------------------------------------------------

def test_cliff_figure_shows_the_surface_and_tells_the_trajectories_apart(default_surface):
    w, b, loss, grad_norm = default_surface
    plain = cliff.gradient_descent_trajectory(*cliff.DEMO_START, cliff.DEMO_LR, 10)
    clipped = cliff.gradient_descent_trajectory(*cliff.DEMO_START, cliff.DEMO_LR, 10, clip_norm=cliff.DEMO_CLIP)
    fig = render(plots.plot_loss_cliff(w, b, loss, grad_norm, {"plain": plain, "clipped": clipped.points}))
    loss_ax, grad_ax = fig.axes[:2]
    np.testing.assert_array_equal(loss_ax.collections[0].get_array(), loss)
    np.testing.assert_array_equal(grad_ax.collections[0].get_array(), grad_norm)
    assert isinstance(grad_ax.collections[0].norm, LogNorm)
    assert loss_ax.get_xlim() == (w[0], w[-1]) and loss_ax.get_ylim() == (b[0], b[-1])
    for ax in (loss_ax, grad_ax):
        assert "w" in ax.get_xlabel() and "b" in ax.get_ylabel()
        plain_line, clipped_line = ax.lines[:2]
        np.testing.assert_array_equal(plain_line.get_xdata(), plain.w)
        np.testing.assert_array_equal(clipped_line.get_ydata(), clipped.b)
        # distinguishable without colour
        assert plain_line.get_marker() != clipped_line.get_marker()
        assert plain_line.get_linestyle() != clipped_line.get_linestyle()


def test_cliff_figure_marks_a_diverged_trajectory():
    w, b = np.linspace(0, 1, 3), np.linspace(0, 1, 4)
    run = SimpleNamespace(w=np.array([0.2, 0.5]), b=np.array([0.3, 0.6]), diverged=True)
    fig = render(plots.plot_loss_cliff(w, b, np.ones((4, 3)), trajectories={"run": run}))
    ax = fig.axes[0]
    assert ax.lines[0].get_label() == "run (diverged)"
    assert ax.lines[1].get_marker() == plots.NONFINITE_MARKER
    assert list(ax.lines[1].get_xdata()) == [0.5]


def test_cliff_figure_rejects_a_transposed_surface():
    w, b = np.linspace(0, 1, 3), np.linspace(0, 1, 4)
    with pytest.raises(ValueError, match=r"loss must have shape \(len\(b\), len\(w\)\) = \(4, 3\), got \(3, 4\)"):
        plots.plot_loss_cliff(w, b, np.ones((3, 4)))
    with pytest.raises(ValueError, match="grad_norm must have shape"):
        plots.plot_loss_cliff(w, b, np.ones((4, 3)), np.ones((4, 4)))
    with pytest.raises(ValueError, match=r"trajectories\['t'\] must have shape \(n, >=2\)"):
        plots.plot_loss_cliff(w, b, np.ones((4, 3)), trajectories={"t": np.ones((5, 1))})


# --- spectral radius and comparisons -------------------------------------------------------------------

def test_spectral_radius_with_its_reference_line():
    steps = np.arange(0, 50, 10)
    rho = torch.tensor([0.9, 0.95, 1.0, 1.1, 1.2])
    fig = render(plots.plot_spectral_radius(steps, {"ρ": rho, "λ₁": rho + 0.1}))
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), rho.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(ax.lines[1].get_xdata(), steps)
    reference = ax.lines[2]
    assert set(reference.get_ydata()) == {1.0} and "1" in reference.get_label()
    assert ax.get_xlabel() and ax.get_ylabel()
    with pytest.raises(ValueError, match="has 4 entries but steps has 5"):
        plots.plot_spectral_radius(steps, np.ones(4))


def test_comparison_of_histories_as_mappings_and_objects():
    unclipped = {"loss": np.array([0.3, 0.2, np.inf]), "grad_norm": np.array([1.0, 1e6, np.nan])}
    clipped = SimpleNamespace(loss=[0.3, 0.2, 0.15, 0.1], grad_norm=torch.tensor([1.0, 1.0, 0.5, 0.2]),
                              baseline=1 / 6)
    fig = render(plots.plot_comparison({"unclipped": unclipped, "clipped": clipped}, baseline=1 / 6))
    loss_ax, grad_ax = fig.axes
    assert loss_ax.get_yscale() == "linear" and grad_ax.get_yscale() == "log"
    np.testing.assert_array_equal(loss_ax.lines[0].get_ydata(), [0.3, 0.2, np.nan])
    np.testing.assert_allclose(grad_ax.lines[-1].get_ydata(), [1.0, 1.0, 0.5, 0.2])
    baseline = next(line for line in loss_ax.lines if "baseline" in line.get_label())
    assert set(baseline.get_ydata()) == {1 / 6}
    assert any("non-finite" in line.get_label() for line in grad_ax.lines)
    for ax in fig.axes:
        assert ax.get_xlabel() == "training step" and ax.get_ylabel()


def test_comparison_takes_the_baseline_the_histories_carry():
    history = SimpleNamespace(loss=[0.3, 0.2], grad_norm=[1.0, 2.0], baseline=0.25)
    fig = plots.plot_comparison({"run": history})
    assert any(set(line.get_ydata()) == {0.25} for line in fig.axes[0].lines)


def test_comparison_explains_a_missing_metric():
    with pytest.raises(ValueError, match="history 'run' has no 'grad_norm' entry or attribute"):
        plots.plot_comparison({"run": {"loss": [1.0, 2.0]}})
    with pytest.raises(ValueError, match="axes must hold 2 axes"):
        plots.plot_comparison({"run": {"loss": [1.0], "grad_norm": [1.0]}}, axes=[plt.figure().gca()])
    plt.close("all")


def test_nothing_is_written_to_stderr(capfd, default_surface):
    w, b, loss, grad_norm = default_surface
    figures = [
        plots.plot_grad_norms({"a": [0.0, -1.0, 1.0, float("nan")]}, threshold=1.0),
        plots.plot_timestep_heatmap(np.array([[0.0, 1.0], [np.inf, 2.0]])),
        plots.plot_timestep_profile({"a": [0.0, 1e-30, 1.0]}),
        plots.plot_loss_cliff(w, b, loss, grad_norm),
        plots.plot_spectral_radius([0, 1], [0.5, float("nan")]),
        plots.plot_comparison({"a": {"loss": [1.0, float("nan")], "grad_norm": [0.0, 1.0]}}),
    ]
    for fig in figures:
        render(fig)
    assert capfd.readouterr().err == ""
