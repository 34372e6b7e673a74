"""labkit.classics: every literature claim reproduces with the default settings, the measured numbers
agree with independent references, and a wrong measurement turns the verdict to "NOT reproduced"."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit import classics
from labkit.classics import Reproduction


@pytest.fixture(scope="module")
def table() -> list[Reproduction]:
    return classics.reproduce_all()


def numbers(text: str) -> list[float]:
    """The measured values in a Reproduction's text: the numbers printed with four decimals."""
    return [float(n) for n in re.findall(r"-?\d+\.\d{4}\b", text)]


def test_every_claim_reproduces(table: list[Reproduction]) -> None:
    failed = [f"{r.topic}: {r.measured}" for r in table if not r.reproduced]
    assert not failed, "claims that did not reproduce:\n" + "\n".join(failed)
    assert len(table) == len(classics.CLAIMS)


def test_every_source_is_in_the_bibliography(table: list[Reproduction]) -> None:
    bibliography = (Path(__file__).resolve().parents[1] / "book" / "references.bib").read_text()
    missing = [r.source for r in table if not re.search(rf"@\w+\{{{re.escape(r.source)},", bibliography)]
    assert not missing, f"sources missing from book/references.bib: {missing}"


def test_rows_hold_every_column(table: list[Reproduction]) -> None:
    for row in (r.as_dict() for r in table):
        assert set(row) == {"topic", "claim", "source", "literature", "measured", "reproduced", "settings",
                            "chapter", "verdict"}
        assert all(str(value).strip() for value in row.values())


def test_gd_factors_match_the_analytic_contraction() -> None:
    result = classics.gd_stability_limit(eigenvalues=(2.0, 4.0), margin=0.1, steps=120)
    assert result.reproduced
    below, above = numbers(result.measured)[:2]
    # λ_max = 4, η = (1 ∓ 0.1)·0.5: |1 − ηλ_max| = 0.8 and 1.2
    assert below == pytest.approx(0.8, abs=1e-4) and above == pytest.approx(1.2, abs=1e-4)


def test_linear_growth_matches_the_eigenvalues() -> None:
    result = classics.linear_rnn_growth(spectral_radii=(0.8, 1.25), hidden_size=16, steps=200, seed=3)
    assert result.reproduced
    assert numbers(result.measured)[:2] == pytest.approx([0.8, 1.25], rel=1e-2)


def test_adding_baseline_matches_an_independent_simulation() -> None:
    result = classics.adding_problem_baseline(seq_len=10, samples=50_000, seed=1)
    rng = np.random.default_rng(0)
    independent = np.mean((rng.random(200_000) + rng.random(200_000) - 1.0) ** 2)
    assert numbers(result.measured)[0] == pytest.approx(independent, abs=0.005)
    assert result.reproduced


def test_a_wrong_growth_rate_is_not_reproduced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classics, "growth_rate", lambda values, **kwargs: 0.95)
    assert not classics.gd_stability_limit().reproduced, "GD converging above 2/λ_max must not pass"
    assert not classics.linear_rnn_growth(steps=20).reproduced, "a factor 0.95 for ρ = 0.9 and 1.1 must not pass"


def test_a_broken_bound_is_not_reproduced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classics, "jacobian_product_norms", lambda model, x: torch.ones(1, x.shape[1]))
    assert not classics.vanishing_condition(steps=10).reproduced


def test_a_flat_loss_surface_has_no_cliff(monkeypatch: pytest.MonkeyPatch) -> None:
    flat = lambda w, b: (np.zeros((len(b), len(w))), np.ones((len(b), len(w))))  # noqa: E731
    monkeypatch.setattr(classics.cliff, "cliff_loss_surface", flat)
    assert not classics.loss_cliff(resolution=5, wall_points=2).reproduced


