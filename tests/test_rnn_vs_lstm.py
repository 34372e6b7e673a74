"""labkit.rnn_vs_lstm and labkit.lstm_widgets: the contestants, the race's records, and the gradient-reach
measurement against autograd (the cell path cut out by hand); the explorer headless."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import ipywidgets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from labkit import lstm_widgets  # noqa: E402
from labkit import rnn_vs_lstm as rl  # noqa: E402
from labkit.models import LSTM, ElmanRNN  # noqa: E402
from labkit.tasks import adding_problem  # noqa: E402

pytestmark = pytest.mark.filterwarnings("error")


def test_contestants_are_built_from_the_seed():
    race = rl.AddingRace(hidden_size=8, rnn_hidden_size=16, forget_bias=2.0, backend="labkit")
    rnn, lstm = rl.make_model("rnn", race, 3), rl.make_model("lstm", race, 3)
    assert isinstance(rnn, ElmanRNN) and rnn.hidden_size == 16 and rnn.nonlinearity == "tanh"
    assert isinstance(lstm, LSTM) and lstm.hidden_size == 8
    assert torch.all(lstm.bias_ih[8:16] == 2.0) and torch.all(lstm.bias_hh[8:16] == 0.0)
    again = rl.make_model("lstm", race, 3)
    assert all(torch.equal(a, b) for a, b in zip(lstm.parameters(), again.parameters()))
    other = rl.make_model("lstm", race, 4)
    assert not torch.equal(lstm.weight_hh, other.weight_hh)


@pytest.mark.parametrize("kind", rl.MODELS)
def test_torch_backend_holds_the_same_weights_and_computes_the_same_function(kind):
    race = rl.AddingRace(hidden_size=6, rnn_hidden_size=9)
    ours = rl.make_model(kind, rl.AddingRace(hidden_size=6, rnn_hidden_size=9, backend="labkit"), 5)
    theirs = rl.make_model(kind, race, 5)
    assert isinstance(theirs, rl.TorchContestant)
    x, _ = adding_problem(4, 15, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(theirs(x), ours(x).outputs, rtol=1e-5, atol=1e-6)
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters())


def test_default_contestants_have_about_the_same_number_of_parameters():
    race = rl.AddingRace()
    counts = {kind: sum(p.numel() for p in rl.make_model(kind, race, 0).parameters()) for kind in rl.MODELS}
    assert abs(counts["rnn"] - counts["lstm"]) < 0.05 * counts["lstm"]


def test_race_is_deterministic_and_json_ready():
    settings = dict(seq_len=6, hidden_size=4, steps=12, batch_size=8, eval_every=5, eval_batch_size=16)
    first = rl.adding_problem_rnn_vs_lstm([0, 1], **settings)
    second = rl.adding_problem_rnn_vs_lstm([0, 1], **settings)
    strip = lambda result: {k: {s: {f: v for f, v in r.items() if f != "wall_time_s"} for s, r in runs.items()}
                            for k, runs in result["runs"].items()}
    assert strip(first) == strip(second)
    assert json.loads(json.dumps(first))["settings"]["seq_len"] == 6
    assert first["baseline"] == pytest.approx(1 / 6)
    run = first["runs"]["lstm"]["0"]
    assert [s for s, _ in run["evals"]] == [0, 5, 10, 12]
    assert len(run["loss"]) == len(run["grad_norm"]) == 1 and run["block"] == 10
    assert run["steps_completed"] == 12 and run["diverged"] is None
    finals = rl.final_eval_losses(first)
    assert set(finals) == {"rnn", "lstm"} and set(finals["rnn"]) == {"0", "1"}
    steps, curves = rl.eval_curves(first, "rnn")
    np.testing.assert_array_equal(steps, [0, 5, 10, 12])
    assert curves["1"][-1] == finals["rnn"]["1"]


def test_run_record_blocks_match_the_history():
    race = rl.AddingRace(seq_len=5, hidden_size=3, steps=20, batch_size=4, eval_every=10, eval_batch_size=8)
    history = rl.train_one("rnn", race, 0)
    record = rl.run_record(history, block=5)
    np.testing.assert_allclose(record["loss"], np.reshape(history.loss, (4, 5)).mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(record["grad_norm"], np.median(np.reshape(history.grad_norm, (4, 5)), axis=1),
                               rtol=1e-5)
    assert record["clipped_fraction"] == pytest.approx(np.mean(history.clipped), abs=1e-6)


def autograd_reach(seq_len, hidden_size, forget_bias, batch_size, seed):
    """‖∂L/∂h_t‖ (RNN), ‖∂L/∂c_t‖ (LSTM) by autograd, and Π f_s from an LSTM run whose gates see a detached
    h_{t-1}, so that c_k reaches c_T only along the cell path: then ∂c_T/∂c_k is diagonal and equals Π f."""
    race = rl.AddingRace(seq_len=seq_len, hidden_size=hidden_size, rnn_hidden_size=hidden_size,
                         forget_bias=forget_bias, backend="labkit")
    x, y = adding_problem(batch_size, seq_len, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rnn = rl.make_model("rnn", race, seed).double()
    rnn.record_hidden_grads = True
    race.task.loss(rnn(x).outputs, y).backward()
    lstm = rl.make_model("lstm", race, seed).double()
    H = hidden_size
    h = x.new_zeros(batch_size, H)
    c = x.new_zeros(batch_size, H)
    cells, cut_cells = [], []
    c_cut = x.new_zeros(batch_size, H, requires_grad=True)
    for t in range(seq_len):
        z = x[:, t] @ lstm.weight_ih.T + lstm.bias_ih + h @ lstm.weight_hh.T + lstm.bias_hh
        i, f, g, o = z.sigmoid()[:, :H], z.sigmoid()[:, H:2 * H], z.tanh()[:, 2 * H:3 * H], z.sigmoid()[:, 3 * H:]
        c = f * c + i * g
        c.retain_grad()
        cells.append(c)
        c_cut = f.detach() * c_cut + (i * g).detach()  # the cell path alone, gates held fixed
        c_cut.retain_grad()
        cut_cells.append(c_cut)
        h = o * c.tanh()
    race.task.loss(lstm.readout(h).unsqueeze(1), y).backward()
    cut_cells[-1].sum().backward()
    product = torch.stack([c_k.grad for c_k in cut_cells], 1).mean(dim=(0, 2))  # ∂c_T/∂c_t, t = 1..T
    return (rnn.hidden_grad_norms().numpy(), torch.stack([c.grad.norm() for c in cells]).numpy(),
            product.detach().numpy())


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, 3.0])
def test_gradient_reach_equals_autograd(forget_bias):
    reach = rl.gradient_reach(12, 5, forget_bias=forget_bias, batch_size=3, seed=2)
    rnn_hidden, lstm_cell, product = autograd_reach(12, 5, forget_bias, 3, 2)
    np.testing.assert_allclose(reach.rnn_hidden, rnn_hidden, rtol=1e-10)
    np.testing.assert_allclose(reach.lstm_cell, lstm_cell, rtol=1e-10)
    np.testing.assert_allclose(reach.forget_product, product, rtol=1e-10)
    assert reach.forget_product[-1] == 1.0


def test_a_larger_forget_bias_keeps_the_cell_path_open():
    products = [rl.gradient_reach(40, 8, forget_bias=b, batch_size=4).forget_product[0] for b in (0.0, 1.0, 3.0)]
    assert products[0] < products[1] < products[2]
    assert products[0] < 1e-10 < products[2]


@pytest.mark.parametrize(("kwargs", "error"), [
    (dict(seq_len=1), ValueError), (dict(hidden_size=0), ValueError), (dict(lr=-1.0), ValueError),
    (dict(clip_norm=0.0), ValueError), (dict(forget_bias=float("nan")), TypeError), (dict(steps=1.5), TypeError),
    (dict(backend="jax"), ValueError),
])
def test_bad_settings_are_refused(kwargs, error):
    with pytest.raises(error):
        rl.AddingRace(**kwargs)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kind"):
        rl.make_model("gru", rl.AddingRace(), 0)
    with pytest.raises(TypeError, match="seeds"):
        rl.adding_problem_rnn_vs_lstm(3)
    with pytest.raises(ValueError, match="seed"):
        rl.adding_problem_rnn_vs_lstm([-1], steps=1)
    with pytest.raises(ValueError, match="models"):
        rl.adding_problem_rnn_vs_lstm([0], models=("gru",), steps=1)


def test_explorer_follows_its_slider_and_draws_the_data():
    explorer = lstm_widgets.ForgetBiasExplorer(forget_bias=0.0)
    assert isinstance(explorer, ipywidgets.VBox)
    explorer.bias_slider.value = 3.0
    fig = explorer.figure()
    assert isinstance(fig, Figure)
    reach = rl.gradient_reach(lstm_widgets.SEQ_LEN, lstm_widgets.HIDDEN_SIZE, forget_bias=3.0)
    cell_line = fig.axes[0].lines[0]
    np.testing.assert_allclose(cell_line.get_ydata(), reach.lstm_cell / reach.lstm_cell[-1], rtol=1e-12)
    static = lstm_widgets.ForgetBiasExplorer.static_figure(3.0)
    np.testing.assert_allclose(static.axes[0].lines[0].get_ydata(), cell_line.get_ydata())
    with pytest.raises(TypeError):
        lstm_widgets.forget_bias_figure("1")


def test_experiment_script_writes_what_the_chapter_reads(tmp_path, monkeypatch):
    import importlib
    from pathlib import Path

    # imported by name, so that the worker processes can find its functions
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "experiments"))
    module = importlib.import_module("adding_rnn_vs_lstm")
    out = tmp_path / "race.json"
    module.main(["--seeds", "0", "1", "--seq-len", "6", "--hidden-size", "4", "--steps", "10", "--eval-every", "5",
                 "--eval-batch-size", "8", "--jobs", "1", "--backend", "labkit", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["settings"] == {**rl.AddingRace().to_dict(), "seq_len": 6, "hidden_size": 4, "steps": 10,
                                  "eval_every": 5, "eval_batch_size": 8, "backend": "labkit"}
    assert result["seeds"] == [0, 1] and "--seq-len 6" in result["command"]
    assert set(rl.final_eval_losses(result)) == {"rnn", "lstm"}
    expected = rl.adding_problem_rnn_vs_lstm([0, 1], rl.AddingRace(**result["settings"]))
    for kind in rl.MODELS:
        for seed in ("0", "1"):
            assert result["runs"][kind][seed]["evals"] == expected["runs"][kind][seed]["evals"]
