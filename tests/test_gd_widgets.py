"""labkit.gd_widgets, headless: the figures plot the runs they are given and the explorer follows its sliders."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import gd_widgets  # noqa: E402
from labkit.quadratic import Quadratic, growth_rate  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


def test_demo_quadratic_keeps_lambda_max_and_sets_the_condition_number():
    for kappa in (1.0, 10.0, 37.0):
        q = gd_widgets.demo_quadratic(kappa)
        assert q.lambda_max == pytest.approx(10.0) and q.condition_number == pytest.approx(kappa)
        assert q.critical_lr == pytest.approx(0.2)
    with pytest.raises(ValueError, match="condition"):
        gd_widgets.demo_quadratic(0.5)


def test_contour_figure_draws_the_run_and_reports_leaving_the_frame():
    q = gd_widgets.demo_quadratic()
    run = gd_widgets.demo_run(q, 0.05)
    ax = gd_widgets.plot_descent_on_contours(q, run).axes[0]
    path = next(line for line in ax.lines if line.get_label().startswith("gradient descent"))
    np.testing.assert_array_equal(path.get_xdata(), run.iterates[:, 0].numpy())
    assert "leaves the frame" not in path.get_label() and "monotone" in ax.get_title()
    diverging = gd_widgets.demo_run(q, 0.22)
    ax = gd_widgets.plot_descent_on_contours(q, diverging).axes[0]
    assert any("leaves the frame" in line.get_label() for line in ax.lines) and "diverging" in ax.get_title()
    with pytest.raises(ValueError, match="2-D"):
        gd_widgets.plot_descent_on_contours(Quadratic.from_eigenvalues([1.0, 2.0, 3.0]), run)


def test_eigen_component_figure_shows_measured_on_predicted():
    q = gd_widgets.demo_quadratic()
    run = gd_widgets.demo_run(q, 0.17)
    ax = gd_widgets.plot_eigen_components(q, run).axes[0]
    measured_top, predicted_top = ax.lines[0].get_ydata(), ax.lines[1].get_ydata()
    np.testing.assert_allclose(measured_top, predicted_top, atol=1e-12)
    # the steep component flips sign every step at 1/λ_max < η < 2/λ_max
    assert np.all(measured_top[1:] * measured_top[:-1] < 0)


def test_contraction_sweep_plots_the_measured_rates():
    q = gd_widgets.demo_quadratic()
    lrs = np.array([0.05, 0.15, 0.25])
    measured = [growth_rate(torch.linalg.vector_norm(gd_widgets.demo_run(q, lr, 80).iterates - q.minimizer, dim=1))
                for lr in lrs]
    ax = gd_widgets.plot_contraction_sweep(q, lrs, measured).axes[0]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), measured)
    np.testing.assert_allclose(measured, [q.contraction(lr) for lr in lrs], rtol=1e-6)
    with pytest.raises(ValueError, match="entries"):
        gd_widgets.plot_contraction_sweep(q, lrs, measured[:2])


def test_explorer_follows_its_sliders():
    explorer = gd_widgets.LearningRateExplorer()
    assert isinstance(explorer, ipywidgets.VBox) and explorer.output in explorer.children
    assert explorer.quadratic.regime(explorer.run.lr) == "oscillating"
    explorer.lr_slider.value = 0.22
    assert explorer.run.lr == pytest.approx(0.22) and explorer.quadratic.regime(0.22) == "diverging"
    explorer.condition_slider.value = 25.0
    assert explorer.quadratic.condition_number == pytest.approx(25.0)
    fig = explorer.figure()
    distance = torch.linalg.vector_norm(explorer.run.iterates - explorer.quadratic.minimizer, dim=1).numpy()
    np.testing.assert_allclose(fig.axes[1].lines[1].get_ydata(), distance)
    assert "diverging" in fig._suptitle.get_text()


def test_static_figure_equals_the_explorer_at_the_same_settings():
    explorer = gd_widgets.LearningRateExplorer(lr=0.08, condition=5.0)
    static = gd_widgets.LearningRateExplorer.static_figure(lr=0.08, condition=5.0)
    assert isinstance(static, Figure)
    np.testing.assert_array_equal(static.axes[1].lines[1].get_ydata(), explorer.figure().axes[1].lines[1].get_ydata())


def test_explorer_writes_nothing_to_stderr(capfd):
    explorer = gd_widgets.LearningRateExplorer()
    explorer.lr_slider.value = 0.25
    explorer.condition_slider.value = 50.0
    assert capfd.readouterr().err == ""
