"""labkit.regularization_widgets: the strength explorer reruns on its controls and draws both runs."""
import pytest

from labkit import regularization_widgets
from labkit.clip_study import ExplodingRNN
from labkit.regularization_widgets import StrengthExplorer, strength_figure


@pytest.fixture(autouse=True)
def tiny_setup(monkeypatch):
    monkeypatch.setattr(regularization_widgets, "SETUP", ExplodingRNN(seq_len=4, hidden_size=6, batch_size=8, steps=12))
    regularization_widgets._run.cache_clear()
    yield
    regularization_widgets._run.cache_clear()


def test_the_figure_shows_lambda1_and_the_loss_of_both_runs():
    fig = strength_figure(0.5)
    sigma_ax, loss_ax = fig.axes[:2]
    labels = [line.get_label() for line in sigma_ax.lines]
    assert labels[0] == "no penalty" and labels[1] == "L2, λ = 0.5"
    run = regularization_widgets._run(0.5, True, 0)
    assert list(sigma_ax.lines[1].get_ydata()) == list(run.sigma_max)
    assert len(loss_ax.lines) >= 2
    assert "clipped at τ = 1" in fig.texts[0].get_text() and "0.9" in fig.texts[0].get_text()  # decay 1 − 0.2·0.5


def test_a_stronger_penalty_ends_with_a_smaller_lambda1():
    weak, strong = (regularization_widgets._run(s, True, 0).sigma_max[-1] for s in (1e-3, 1.0))
    assert strong < weak


def test_bad_strengths_are_refused():
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError):
            strength_figure(bad)


def test_the_explorer_reruns_on_its_controls_and_writes_nothing_to_stderr(capfd):
    explorer = StrengthExplorer()
    assert explorer.figure().texts[0].get_text() == StrengthExplorer.static_figure().texts[0].get_text()
    explorer.strength_slider.value = 0.1
    assert "λ = 0.1" in explorer.figure().texts[0].get_text()
    explorer.clip_box.value = False
    assert "not clipped" in explorer.figure().texts[0].get_text()
    assert capfd.readouterr().err == ""
