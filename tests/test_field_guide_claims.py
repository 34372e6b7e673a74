"""Chapter 9's claims about its fix ladder, checked on several seeds (about a minute on one core).

The chapter shows seed 0 and says: the broken run diverges; no repaired run does; each fix lowers the
final held-out loss (averaged over the seeds); clipping alone stops the divergence but leaves the loss at
about the memoryless baseline; the full ladder ends below the target on every seed.
"""
import math

import numpy as np
import pytest
import torch

from labkit import field_guide as fg
from labkit.detector import ExplosionDetector

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def ladder_runs():
    torch.set_num_threads(1)
    return {seed: [(label, fg.run(settings, seed)) for label, settings in fg.ladder()] for seed in SEEDS}


def test_the_broken_run_diverges_and_is_diagnosed_as_exploding_on_every_seed(ladder_runs):
    for seed, rungs in ladder_runs.items():
        label, broken = rungs[0]
        assert broken.diverged is not None, f"seed {seed}: the broken run did not diverge"
        assert ExplosionDetector().diagnose(broken).verdict == "exploding", seed


def test_no_repaired_run_diverges(ladder_runs):
    for seed, rungs in ladder_runs.items():
        for label, history in rungs[1:]:
            assert history.diverged is None, f"seed {seed}, {label}: {history.diverged}"


def test_each_fix_lowers_the_mean_final_loss(ladder_runs):
    finals = np.array([[fg.summarize(h).final_loss for _, h in rungs] for rungs in ladder_runs.values()])
    means = finals.mean(axis=0)  # (rungs,)
    assert math.isinf(means[0])
    assert np.all(np.diff(means[1:]) < 0), f"mean final loss per rung: {means}"


def test_clipping_alone_stays_near_the_baseline(ladder_runs):
    baseline = 1 / 6
    for seed, rungs in ladder_runs.items():
        assert fg.summarize(rungs[1][1]).final_loss > 0.8 * baseline, seed


def test_the_full_ladder_reaches_the_target_on_every_seed(ladder_runs):
    for seed, rungs in ladder_runs.items():
        summary = fg.summarize(rungs[-1][1])
        assert summary.reached_target, f"seed {seed}: final {summary.final_loss:.4f} >= {fg.TARGET_LOSS}"
