"""The claims of chapter 5 (book/05_detecting_explosion.md), checked at the chapter's settings.

The chapter trains labkit.traces' three scenarios with seed SEED, and the healthy one again with the loss
multiplied by 100; these tests train the same runs and check what the text says about them.
"""
import contextlib
import io
import re
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labkit.detect_widgets import detection_run
from labkit.detector import ExplosionDetector, profile_span
from labkit.models import LSTM
from labkit.tasks import SequenceTask
from labkit.traces import KINDS, record_scenario

CHAPTER = Path(__file__).resolve().parents[1] / "book" / "05_detecting_explosion.md"
SEED = 2
DETECTOR = ExplosionDetector()


def test_the_chapter_uses_these_settings():
    text = CHAPTER.read_text()
    assert re.search(rf"^SEED = {SEED}\b", text, flags=re.M)
    assert 'record_scenario("healthy", seed=SEED, loss_scale=100.0)' in text


@pytest.fixture(scope="module")
def runs():
    recorded = {kind: record_scenario(kind, seed=SEED) for kind in KINDS}
    recorded["scaled"] = record_scenario("healthy", seed=SEED, loss_scale=100.0)
    return recorded


def test_each_run_gets_the_diagnosis_theory_predicts(runs):
    assert DETECTOR.diagnose(runs["exploding"].monitor).verdict == "exploding"
    assert DETECTOR.diagnose(runs["vanishing"].monitor).verdict == "vanishing"
    for kind in ("healthy", "scaled"):
        d = DETECTOR.diagnose(runs[kind].monitor)
        assert d.verdict == "healthy" and not [f for f in d.evidence if f.points_to], str(d)


def test_the_symptoms_appear_in_order_and_the_nan_comes_last(runs):
    d = DETECTOR.diagnose(runs["exploding"].monitor)
    first = {}
    for f in d.evidence:
        if f.points_to == "exploding":
            first.setdefault("gradient norm" if f.rule.startswith("norm") else f.rule, f.step)
    assert first["gradient norm"] <= first["weight-runaway"] <= first["update-runaway"] < first["non-finite"]
    assert first["non-finite"] - first["gradient norm"] >= 10  # "lost for many steps"
    stop = runs["exploding"].history.diverged
    assert stop is not None and stop.step == first["non-finite"]
    assert stop.last_finite_loss > 1e30  # finite, absurd


def test_poor_loss_vanishing_at_the_baseline_healthy_well_below(runs):
    baseline = 1 / 6
    vanishing = np.array(runs["vanishing"].history.loss)
    assert 0.8 * baseline < vanishing[-20:].mean() < 1.3 * baseline
    healthy = np.array(runs["healthy"].history.loss)
    assert healthy[-20:].mean() < baseline / 4
    assert healthy[:200].mean() > 0.8 * baseline  # the plateau the profile discussion refers to


def test_weights_grow_in_healthy_runs_too_but_not_a_thousandfold(runs):
    healthy = runs["healthy"].monitor.global_weight_norm
    assert 1.2 < healthy[-1] / healthy[0] < 10
    exploding = runs["exploding"].monitor.global_weight_norm
    assert exploding[-1] / exploding[0] > 1e10


def test_loss_times_100_scales_the_norm_100_fold_and_changes_nothing_else(runs):
    plain, scaled = runs["healthy"].monitor, runs["scaled"].monitor
    ratio = scaled.global_grad_norm / plain.global_grad_norm
    agree = int(np.argmin(np.abs(ratio / 100 - 1) < 0.02))
    assert plain.steps[agree - 1] >= 150  # the same run in other units for at least half the training
    np.testing.assert_allclose(ratio[:agree], 100, rtol=0.02)
    np.testing.assert_allclose(scaled.global_update_ratio[:agree], plain.global_update_ratio[:agree], rtol=0.01)
    assert np.median(scaled.global_grad_norm) > 10 > 1 > np.median(plain.global_grad_norm)
    assert scaled.global_grad_norm.max() > runs["exploding"].monitor.global_grad_norm[0]
    # the relative rule sees the same run: its ratios agree where the runs do
    r_plain = DETECTOR.ratio_to_running_median(plain.global_grad_norm)
    r_scaled = DETECTOR.ratio_to_running_median(scaled.global_grad_norm)
    np.testing.assert_allclose(r_scaled[:agree], r_plain[:agree], rtol=0.05)
    assert np.nanmax(r_scaled) < 10 and np.nanmax(r_plain) < 10


def test_the_profile_obeys_the_singular_value_bound_and_separates_the_failures(runs):
    # at step 0, W_hh = 0.5 · orthogonal: ‖∂L/∂h_t‖ ≤ 0.5^(T−t) ‖∂L/∂h_T‖ (tanh: γ = 1)
    profile = runs["vanishing"].monitor.hidden_grad_norms[0]
    T = len(profile)
    bound = 0.5 ** (T - np.arange(1, T + 1)) * profile[-1]
    assert np.all(profile <= bound * (1 + 1e-4))
    spans = {kind: profile_span(runs[kind].monitor.hidden_grad_norms[0]) for kind in KINDS}
    assert spans["vanishing"] > 40 and spans["exploding"] < -1 and 0 < spans["healthy"] < 4
    assert profile_span(profile[::-1]) == pytest.approx(-spans["vanishing"])  # backwards: "exploding"
    healthy = [profile_span(p) for p in runs["healthy"].monitor.hidden_grad_norms]
    assert 1 < np.nanmax(healthy) < 4  # close to the threshold, not over it


