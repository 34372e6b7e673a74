"""labkit.field_guide_widgets: the explorer's runs, its figure, and the widget itself."""
from dataclasses import replace

import pytest

from labkit import field_guide as fg
from labkit import field_guide_widgets as fgw
from labkit.field_guide_widgets import FixExplorer, describe, fixes_figure, fixes_run


@pytest.fixture
def short_runs(monkeypatch):
    """Make every repaired run of the explorer short (T = 5, 15 steps); the broken one overflows within ~30 steps."""
    def short(fixes, seed=0):
        settings = fg.apply_fixes(fixes)
        return fg.run(replace(settings, steps=15, seq_len=5, hidden_size=8) if fixes else settings, seed)
    monkeypatch.setattr(fgw, "fixes_run", short)


def test_fixes_run_is_cached_and_checks_its_arguments():
    first = fixes_run((), seed=0)
    assert fixes_run([], seed=0) is first  # the broken run diverges within ~30 steps: cheap
    assert first.diverged is not None
    with pytest.raises(ValueError):
        fixes_run(["nope"])
    with pytest.raises(ValueError):
        fixes_run((), seed=-1)


def test_describe_names_the_fixes_in_ladder_order():
    assert describe([]) == "broken (no fix)"
    assert describe(["lstm", "clip"]) == "broken + clip + lstm"


def test_the_figure_shows_both_runs_the_target_and_the_baseline(short_runs):
    fig = FixExplorer.static_figure(("clip", "init"), seed=0)
    loss_ax, norm_ax = fig.axes
    labels = [line.get_label() for line in loss_ax.lines]
    assert any(label.startswith("broken (no fix) (diverged)") for label in labels)
    assert any(label.startswith("broken + clip + init (final") for label in labels)
    assert any("target" in label for label in labels) and any("baseline" in label for label in labels)
    assert loss_ax.get_yscale() == norm_ax.get_yscale() == "log"
    with pytest.raises(TypeError):
        fixes_figure({})
    with pytest.raises(TypeError):
        fixes_figure({"a": {"loss": [1.0]}})


def test_the_explorer_reruns_on_its_checkboxes_and_writes_nothing_to_stderr(short_runs, capfd):
    explorer = FixExplorer(fixes=("clip",))
    assert explorer.fixes == ("clip",)
    explorer.checkboxes["adam"].value = True
    assert explorer.fixes == ("clip", "adam")
    explorer.seed_slider.value = 1
    assert capfd.readouterr().err == ""
    with pytest.raises(ValueError):
        FixExplorer(fixes=("unknown",))
