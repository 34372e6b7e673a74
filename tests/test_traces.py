"""labkit.traces: synthetic runs whose ground truth an independent reader (ExplosionDetector) recovers, built so
that the classic wrong rules fail on them; the real scenario runs; conversion from a monitor's history."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from labkit.detector import ExplosionDetector
from labkit.models import ElmanRNN
from labkit.monitor import GradientMonitor
from labkit.tasks import SequenceTask
from labkit.traces import (FLOAT32_MAX, KINDS, GroundTruth, RecordedRun, from_monitor, mystery_runs, mystery_truth,
                           record_scenario, scaled_task, synthetic_run)
from labkit.train import train

DETECTOR = ExplosionDetector()
VARIANTS = [("healthy", {}), ("vanishing", {}), ("exploding", {}), ("exploding", {"early_spike": True}),
            ("exploding", {"fast_overflow": True})]


def diagnose(run: RecordedRun):
    return DETECTOR.diagnose(grad_norm=run.grad_norm, loss=run.loss, hidden_grad_norms=run.profiles,
                             timestep_steps=run.profile_steps)


def high_stretches(high: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], high.astype(int), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def mean_rule_first_step(norms: np.ndarray, window: int = 20) -> int | None:
    """The runaway rule with a running *mean* in place of the median (the mistake the early spike catches)."""
    high = np.zeros(len(norms), dtype=bool)
    for t in range(3, len(norms)):
        before = norms[max(0, t - window):t]
        before = before[np.isfinite(before)]
        high[t] = not np.isfinite(norms[t]) or norms[t] > 10 * before.mean()
    for start, stop in high_stretches(high):
        if stop - start >= 5 or not np.isfinite(norms[stop - 1]):
            return int(start)
    return None


@pytest.mark.parametrize("kind, options", VARIANTS)
def test_the_detector_recovers_the_ground_truth_of_every_synthetic_run(kind, options):
    for seed in range(60):
        run, truth = synthetic_run(kind, seed, **options)
        d = diagnose(run)
        assert (d.verdict, d.first_step) == (truth.verdict, truth.first_step), (kind, options, seed, str(d))


def test_a_fixed_threshold_of_one_gets_every_run_wrong():
    for seed in range(40):
        healthy, _ = synthetic_run("healthy", seed)
        assert healthy.grad_norm.min() > 1.0  # "above 1" all the time, and nothing is wrong
        exploding, truth = synthetic_run("exploding", seed)
        finite = exploding.grad_norm[np.isfinite(exploding.grad_norm)]
        assert finite[:truth.first_step + 1].max() < 1.0  # the first exploded step is still below 1
        assert exploding.grad_norm[:truth.first_step].max() < 1e-2


def test_an_exploding_run_ends_where_its_float32_loss_overflows():
    run, truth = synthetic_run("exploding", 3)
    assert math.isnan(run.grad_norm[-1]) and run.loss[-1] == math.inf
    assert np.isfinite(run.grad_norm[:-1]).all() and (run.loss[:-1] <= FLOAT32_MAX).all()
    assert run.profile_steps.max() < run.steps and run.steps > truth.first_step + 5


def test_a_fast_overflow_needs_the_nan_to_be_a_runaway():
    for seed in range(40):
        run, truth = synthetic_run("exploding", seed, fast_overflow=True)
        finite_high = run.steps - 1 - truth.first_step  # the exploded steps before the NaN
        assert 1 <= finite_high < 5, (seed, finite_high)
        ignoring_nan = replace(run, grad_norm=run.grad_norm[:-1], loss=run.loss[:-1],
                               profiles=run.profiles[run.profile_steps < run.steps - 1],
                               profile_steps=run.profile_steps[run.profile_steps < run.steps - 1])
        assert diagnose(ignoring_nan).verdict == "healthy"  # without the NaN, only a spike is left


def test_an_early_spike_hides_the_onset_from_a_running_mean():
    for seed in range(40):
        run, truth = synthetic_run("exploding", seed, early_spike=True)
        assert truth.first_step - 16 < 3 < truth.first_step - 7  # the spike is in the onset's window
        assert mean_rule_first_step(run.grad_norm) != truth.first_step, seed


def test_profiles_gain_the_drawn_decades_from_t_equal_one_and_underflow_to_zero():
    spans = {kind: [] for kind in KINDS}
    zeros = 0
    for seed in range(30):
        for kind in KINDS:
            run, _ = synthetic_run(kind, seed)
            t = np.arange(run.seq_len)
            for profile in run.profiles:
                keep = profile > 0
                spans[kind].append(np.polyfit(t[keep], np.log10(profile[keep]), 1)[0] * (run.seq_len - 1))
                zeros += int((~keep).sum())
    assert min(spans["vanishing"]) > 7 and max(spans["healthy"]) < 3 and max(spans["exploding"]) < 0
    assert min(spans["healthy"]) > -2 and min(spans["exploding"]) > -3.5
    assert zeros > 0  # some vanishing profiles underflow, as float32 ones do


def test_synthetic_runs_are_deterministic_and_read_only():
    a, truth_a = synthetic_run("vanishing", 7)
    b, truth_b = synthetic_run("vanishing", 7)
    np.testing.assert_array_equal(a.profiles, b.profiles)
    np.testing.assert_array_equal(a.grad_norm, b.grad_norm)
    assert truth_a == truth_b == GroundTruth("vanishing", 0)
    assert not np.array_equal(synthetic_run("vanishing", 8)[0].grad_norm, a.grad_norm)
    with pytest.raises(ValueError):
        a.grad_norm[0] = 1.0


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="kind"):
        synthetic_run("exploded", 0)
    with pytest.raises(ValueError, match="exploding"):
        synthetic_run("healthy", 0, early_spike=True)
    with pytest.raises(TypeError):
        synthetic_run("healthy", 1.5)
    with pytest.raises(ValueError, match="one value per step"):
        RecordedRun(np.ones(4), np.ones(3), np.ones((1, 5)), [0])
    with pytest.raises(ValueError, match="profile_steps"):
        RecordedRun(np.ones(4), np.ones(4), np.ones((1, 5)), [4])
    with pytest.raises(ValueError, match="negative"):
        RecordedRun(-np.ones(4), np.ones(4), np.ones((1, 5)), [0])
    with pytest.raises(ValueError, match="kind"):
        record_scenario("broken")
    with pytest.raises(ValueError, match="loss_scale"):
        record_scenario("exploding", loss_scale=0.0)


# ---------------------------------------------------------------------------------------------------
# Real runs
# ---------------------------------------------------------------------------------------------------

def test_scaled_task_multiplies_the_loss_and_every_gradient():
    task = SequenceTask.adding(10)
    big = scaled_task(task, 100.0)
    assert big.baseline == pytest.approx(100 * task.baseline)
    model = ElmanRNN(2, 8, 1, generator=torch.Generator().manual_seed(0))
    x, y = task.sample(16, torch.Generator().manual_seed(1))
    grads = []
    for t in (task, big):
        model.zero_grad()
        t.loss(model(x).outputs, y).backward()
        grads.append(model.weight_hh.grad.clone())
    torch.testing.assert_close(grads[1], 100 * grads[0], rtol=1e-5, atol=0)


def test_from_monitor_of_a_real_vanishing_run():
    recording = record_scenario("vanishing", seed=4, steps=6)
    run = from_monitor(recording.monitor, name="v")
    assert run.steps == 6 and run.seq_len == 100 and run.name == "v"
    np.testing.assert_array_equal(run.profile_steps, np.arange(6))
    np.testing.assert_allclose(run.grad_norm, recording.history.grad_norm, rtol=1e-6)
    assert diagnose(run).verdict == "vanishing"


def test_from_monitor_adds_the_step_a_non_finite_loss_stopped():
    # a run the loop stopped before backward: the monitor has no record of that step
    model = ElmanRNN(2, 8, 1, generator=torch.Generator().manual_seed(0))
    monitor = GradientMonitor(model, per_timestep=True)
    task = SequenceTask.adding(10)
    calls = {"n": 0}

    def loss_fn(out, y):  # finite for three steps, inf from the fourth on
        calls["n"] += 1
        return task.loss_fn(out, y) * (math.inf if calls["n"] > 3 else 1.0)

    history = train(model, replace(task, loss_fn=loss_fn), steps=10, batch_size=4, callbacks=[monitor])
    assert history.diverged.step == 3 and history.diverged.reason == "non-finite loss"
    run = from_monitor(monitor.history)
    assert run.steps == 4 and math.isnan(run.grad_norm[-1]) and math.isnan(run.loss[-1])
    assert DETECTOR.diagnose(grad_norm=run.grad_norm, loss=run.loss).first_step == 3


def test_from_monitor_needs_every_step_and_a_profile():
    model = ElmanRNN(2, 8, 1)
    monitor = GradientMonitor(model, every=2)
    train(model, SequenceTask.adding(5), steps=4, batch_size=4, callbacks=[monitor])
    with pytest.raises(ValueError, match="every"):
        from_monitor(monitor.history)
    monitor = GradientMonitor(model)
    train(model, SequenceTask.adding(5), steps=2, batch_size=4, callbacks=[monitor])
    with pytest.raises(ValueError, match="per_timestep"):
        from_monitor(monitor.history)
    with pytest.raises(TypeError):
        from_monitor({"grad_norm": [1.0]})


def test_mystery_runs_hold_one_run_of_each_kind_and_their_truth():
    for seed in (0, 5):
        runs, truth = mystery_runs(seed), mystery_truth(seed)
        assert list(runs) == list(truth) == ["A", "B", "C"]
        assert sorted(t.verdict for t in truth.values()) == sorted(KINDS)
        for label, run in runs.items():
            d = diagnose(run)
            assert (d.verdict, d.first_step) == (truth[label].verdict, truth[label].first_step)
            assert run.name == label
    assert [t.verdict for t in mystery_truth(0).values()] != [t.verdict for t in mystery_truth(5).values()]
