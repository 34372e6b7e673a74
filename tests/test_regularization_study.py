"""labkit.regularization_study: runs with a weight penalty, λ₁(W_hh) tracked, checked against independent references."""
import math

import numpy as np
import pytest
import torch

from labkit.clip_study import ExplodingRNN
from labkit.regularization_study import (SingularValueTracker, plot_singular_value_trajectories, regularized_run,
                                         strength_sweep)
from labkit.train import train

TINY = ExplodingRNN(seq_len=4, hidden_size=6, batch_size=8, steps=15, eval_batch_size=16)


def test_the_tracker_records_the_largest_singular_value_before_training_and_every_few_steps():
    tracker = SingularValueTracker(every=5)
    model = TINY.model(0)
    seen = []

    class Snapshot:
        def after_step(self, step, model):
            seen.append(model.weight_hh.detach().double().clone())

    train(model, TINY.task(), optimizer="sgd", lr=0.01, steps=10, batch_size=8, callbacks=[Snapshot(), tracker])
    assert tracker.steps == [0, 5, 10]
    assert tracker.sigma_max[0] == pytest.approx(TINY.gain, rel=1e-6)  # gain × orthogonal: every singular value = gain
    for recorded, step in zip(tracker.sigma_max[1:], (5, 10)):
        assert recorded == pytest.approx(torch.linalg.svdvals(seen[step - 1])[0].item(), rel=1e-12)
    assert tracker.frobenius[-1] == pytest.approx(seen[-1].pow(2).sum().sqrt().item(), rel=1e-12)


def test_no_penalty_is_chapter_6s_run():
    run = regularized_run(TINY, 0.0, seed=1, clip_norm=1.0)
    reference = TINY.run(1, 1.0)
    np.testing.assert_array_equal(run.history.loss, reference.loss)
    assert run.history.penalty == [0.0] * TINY.steps
    assert run.final_loss == pytest.approx(reference.evals[-1][1])


def test_the_l2_penalty_under_sgd_is_weight_decay_on_the_weights():
    lam = 0.5
    run = regularized_run(TINY, lam, seed=2, clip_norm=None)

    def sgd_with_decay(params):
        model_params = dict(model.named_parameters())
        weights = [p for n, p in model_params.items() if "bias" not in n]
        biases = [p for n, p in model_params.items() if "bias" in n]
        return torch.optim.SGD([{"params": weights, "weight_decay": lam}, {"params": biases}], lr=TINY.lr)

    model = TINY.model(2)
    reference = train(model, TINY.task(), optimizer=sgd_with_decay, steps=TINY.steps, batch_size=TINY.batch_size, seed=2)
    np.testing.assert_allclose(run.history.loss, reference.loss, rtol=1e-4)
    assert run.sigma_max[-1] == pytest.approx(torch.linalg.matrix_norm(model.weight_hh.detach().double(), ord=2).item(),
                                              rel=1e-4)


def test_the_l1_run_records_lambda_times_the_absolute_weights():
    run = regularized_run(TINY, 0.01, penalty="l1", seed=0, steps=3)
    model = TINY.model(0)
    by_hand = 0.01 * sum(p.abs().sum().item() for n, p in model.named_parameters() if "bias" not in n)
    assert run.history.penalty[0] == pytest.approx(by_hand, rel=1e-6)


def test_a_diverging_run_is_recorded_not_raised():
    run = regularized_run(ExplodingRNN(seq_len=10, hidden_size=32, batch_size=64, steps=60), 1e-2, seed=0)
    assert run.diverged and math.isnan(run.final_loss)
    assert len(run.sigma_max) == run.history.steps_completed + 1
    assert np.isfinite(run.sigma_max).all()


def test_the_sweep_summarises_each_run():
    sweep = strength_sweep(TINY, (0.0, 0.1, 1.0), seeds=(0, 1), clip_norm=1.0, every=5)
    assert sweep.final_sigma_max.shape == sweep.peak_sigma_max.shape == sweep.final_loss.shape == (3, 2)
    for i, row in enumerate(sweep.runs):
        for j, run in enumerate(row):
            assert (run.strength, run.seed) == (sweep.strengths[i], sweep.seeds[j])
            assert sweep.final_sigma_max[i, j] == run.sigma_max[-1] <= sweep.peak_sigma_max[i, j]
    assert (sweep.diverged_at == -1).all()
    assert sweep.baseline == pytest.approx(1 / 6)


@pytest.mark.parametrize("kwargs, error", [
    ({"strength": -0.1}, ValueError),
    ({"strength": float("nan")}, ValueError),
    ({"strength": "0.1"}, TypeError),
    ({"strength": 0.1, "penalty": "l3"}, ValueError),
    ({"strength": 0.1, "clip_norm": 0.0}, ValueError),
    ({"strength": 0.1, "every": 0}, ValueError),
])
def test_bad_arguments_are_refused(kwargs, error):
    with pytest.raises(error):
        regularized_run(TINY, **kwargs)


def test_bad_sweeps_are_refused():
    with pytest.raises(TypeError):
        strength_sweep(TINY, ())
    with pytest.raises(TypeError):
        strength_sweep(TINY, (0.1,), seeds=3)


def test_the_plot_draws_one_line_per_run_a_cross_for_a_divergence_and_the_line_at_one():
    calm = regularized_run(TINY, 0.0, seed=0, clip_norm=1.0)
    blown = regularized_run(ExplodingRNN(seq_len=10, hidden_size=32, batch_size=64, steps=60), 0.0, seed=0)
    fig = plot_singular_value_trajectories({"calm": calm, "blown": blown})
    ax = fig.axes[0]
    assert len(ax.lines) == 4  # calm, blown, the ✕ where blown ended, the line y = 1
    assert [ax.lines[0].get_label(), ax.lines[1].get_label()] == ["calm", "blown"]
    assert ax.lines[2].get_marker() == "X" and ax.lines[2].get_xdata()[0] == blown.steps[-1]
    assert ax.lines[-1].get_ydata()[0] == 1.0
    assert ax.get_yscale() == "log"  # λ₁ spans decades in the blown-up run
    assert plot_singular_value_trajectories({"calm": calm}).axes[0].get_yscale() == "linear"
    with pytest.raises(TypeError):
        plot_singular_value_trajectories({"calm": calm.history})
    with pytest.raises(TypeError):
        plot_singular_value_trajectories({})
