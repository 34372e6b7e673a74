"""labkit.field_guide: the settings, the fix ladder, and the hand-made loop that equals labkit.train's."""
import math
from dataclasses import replace

import pytest
import torch

from labkit import field_guide as fg
from labkit.models import LSTM, ElmanRNN
from labkit.train import Divergence, TrainingHistory

SHORT = replace(fg.BROKEN, steps=12, seq_len=5, hidden_size=8, batch_size=8)


def test_settings_reject_bad_values():
    with pytest.raises(ValueError, match="cell"):
        fg.RunSettings(cell="gru")
    with pytest.raises(ValueError, match="lr"):
        fg.RunSettings(lr=0.0)
    with pytest.raises(TypeError, match="steps"):
        fg.RunSettings(steps=1.5)
    with pytest.raises(ValueError, match="clip_norm"):
        fg.RunSettings(clip_norm=-1.0)
    with pytest.raises(ValueError, match="optimizer"):
        fg.RunSettings(optimizer="lbfgs")


def test_the_broken_model_starts_where_the_chapter_says():
    model = fg.build_model(fg.BROKEN, seed=0)
    assert isinstance(model, ElmanRNN) and model.nonlinearity == "tanh"
    assert fg.recurrent_spectral_radius(model) == pytest.approx(3.0, rel=1e-5)
    assert isinstance(fg.build_model(fg.RunSettings(), seed=0), LSTM)
    # the seed decides the weights
    a, b = fg.build_model(fg.BROKEN, 1), fg.build_model(fg.BROKEN, 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(TypeError):
        fg.build_model({"cell": "rnn"})


def test_the_ladder_applies_the_fixes_cumulatively_in_order():
    rungs = fg.ladder()
    assert [label for label, _ in rungs] == ["broken", "+ clip", "+ init", "+ adam", "+ lstm"]
    assert rungs[0][1] == fg.BROKEN
    for (_, before), (label, after), change in zip(rungs, rungs[1:], fg.FIXES.values()):
        assert after.changes_from(before) == {k: (getattr(before, k), v) for k, v in change.items()}, label
    assert rungs[-1][1] == fg.apply_fixes(fg.FIXES)
    # the order given does not matter, the names do
    assert fg.apply_fixes(["adam", "clip"]) == fg.apply_fixes(["clip", "adam"])
    assert fg.apply_fixes([]) == fg.BROKEN
    with pytest.raises(ValueError, match="unknown fix"):
        fg.apply_fixes(["dropout"])
    with pytest.raises(TypeError):
        fg.apply_fixes("clip")


def _reference_step(model, optimizer, x, y, loss_fn, max_norm):
    """The same update through torch's own clipping, as an independent reference."""
    optimizer.zero_grad()
    loss = loss_fn(model(x).outputs, y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf if max_norm is None else max_norm)
    optimizer.step()
    return loss.item(), norm.item()


@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_train_step_clips_before_the_step_like_torch(max_norm):
    task = fg.task_of(SHORT)
    x, y = task.sample(8, torch.Generator().manual_seed(3))
    ours, theirs = fg.build_model(SHORT, 2), fg.build_model(SHORT, 2)
    got = fg.train_step(ours, torch.optim.SGD(ours.parameters(), lr=0.5), x, y, task.loss, max_norm)
    want = _reference_step(theirs, torch.optim.SGD(theirs.parameters(), lr=0.5), x, y, task.loss, max_norm)
    assert got == pytest.approx(want, rel=1e-6)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q)
    if max_norm is not None:  # the step is at most η·τ long
        start = fg.build_model(SHORT, 2)
        moved = torch.cat([(p - q).flatten() for p, q in zip(ours.parameters(), start.parameters())]).norm()
        assert moved.item() == pytest.approx(0.5 * max_norm, rel=1e-4)


def test_run_with_step_equals_labkit_train():
    settings = replace(fg.apply_fixes(["clip", "init", "adam"]), steps=20, seq_len=5, hidden_size=8)
    by_train, by_hand = fg.run(settings, seed=1), fg.run_with_step(settings, seed=1)
    assert by_hand.loss == pytest.approx(by_train.loss, rel=1e-6)
    assert by_hand.grad_norm == pytest.approx(by_train.grad_norm, rel=1e-5)
    assert by_hand.clipped == by_train.clipped
    assert [s for s, _ in by_hand.evals] == [s for s, _ in by_train.evals]
    assert [v for _, v in by_hand.evals] == pytest.approx([v for _, v in by_train.evals], rel=1e-6)


def test_a_diverging_run_stops_with_a_record_and_never_raises():
    broken = replace(fg.BROKEN, steps=60)  # it overflows within about 30 steps
    for history in (fg.run(broken, seed=0), fg.run_with_step(broken, seed=0)):
        summary = fg.summarize(history)
        assert isinstance(history.diverged, Divergence)
        assert summary.diverged_at == history.diverged.step and math.isinf(summary.final_loss)
        assert not summary.reached_target and summary.steps_to_target is None


def test_run_with_step_rejects_a_non_function_and_passes_what_the_step_needs():
    with pytest.raises(TypeError, match="step_fn"):
        fg.run_with_step(SHORT, step_fn="train_step")
    seen = []

    def spy(model, optimizer, x, y, loss_fn, max_norm):
        seen.append((type(optimizer).__name__, tuple(x.shape), max_norm))
        return 0.5, 1.0

    settings = replace(SHORT, steps=3, clip_norm=2.0, optimizer="adam", lr=1e-3)
    history = fg.run_with_step(settings, spy, seed=0)
    assert seen == [("Adam", (8, 5, 2), 2.0)] * 3
    assert history.loss == [0.5] * 3 and history.clipped == [False] * 3


def test_summarize_reads_the_numbers_of_the_table():
    history = TrainingHistory(loss=[1.0, 0.5, 0.1], grad_norm=[3.0, float("nan"), 2.0], clipped=[True, False, True],
                              evals=[(0, 0.9), (10, 0.01), (20, 0.015)])
    summary = fg.summarize(history, target=0.02)
    assert summary.final_loss == 0.015 and summary.steps_to_target == 10 and summary.reached_target
    assert summary.max_grad_norm == 3.0 and summary.clipped_fraction == pytest.approx(2 / 3)
    assert fg.summarize(history, target=0.005).steps_to_target is None
    with pytest.raises(TypeError):
        fg.summarize({"loss": []})
    with pytest.raises(ValueError):
        fg.summarize(history, target=-1.0)


def test_changes_from_lists_exactly_the_differences():
    assert fg.BROKEN.changes_from(fg.BROKEN) == {}
    assert replace(fg.BROKEN, lr=0.01).changes_from(fg.BROKEN) == {"lr": (0.1, 0.01)}
    with pytest.raises(TypeError):
        fg.BROKEN.changes_from({"lr": 0.1})
