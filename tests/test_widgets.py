"""labkit.widgets, headless: each explorer builds, reacts to its controls, and keeps the data it plots."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import widgets  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


# --- recurrent-weight explorer ------------------------------------------------------------------------

def test_recurrent_weight_explorer_follows_its_slider():
    explorer = widgets.RecurrentWeightExplorer(rho=0.8)
    assert isinstance(explorer, ipywidgets.VBox)
    assert explorer.rho_slider in explorer.children and explorer.output in explorer.children
    small = explorer.profile.copy()
    assert small.shape == (widgets.SEQ_LEN,) and small[-1] == 1.0
    explorer.rho_slider.value = 1.6
    large = explorer.profile
    # more gradient reaches every earlier step; at the earliest step by many orders of magnitude
    assert np.all(large[:-1] > small[:-1])
    assert large[0] > 1e6 * small[0]


@pytest.mark.parametrize("rho", [0.6, 1.0, 1.4, 2.0])
def test_profile_respects_the_bound_rho_to_the_power_T_minus_t(rho):
    profile = widgets.gradient_profile(rho)
    T = len(profile)
    bound = rho ** np.arange(T - 1, -1, -1.0)
    assert np.all(profile <= bound * (1 + 1e-9))
    if rho < 1:
        assert profile[0] < rho ** (T - 1)  # ρ < 1/γ: vanishing, at least as fast as the bound says


def test_recurrent_weight_figures_show_the_current_data():
    explorer = widgets.RecurrentWeightExplorer(rho=1.2)
    ax = explorer.figure().axes[0]
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), explorer.profile)
    assert ax.get_yscale() == "log" and "1/γ" in ax.get_title()
    assert any("bound" in line.get_label() for line in ax.lines)
    static = widgets.RecurrentWeightExplorer.static_figure(rho=1.2)
    assert isinstance(static, Figure)
    np.testing.assert_array_equal(static.axes[0].lines[0].get_ydata(), explorer.profile)


# --- cliff explorer ---------------------------------------------------------------------------------

def test_cliff_explorer_clips_every_step_to_lr_times_threshold():
    explorer = widgets.CliffExplorer()
    lr = explorer.lr_slider.value
    assert explorer.clipped.step_lengths.max() <= lr * explorer.clip_slider.value * (1 + 1e-9)
    assert explorer.unclipped.step_lengths.max() > 100 * lr * explorer.clip_slider.value
    explorer.clip_slider.value = 0.05
    assert explorer.clipped.clip_norm == pytest.approx(0.05)
    assert explorer.clipped.step_lengths.max() <= lr * 0.05 * (1 + 1e-9)


def test_cliff_explorer_reruns_both_descents_when_the_learning_rate_moves():
    explorer = widgets.CliffExplorer()
    before = explorer.unclipped
    explorer.lr_slider.value = 0.1
    assert explorer.unclipped is not before and explorer.unclipped.lr == pytest.approx(0.1)
    assert explorer.clipped.lr == pytest.approx(0.1)
    assert explorer.clipped.step_lengths.max() <= 0.1 * explorer.clip_slider.value * (1 + 1e-9)


def test_cliff_explorer_plots_its_trajectories_on_a_cached_surface():
    first, second = widgets.CliffExplorer(), widgets.CliffExplorer(clip_norm=0.5)
    fig = second.figure()
    surface_ax, steps_ax = fig.axes[0], fig.axes[1]
    np.testing.assert_array_equal(surface_ax.lines[1].get_xdata(), second.clipped.w)
    np.testing.assert_array_equal(steps_ax.lines[1].get_ydata(), second.clipped.step_lengths)
    threshold = next(line for line in steps_ax.lines if "η·τ" in line.get_label())
    np.testing.assert_allclose(threshold.get_ydata(), second.lr_slider.value * 0.5)
    # the loss surface is computed once and shared, not recomputed per explorer or per slider move
    w, b, loss = widgets._cliff_view_surface()
    assert widgets._cliff_view_surface()[2] is loss and not loss.flags.writeable
    np.testing.assert_array_equal(first.figure().axes[0].collections[0].get_array(), loss)
    assert isinstance(widgets.CliffExplorer.static_figure(), Figure)


# --- training dashboard -------------------------------------------------------------------------------

def run_fake_training(dashboard, losses, model):
    """Call the hooks in the order labkit.train does."""
    dashboard.on_train_begin(model, None)
    for step, loss in enumerate(losses):
        model.zero_grad()
        (model(torch.ones(1, 2)).sum() * loss).backward()
        dashboard.after_backward(step, model, torch.tensor(loss))
        dashboard.after_step(step, model)
    dashboard.on_train_end(None)


def test_dashboard_records_and_redraws_every_k_steps():
    model = torch.nn.Linear(2, 1)
    dashboard = widgets.TrainingDashboard(every=3, baseline=0.25)
    run_fake_training(dashboard, [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], model)
    assert dashboard.drawn_at == [3, 6, 8]  # after 3 and 6 steps, then the end
    assert dashboard.history["step"] == list(range(8))
    assert dashboard.history["loss"] == pytest.approx([1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    # the recorded norm is the global gradient norm of that step
    expected = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()])).item()
    assert dashboard.history["grad_norm"][-1] == pytest.approx(expected)
    fig = dashboard.figure()
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), dashboard.history["loss"])
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), dashboard.history["grad_norm"])
    assert any(set(line.get_ydata()) == {0.25} for line in fig.axes[0].lines)
    assert "step 7" in dashboard.status.value


def test_dashboard_keeps_a_non_finite_step():
    model = torch.nn.Linear(2, 1)
    dashboard = widgets.TrainingDashboard(every=10)
    run_fake_training(dashboard, [1.0, float("inf")], model)
    assert dashboard.drawn_at == [2]
    assert dashboard.history["loss"][1] == float("inf")
    assert not np.isfinite(dashboard.history["grad_norm"][1])
    assert any("non-finite" in line.get_label() for line in dashboard.figure().axes[0].lines)


def test_dashboard_as_a_labkit_train_callback():
    train = pytest.importorskip("labkit.train")
    from labkit.models import ElmanRNN
    from labkit.tasks import SequenceTask

    task = SequenceTask.adding(10)
    dashboard = widgets.TrainingDashboard(every=2)
    history = train.train(ElmanRNN(2, 8, 1), task, callbacks=[dashboard], steps=5, batch_size=4,
                           eval_every=0)
    assert dashboard.history["loss"] == pytest.approx(history.loss)
    assert dashboard.history["grad_norm"] == pytest.approx(history.grad_norm)
    assert dashboard.drawn_at == [2, 4, 5]
    assert dashboard.baseline == pytest.approx(task.baseline)


def test_dashboard_rejects_a_bad_interval():
    with pytest.raises(ValueError, match="every must be an int >= 1"):
        widgets.TrainingDashboard(every=0)


def test_explorers_write_nothing_to_stderr(capfd):
    explorer = widgets.CliffExplorer()
    explorer.clip_slider.value = 0.5
    widgets.RecurrentWeightExplorer().rho_slider.value = 0.5
    assert capfd.readouterr().err == ""
