"""labkit.clip_study: the exploding-RNN setup, the learning-rate × threshold grid and its heat map."""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import clip_study  # noqa: E402
from labkit.clip_study import ExplodingRNN, GridResult, final_held_out_loss, lr_threshold_grid  # noqa: E402
from labkit.tasks import SequenceTask  # noqa: E402
from labkit.train import Divergence, TrainingHistory, train  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")

TINY = ExplodingRNN(hidden_size=6, batch_size=8, steps=6, eval_batch_size=16)


def test_model_starts_with_every_singular_value_equal_to_the_gain():
    setup = ExplodingRNN(hidden_size=12, gain=1.3)
    model = setup.model(seed=3)
    singular_values = torch.linalg.svdvals(model.weight_hh.detach().double())
    assert torch.allclose(singular_values, torch.full((12,), 1.3, dtype=torch.float64), atol=1e-5)
    assert model.nonlinearity == "tanh" and model.input_size == 2 and model.readout.out_features == 1


def test_model_is_a_function_of_the_seed():
    a, b, c = TINY.model(0), TINY.model(0), TINY.model(1)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(a.weight_hh, c.weight_hh)


def test_task_is_the_adding_problem_with_baseline_one_sixth():
    task = ExplodingRNN(seq_len=7).task()
    assert task.seq_len == 7 and task.input_size == 2 and task.baseline == pytest.approx(1 / 6)


def test_run_is_labkit_train_with_sgd_the_seed_and_the_setup():
    history = TINY.run(seed=2, clip_norm=0.5)
    reference = train(TINY.model(2), SequenceTask.adding(TINY.seq_len), optimizer="sgd", lr=TINY.lr,
                      steps=TINY.steps, batch_size=TINY.batch_size, clip_norm=0.5, seed=2,
                      eval_every=TINY.steps, eval_batch_size=TINY.eval_batch_size)
    assert history.loss == reference.loss and history.grad_norm == reference.grad_norm
    assert history.evals == reference.evals and [s for s, _ in history.evals] == [0, TINY.steps]
    assert history.config.optimizer == "sgd" and history.config.clip_norm == 0.5


def test_run_overrides_lr_steps_and_eval_every():
    history = TINY.run(seed=0, clip_norm=None, lr=0.01, steps=4, eval_every=2)
    assert history.config.lr == 0.01 and history.steps_completed == 4
    assert [s for s, _ in history.evals] == [0, 2, 4]
    assert not any(history.clipped)


def test_plain_sgd_at_a_huge_learning_rate_diverges_with_a_record():
    history = TINY.run(seed=0, clip_norm=None, lr=1e6, steps=50)
    assert isinstance(history.diverged, Divergence)
    assert math.isnan(final_held_out_loss(history))


def test_final_held_out_loss_reads_the_last_evaluation_only_at_the_end():
    finished = TrainingHistory(evals=[(0, 1.0), (10, 0.25)], steps_completed=10)
    assert final_held_out_loss(finished) == 0.25
    not_at_end = TrainingHistory(evals=[(0, 1.0)], steps_completed=10)
    assert math.isnan(final_held_out_loss(not_at_end))
    diverged = TrainingHistory(evals=[(0, 1.0), (10, 0.5)], steps_completed=10,
                               diverged=Divergence(10, "non-finite loss", 0.5, 9))
    assert math.isnan(final_held_out_loss(diverged))
    assert math.isnan(final_held_out_loss(TrainingHistory()))


@pytest.mark.parametrize("field, value, error", [
    ("hidden_size", 0, ValueError), ("gain", -1.0, ValueError), ("lr", 0.0, ValueError),
    ("clip_norm", math.inf, ValueError), ("steps", 2.5, TypeError), ("seq_len", 1, ValueError),
])
def test_setup_rejects_bad_values(field, value, error):
    with pytest.raises(error, match=field):
        ExplodingRNN(**{field: value})


def test_grid_runs_every_pair_from_the_same_start():
    grid = lr_threshold_grid(TINY, [0.05, 0.2], [0.5, None], steps=5)
    assert isinstance(grid, GridResult)
    assert grid.lrs == (0.05, 0.2) and grid.thresholds == (0.5, None)
    assert grid.final_loss.shape == grid.diverged_at.shape == (2, 2)
    assert grid.baseline == pytest.approx(1 / 6)
    for i, lr in enumerate(grid.lrs):
        for j, tau in enumerate(grid.thresholds):
            alone = TINY.run(0, tau, lr=lr, steps=5)
            assert grid.histories[i][j].loss == alone.loss
            assert grid.final_loss[i, j] == final_held_out_loss(alone)
    # same weights, same first batch: the first loss is the same in every cell
    assert len({h.loss[0] for row in grid.histories for h in row}) == 1


def test_grid_marks_diverged_runs():
    grid = lr_threshold_grid(TINY, [1e6], [None, 1e-3], steps=30)
    assert grid.diverged_at[0, 0] >= 0 and math.isnan(grid.final_loss[0, 0])
    assert grid.diverged_at[0, 1] == -1 and np.isfinite(grid.final_loss[0, 1])


@pytest.mark.parametrize("lrs, thresholds, error", [
    ([], [1.0], TypeError), ([0.1], [], TypeError), ("0.1", [1.0], TypeError),
    ([0.0], [1.0], ValueError), ([0.1], [-1.0], ValueError), ([0.1], [math.nan], ValueError),
])
def test_grid_rejects_bad_axes(lrs, thresholds, error):
    with pytest.raises(error):
        lr_threshold_grid(TINY, lrs, thresholds, steps=1)


def test_heat_map_masks_diverged_cells_and_labels_every_cell():
    final = np.array([[0.1, np.nan], [0.5, 0.2]])
    grid = GridResult((0.1, 0.4), (1.0, None), final, np.array([[-1, 7], [-1, -1]]), 1 / 6, ((), ()))
    fig = clip_study.plot_lr_threshold_grid(grid)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    mesh = ax.collections[0].get_array()
    assert mesh.mask[0, 1] and not mesh.mask[0, 0]
    assert mesh[1, 0] == pytest.approx(0.5 * 6)
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 4 and "✕\nstep 7" in texts and "0.1" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "none"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.1", "0.4"]


def test_heat_map_draws_into_a_given_axes():
    from labkit.plots import course_subplots

    fig, axes = course_subplots(1, 2)
    grid = GridResult((0.1,), (None,), np.array([[0.2]]), np.array([[-1]]), 1 / 6, ((),))
    assert clip_study.plot_lr_threshold_grid(grid, ax=axes[0, 1]) is fig
    assert axes[0, 1].collections and not axes[0, 0].collections