def test_a_wrong_baseline_is_not_reproduced(monkeypatch: pytest.MonkeyPatch) -> None:
    def narrower(batch_size: int, seq_len: int, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        gen = kwargs["generator"]
        y = 1.0 + (torch.rand(batch_size, 1, generator=gen, dtype=torch.float64) - 0.5)  # variance 1/12
        return torch.zeros(batch_size, seq_len, 2), y

    monkeypatch.setattr(classics, "adding_problem", narrower)
    assert not classics.adding_problem_baseline(samples=20_000).reproduced


def test_uniform_depth_factors_are_not_glorots_claim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classics, "_per_layer_factor", lambda *args: (0.9, 0.9))
    assert not classics.glorot_depth_ratios().reproduced
    assert not classics.he_depth_ratios().reproduced


@pytest.mark.parametrize("bad, error", [
    (dict(margin=0.0), ValueError), (dict(steps=0), ValueError), (dict(eigenvalues=(1.0, -1.0)), ValueError),
])
def test_bad_settings_are_rejected(bad: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        classics.gd_stability_limit(**bad)


def test_bad_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="hidden_size"):
        classics.linear_rnn_growth(hidden_size=0)
    with pytest.raises(ValueError, match="largest_singular"):
        classics.vanishing_condition(largest_singular=-1.0)
    with pytest.raises(ValueError, match="depth"):
        classics.glorot_depth_ratios(depth=1)


def race_result(rnn: list[float], lstm: list[float], diverged: str | None = None) -> dict:
    """A result shaped like labkit.rnn_vs_lstm.adding_problem_rnn_vs_lstm's, with these final MSEs."""
    def runs(finals: list[float]) -> dict:
        return {str(seed): {"evals": [[0, 0.5], [100, final]], "diverged": None} for seed, final in enumerate(finals)}

    result = {"settings": {"seq_len": 100, "hidden_size": 64, "rnn_hidden_size": 128, "lr": 0.01, "steps": 100},
              "baseline": 1 / 6, "runs": {"rnn": runs(rnn), "lstm": runs(lstm)}}
    if diverged:
        result["runs"]["lstm"]["0"]["diverged"] = diverged
    return result


def test_lstm_claim_reads_the_final_losses() -> None:
    assert classics.lstm_solves_adding_problem(race_result([0.166, 0.17], [0.003, 0.01])).reproduced
    assert "0.0030, 0.0100" in classics.lstm_solves_adding_problem(race_result([0.166], [0.003, 0.01])).measured


@pytest.mark.parametrize("rnn, lstm, diverged", [
    ([0.166, 0.17], [0.003, 0.05], None),  # one LSTM seed did not learn
    ([0.166, 0.05], [0.003, 0.01], None),  # the RNN learned too: not the claim
    ([0.166, 0.17], [0.003, 0.01], "non-finite loss at step 7"),  # a diverged run is no success
])
def test_lstm_claim_fails_when_the_race_does(rnn: list[float], lstm: list[float], diverged: str | None) -> None:
    assert not classics.lstm_solves_adding_problem(race_result(rnn, lstm, diverged)).reproduced


def test_the_stored_t100_race_reproduces_the_claim() -> None:
    stored = json.loads((Path(__file__).resolve().parents[1] / "book" / "data" / "adding_rnn_vs_lstm.json").read_text())
    assert stored["settings"]["seq_len"] == 100, "chapter 8 stores the T = 100 run"
    result = classics.lstm_solves_adding_problem(stored)
    assert result.reproduced, result.measured


def test_clipping_claim_fails_when_clipping_does_not_help(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the 'clipped' run were the plain one, the claim must not pass."""
    setup = classics.ExplodingRNN(steps=40)
    unclipped_run = classics.ExplodingRNN.run
    monkeypatch.setattr(classics.ExplodingRNN, "run",
                        lambda self, seed, clip_norm, **kwargs: unclipped_run(self, seed, None, **kwargs))
    result = classics.clipping_trains_where_sgd_diverges(setup, seeds=[0])
    assert not result.reproduced
    assert "nan" in result.measured
