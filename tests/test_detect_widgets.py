"""labkit.detect_widgets: the loss scale changes the units and nothing else; the figure shows both rules."""
import numpy as np
import pytest

from labkit.detect_widgets import DetectionExplorer, detection_figure, detection_run


@pytest.fixture(scope="module")
def runs():
    return {c: detection_run(loss_scale=c, steps=12) for c in (1e-4, 1e-2, 1.0, 1e2)}


def test_the_loss_scale_multiplies_the_norms_and_leaves_the_detector_alone(runs):
    base = runs[1.0]
    for c, run in runs.items():
        # the same updates: step 0's gradient is exactly c times larger; later steps agree to float32 rounding
        assert run.history.global_grad_norm[0] == pytest.approx(c * base.history.global_grad_norm[0], rel=1e-5)
        np.testing.assert_allclose(run.history.global_grad_norm[:4] / c, base.history.global_grad_norm[:4],
                                   rtol=1e-3)
        assert (run.diagnosis.verdict, run.diagnosis.first_step) == ("exploding", base.diagnosis.first_step)
    assert runs[1e-4].first_above(1.0) > runs[1e2].first_above(1.0) == 0  # the fixed rule moves with c


def test_the_alarm_level_is_spike_factor_times_the_running_median(runs):
    run = runs[1.0]
    norms = run.history.global_grad_norm
    for t in range(3, len(norms)):
        before = norms[max(0, t - 20):t]
        assert run.alarm_level[t] == pytest.approx(run.spike_factor * np.median(before[np.isfinite(before)]))
    assert np.isnan(run.alarm_level[:3]).all()


def test_first_above_counts_a_non_finite_norm(runs):
    norms = runs[1.0].history.global_grad_norm
    assert runs[1.0].first_above(1e-9) == 0
    bad = ~np.isfinite(norms)
    assert runs[1.0].first_above(1e300) == (int(np.argmax(bad)) if bad.any() else None)
    with pytest.raises(ValueError):
        runs[1.0].first_above(-1.0)


def test_a_small_spectral_radius_is_vanishing_and_the_figure_says_which_rule_fired():
    run = detection_run(spectral_radius=0.5, steps=6)
    assert run.diagnosis.verdict == "vanishing"
    fig = detection_figure(run, threshold=0.5)
    assert "vanishing" in fig.texts[0].get_text() and "0.5" in fig.texts[0].get_text()
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert any("alarm level" in label for label in labels)


def test_the_explorer_reruns_on_its_sliders_and_writes_nothing_to_stderr(capfd):
    explorer = DetectionExplorer(steps=5)
    first = explorer.run
    explorer.scale_slider.value = 100.0
    assert explorer.run is not first and explorer.run.loss_scale == pytest.approx(100.0)
    rerun = explorer.run
    explorer.threshold_slider.value = 10.0  # only redraws
    assert explorer.run is rerun
    assert capfd.readouterr().err == ""


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="spectral_radius"):
        detection_run(spectral_radius=0.0)
    with pytest.raises(ValueError, match="loss_scale"):
        detection_run(loss_scale=-1.0)
    with pytest.raises(ValueError, match="threshold"):
        detection_figure(detection_run(steps=2), threshold=0.0)