def test_after_the_explosion_w_hh_freezes_and_the_readout_diverges_like_gradient_descent(runs):
    h = runs["exploding"].monitor
    assert np.all(h.update_ratio["weight_hh"][-10:] == 0)  # saturated: tanh' rounds to 0
    # the heatmap's grey cells: exact zeros, but for the last column, which overflows to inf late in the run
    profiles = h.hidden_grad_norms
    assert np.all(profiles[-10:, :-1] == 0) and np.all(np.isinf(profiles[-10:, -1]))
    assert np.all(np.isfinite(profiles[:, :-1]))
    readout = h.weight_norm["readout.weight"]
    growth = readout[-10:] / readout[-11:-1]
    update = h.update_ratio["readout.weight"][-11:-1]
    np.testing.assert_allclose(growth, update - 1, rtol=1e-3)  # |1 − ηλ| = ηλ − 1
    assert np.all(update > 2)


def test_update_ratio_measured_values(runs):
    healthy = np.nanmedian(runs["healthy"].monitor.global_update_ratio)
    assert 1e-3 < healthy < 2e-2  # near the rule of thumb, a little above it
    assert np.nanmedian(runs["scaled"].monitor.global_update_ratio) == pytest.approx(healthy, rel=0.02)
    assert np.nanmedian(runs["exploding"].monitor.global_update_ratio) > 1


class PairDistance(nn.Module):
    """The chapter's example: sqrt(Σ (f(a) − f(b))²), NaN gradient at a duplicate pair."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 3)

    def forward(self, a, b):
        diff = self.embed(a) - self.embed(b)
        return torch.sqrt((diff ** 2).sum(dim=-1))


def pair_batch():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(8, 3, generator=gen)
    b = a + 0.5 * torch.randn(8, 3, generator=gen)
    b[3] = a[3]
    return a, b, torch.rand(8, generator=gen)


def test_a_finite_loss_with_a_nan_gradient_makes_the_next_loss_nan():
    torch.manual_seed(0)
    model, (a, b, target) = PairDistance(), pair_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses, norms = [], []
    for _ in range(2):
        opt.zero_grad()
        loss = ((model(a, b) - target) ** 2).mean()
        loss.backward()
        norms.append(nn.utils.clip_grad_norm_(model.parameters(), float("inf")).item())
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses[0]) and np.isnan(norms[0]) and np.isnan(losses[1])


def test_detect_anomaly_names_the_backward_op_and_nothing_reaches_stderr(capfd):
    torch.manual_seed(0)
    model, (a, b, target) = PairDistance(), pair_batch()
    stderr = io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stderr(stderr):
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match="Function 'PowBackward0' returned nan values"):
            with torch.autograd.detect_anomaly():
                ((model(a, b) - target) ** 2).mean().backward()
    stack = [str(w.message) for w in caught if "Traceback of forward call" in str(w.message)]
    assert stack and "torch.sqrt((diff ** 2).sum(dim=-1))" in stack[0]
    assert stderr.getvalue() == "" and capfd.readouterr().err == ""


def test_vector_norm_has_a_gradient_at_zero():
    model, (a, b, target) = PairDistance(), pair_batch()
    distance = torch.linalg.vector_norm(model.embed(a) - model.embed(b), dim=-1)
    ((distance - target) ** 2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_anomaly_mode_slows_a_training_step_down():
    task = SequenceTask.adding(20)
    model = LSTM(2, 32, 1, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = task.sample(64, torch.Generator().manual_seed(0))

    def seconds(anomaly: bool) -> float:
        best = float("inf")
        for _ in range(5):  # the fastest of a few repeats: the least disturbed by other work
            start = time.perf_counter()
            with torch.autograd.detect_anomaly() if anomaly else contextlib.nullcontext():
                opt.zero_grad()
                task.loss(model(x).outputs, y).backward()
                opt.step()
            best = min(best, time.perf_counter() - start)
        return best

    seconds(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert seconds(True) > 1.2 * seconds(False)  # measurably slower; the chapter prints the factor


def test_clip_grad_norm_raises_on_a_non_finite_norm_or_spreads_it_silently():
    weight, bias = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(2))
    weight.grad, bias.grad = torch.tensor([1.0, float("inf")]), torch.tensor([0.5, -0.5])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([weight, bias], 1.0, error_if_nonfinite=True)
    norm = nn.utils.clip_grad_norm_([weight, bias], 1.0)
    assert norm.item() == float("inf")
    assert weight.grad[0] == 0 and torch.isnan(weight.grad[1]) and torch.all(bias.grad == 0)


def test_the_explorer_table_the_detector_ignores_the_units_the_fixed_rule_does_not():
    runs = {c: detection_run(loss_scale=c) for c in (1e-4, 1e-2, 1.0, 1e2)}
    assert {(r.diagnosis.verdict, r.diagnosis.first_step) for r in runs.values()} == {("exploding", 4)}
    fixed = [r.first_above(1.0) for r in runs.values()]
    assert fixed[0] > 0 and fixed[1:] == [0, 0, 0]


def test_try_it_a_running_mean_sees_the_explosion_later_than_the_median():
    norms = np.full(30, 1e-3)
    norms[3] = 10.0
    norms[12:] = 0.1 * 3.0 ** np.arange(18)
    after = np.arange(30) > 3
    median_ratio = DETECTOR.ratio_to_running_median(norms)
    mean_ratio = np.array([norms[t] / norms[max(0, t - 20):t].mean() if t >= 3 else np.nan for t in range(30)])
    assert int(np.argmax(after & (median_ratio > 10))) == 12
    assert int(np.argmax(after & (mean_ratio > 10))) == 17
