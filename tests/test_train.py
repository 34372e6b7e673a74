"""labkit.train: the loop learns, is repeatable, clips before the step, stops cleanly when it diverges."""
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from labkit.fixes import l2_penalty
from labkit.models import ElmanRNN
from labkit.tasks import SequenceTask
from labkit.train import Callback, Divergence, TrainConfig, TrainingHistory, evaluate, train

pytestmark = pytest.mark.filterwarnings("error")  # the loop must not warn

ADDING = SequenceTask.adding(10)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def small_rnn(seed=0, hidden=16):
    return ElmanRNN(2, hidden, 1, generator=gen(seed))


def exploding_rnn(seed=0):
    """ρ(W_hh) = 3: with SGD at lr = 10 the adding problem blows up within about ten steps."""
    return ElmanRNN(2, 32, 1, init="orthogonal", spectral_radius=3.0, generator=gen(seed))


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


class Recorder(Callback):
    """Remembers every call, with copies of what it was shown."""

    def __init__(self, tag="rec"):
        self.tag, self.calls = tag, []

    def on_train_begin(self, model, optimizer):
        self.calls.append((self.tag, "on_train_begin", model, optimizer))

    def after_backward(self, step, model, loss):
        grads = [p.grad.clone() for p in model.parameters()]
        self.calls.append((self.tag, "after_backward", step, model, loss, grads))

    def after_step(self, step, model):
        self.calls.append((self.tag, "after_step", step, model, flat(model).clone()))

    def on_train_end(self, history):
        self.calls.append((self.tag, "on_train_end", history))


class Snapshots:
    """Only one hook: the parameters after each update (plus the initial ones from on_train_begin)."""

    def __init__(self, model):
        self.params = [flat(model).clone()]

    def after_step(self, step, model):
        self.params.append(flat(model).clone())


# --------------------------------------------------------------------------- learning

def test_adam_learns_the_adding_problem_below_baseline():
    # measured (H = 16, Adam lr 2e-2, clip 1, batch 64, 300 steps): 13 of seeds 0..13 end in 0.021..0.063, one
    # in 0.15; seed 0 ends near 0.02, so half the baseline is a wide margin and still proves learning
    model = small_rnn()
    history = train(model, ADDING, steps=300, lr=2e-2, clip_norm=1.0, eval_every=100)
    assert history.diverged is None and history.steps_completed == 300
    steps, losses = zip(*history.evals)
    assert steps == (0, 100, 200, 300)
    assert losses[0] > ADDING.baseline  # an untrained model is worse than predicting the mean
    assert losses[-1] < 0.5 * ADDING.baseline, f"eval losses {losses}, baseline {ADDING.baseline:.4f}"
    assert np.mean(history.loss[-50:]) < np.mean(history.loss[:50])
    assert history.baseline == ADDING.baseline


class TorchLSTMRegressor(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # torch.nn's init draws from the global generator
            torch.manual_seed(0)
            self.lstm = nn.LSTM(2, hidden, batch_first=True)
            self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.lstm(x)  # (B, T, H)
        return self.head(out)  # (B, T, 1)


class TupleReturning(TorchLSTMRegressor):
    def forward(self, x):
        return super().forward(x), "anything else"


@pytest.mark.parametrize("model_class", [TorchLSTMRegressor, TupleReturning])
def test_a_plain_torch_module_trains(model_class):
    history = train(model_class(), ADDING, steps=150, eval_every=150)
    assert history.diverged is None
    (_, before), (_, after) = history.evals
    assert after < 0.5 * before
    assert np.mean(history.loss[-20:]) < np.mean(history.loss[:20])


def test_float64_model_gets_float64_inputs():
    model = small_rnn().double()
    history = train(model, ADDING, steps=5)
    assert history.steps_completed == 5 and model.weight_hh.dtype == torch.float64


# --------------------------------------------------------------------------- repeatability

def test_same_seed_gives_identical_history_and_weights():
    runs = []
    for _ in range(2):
        model = small_rnn(seed=3)
        runs.append((train(model, ADDING, steps=60, seed=7, eval_every=20), model))
    (h1, m1), (h2, m2) = runs
    assert h1.loss == h2.loss and h1.grad_norm == h2.grad_norm and h1.evals == h2.evals
    for (name, p1), p2 in zip(m1.named_parameters(), m2.parameters()):
        assert torch.equal(p1, p2), name


def test_different_seed_gives_different_batches():
    h1 = train(small_rnn(), ADDING, steps=20, seed=0)
    h2 = train(small_rnn(), ADDING, steps=20, seed=1)
    assert h1.loss != h2.loss
    assert h1.loss[0] != h2.loss[0]  # same model, different first batch


def test_evaluating_does_not_change_training():
    """The held-out batches come from their own generator and are drawn without gradients."""
    plain = train(small_rnn(), ADDING, steps=30)
    evaluated = train(small_rnn(), ADDING, steps=30, eval_every=7, eval_batch_size=100)
    assert plain.loss == evaluated.loss and plain.grad_norm == evaluated.grad_norm
    assert [s for s, _ in evaluated.evals] == [0, 7, 14, 21, 28, 30]
    # the held-out batch is drawn from seed + 2**63, never a training seed; a new seed gives a new one
    assert evaluated.evals[0][1] == evaluate(small_rnn(), ADDING, 100, gen(2**63))
    other_seed = train(small_rnn(), ADDING, steps=1, seed=1, eval_every=1, eval_batch_size=100)
    assert other_seed.evals[0][1] == evaluate(small_rnn(), ADDING, 100, gen(2**63 + 1))
    assert other_seed.evals[0][1] != evaluated.evals[0][1]


def test_evaluate_is_repeatable_and_leaves_no_trace():
    model = small_rnn()
    model.train()
    first = evaluate(model, ADDING, 256, gen(5))
    assert first == evaluate(model, ADDING, 256, gen(5))
    assert first != evaluate(model, ADDING, 256, gen(6))
    assert model.training and all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------- divergence

def test_exploding_rnn_ends_with_a_divergence_record_not_an_exception():
    model = exploding_rnn()
    snapshots = Snapshots(model)
    history = train(model, ADDING, steps=200, optimizer="sgd", lr=10.0, callbacks=[snapshots])
    d = history.diverged
    assert isinstance(d, Divergence), history
    assert d.reason in ("non-finite loss", "non-finite gradient")
    assert history.steps_completed == d.step < 30
    assert len(history.loss) == len(history.grad_norm) == len(history.clipped) == history.steps_completed
    assert all(math.isfinite(v) for v in history.loss + history.grad_norm)
    assert d.last_finite_loss is not None and math.isfinite(d.last_finite_loss)
    assert d.last_finite_step in (d.step - 1, d.step)
    assert history.loss[-1] > 1e6 * history.loss[0]  # it really blew up first
    # it stopped before stepping: the weights are finite and are those of the last completed update
    assert len(snapshots.params) == history.steps_completed + 1
    assert torch.equal(flat(model), snapshots.params[-1]) and torch.isfinite(flat(model)).all()
    assert f"step {d.step}" in str(d) and d.reason in repr(history)


def test_nan_weights_stop_at_step_zero_without_touching_them():
    model = small_rnn()
    with torch.no_grad():
        model.weight_hh[0, 0] = float("nan")
    recorder = Recorder()
    history = train(model, ADDING, steps=10, callbacks=[recorder])
    assert history.diverged == Divergence(0, "non-finite loss", None, None)
    assert history.steps_completed == 0 and history.loss == []
    assert [c[1] for c in recorder.calls] == ["on_train_begin", "on_train_end"]
    assert "no finite loss" in str(history.diverged)


def test_an_update_that_overflows_the_weights_is_reported():
    # an absurd learning rate near float32's largest value: the gradients (norm ≈ 7) are finite, lr · g is not
    model = exploding_rnn()
    history = train(model, ADDING, steps=10, optimizer="sgd", lr=3e38)
    d = history.diverged
    assert d.reason == "non-finite parameters" and d.step == 0 and d.last_finite_step == 0
    assert history.steps_completed == 1 and d.last_finite_loss == history.loss[0]
    assert not torch.isfinite(flat(model)).all()  # left as they are, but reported


def test_clipping_by_norm_tames_the_exploding_rnn():
    """The course's claim: clipping trains at a learning rate where plain SGD diverges."""
    history = train(exploding_rnn(), ADDING, steps=100, optimizer="sgd", lr=10.0, clip_norm=1.0)
    assert history.diverged is None and history.steps_completed == 100
    assert any(history.clipped)


# --------------------------------------------------------------------------- clipping

@pytest.mark.parametrize("clip_norm", [0.05, 1.0])
def test_clip_norm_bounds_every_sgd_update(clip_norm):
    lr = 0.5
    model = exploding_rnn().double()  # float64, so that the bound holds to rounding error ~1e-16
    snapshots = Snapshots(model)
    recorder = Recorder()
    history = train(model, ADDING, steps=40, optimizer="sgd", lr=lr, clip_norm=clip_norm,
                    callbacks=[recorder, snapshots])
    assert history.diverged is None
    raw_norms = [torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in c[5]])).item()
                 for c in recorder.calls if c[1] == "after_backward"]
    # recorded: the pre-clip global norm, and whether it was over the threshold
    np.testing.assert_allclose(history.grad_norm, raw_norms, rtol=1e-12)
    assert history.clipped == [n > clip_norm for n in history.grad_norm]
    assert any(history.clipped)
    # SGD without momentum moves by lr · g, so ‖Δθ‖ ≤ lr · clip_norm exactly when g was clipped first
    for step, (before, after) in enumerate(zip(snapshots.params, snapshots.params[1:])):
        update = torch.linalg.vector_norm(after - before).item()
        norm = history.grad_norm[step]
        expected = lr * norm * min(1.0, clip_norm / (norm + 1e-6))  # clip_grad_norm_'s factor (eps as torch's)
        assert update <= lr * clip_norm * (1 + 1e-9)
        assert update == pytest.approx(expected, rel=1e-6)


def test_clip_value_bounds_every_entry_of_the_update():
    lr, clip_value = 0.5, 1e-3
    model = exploding_rnn().double()
    snapshots = Snapshots(model)
    history = train(model, ADDING, steps=20, optimizer="sgd", lr=lr, clip_value=clip_value,
                    callbacks=[snapshots])
    assert history.diverged is None and all(history.clipped)
    steps = torch.stack(snapshots.params).diff(dim=0).abs()  # (steps, n_params)
    assert steps.max().item() <= lr * clip_value * (1 + 1e-9)
    assert steps.max().item() == pytest.approx(lr * clip_value, rel=1e-9)  # some entries hit the bound


def test_no_clipping_records_the_raw_norm_and_never_clipped():
    history = train(small_rnn(), ADDING, steps=10)
    assert history.clipped == [False] * 10 and all(n > 0 for n in history.grad_norm)


# --------------------------------------------------------------------------- regularizer

def test_regularizer_is_recorded_and_changes_the_trajectory():
    strength = 0.05
    model = small_rnn()
    initial_penalty = l2_penalty(model, strength).item()
    plain = train(small_rnn(), ADDING, steps=40)
    history = train(model, ADDING, steps=40, regularizer=lambda m: l2_penalty(m, strength))
    assert history.penalty[0] == pytest.approx(initial_penalty)
    assert all(p > 0 for p in history.penalty) and plain.penalty == [0.0] * 40
    assert history.loss[0] == plain.loss[0]  # same model, same batch: the task loss excludes the penalty
    assert history.loss[1:] != plain.loss[1:]
    assert history.penalty[-1] == pytest.approx(l2_penalty(model, strength).item(), rel=0.05)


def test_regularizer_must_return_a_scalar():
    with pytest.raises(TypeError, match="scalar tensor"):
        train(small_rnn(), ADDING, steps=2, regularizer=lambda m: torch.ones(3))


# --------------------------------------------------------------------------- callbacks

def test_callbacks_are_called_in_order_with_the_right_arguments():
    model = small_rnn()
    first, second = Recorder("first"), Recorder("second")
    history = train(model, ADDING, steps=3, clip_norm=1e-3, regularizer=lambda m: l2_penalty(m, 0.1),
                    callbacks=[first, second])
    expected = (["on_train_begin"]
                + [f"{name}({step})" for step in range(3) for name in ("after_backward", "after_step")]
                + ["on_train_end"])
    for recorder in (first, second):
        assert [f"{c[1]}({c[2]})" if c[1].startswith("after") else c[1] for c in recorder.calls] == expected

    begin = first.calls[0]
    assert begin[2] is model and isinstance(begin[3], torch.optim.Adam)
    assert first.calls[-1][2] is history
    for c in first.calls:
        if c[1] == "after_backward":
            step, loss, grads = c[2], c[4], c[5]
            assert c[3] is model and not loss.requires_grad
            assert loss.item() == pytest.approx(history.loss[step] + history.penalty[step], rel=1e-6)
            raw = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads])).item()
            assert raw == pytest.approx(history.grad_norm[step], rel=1e-5) and raw > 1e-3  # not yet clipped


def test_callbacks_interleave_per_event():
    log = []

    class Tagged:
        def __init__(self, tag):
            self.tag = tag

        def after_backward(self, step, model, loss):
            log.append((step, "backward", self.tag))

        def after_step(self, step, model):
            log.append((step, "step", self.tag))

    train(small_rnn(), ADDING, steps=2, callbacks=[Tagged("a"), Tagged("b")])
    assert log == [(0, "backward", "a"), (0, "backward", "b"), (0, "step", "a"), (0, "step", "b"),
                   (1, "backward", "a"), (1, "backward", "b"), (1, "step", "a"), (1, "step", "b")]


def test_bad_callbacks_are_rejected():
    with pytest.raises(TypeError, match=r"callbacks=\[monitor\]"):
        train(small_rnn(), ADDING, steps=1, callbacks=Recorder())
    with pytest.raises(TypeError, match="at least one of the methods"):
        train(small_rnn(), ADDING, steps=1, callbacks=[print])


# --------------------------------------------------------------------------- optimizers and config

@pytest.mark.parametrize("name, optimizer_class, momentum", [
    ("sgd", torch.optim.SGD, 0.9), ("adam", torch.optim.Adam, 0.0),
    ("adamw", torch.optim.AdamW, 0.0), ("rmsprop", torch.optim.RMSprop, 0.5),
])
def test_each_named_optimizer_is_built_from_the_config(name, optimizer_class, momentum):
    recorder = Recorder()
    lr = 0.05 if name == "sgd" else 3e-3
    history = train(small_rnn(), ADDING, steps=30, optimizer=name, lr=lr, momentum=momentum,
                    weight_decay=1e-4, callbacks=[recorder])
    optimizer = recorder.calls[0][3]
    assert type(optimizer) is optimizer_class
    group = optimizer.param_groups[0]
    assert group["lr"] == lr and group["weight_decay"] == 1e-4 and group.get("momentum", 0.0) == momentum
    assert history.diverged is None and history.config.optimizer == name
    assert np.mean(history.loss[-10:]) < np.mean(history.loss[:10])


def test_a_ready_optimizer_or_a_factory_is_used():
    model = small_rnn()
    before = flat(model).clone()
    frozen = torch.optim.SGD(model.parameters(), lr=0.0)  # config says Adam; this one must win
    train(model, ADDING, steps=5, optimizer=frozen)
    assert torch.equal(flat(model), before)

    seen = []

    def factory(params):
        seen.append(params)
        return torch.optim.SGD(params, lr=0.1)

    model = small_rnn()
    train(model, ADDING, steps=5, optimizer=factory)
    assert len(seen) == 1 and [id(p) for p in seen[0]] == [id(p) for p in model.parameters()]
    assert not torch.equal(flat(model), before)

    with pytest.raises(TypeError, match="must return a torch.optim.Optimizer"):
        train(small_rnn(), ADDING, steps=1, optimizer=lambda params: None)


def test_config_and_overrides():
    config = TrainConfig(steps=4, lr=0.1, optimizer="sgd")
    history = train(small_rnn(), ADDING, config, steps=6)
    assert history.steps_completed == 6 and history.config.lr == 0.1 and config.steps == 4
    with pytest.raises(TypeError, match=r"unknown training option\(s\) \['learning_rate'\].*'lr'"):
        train(small_rnn(), ADDING, learning_rate=0.1)
    config.steps = 0  # changed after it was made: train checks it again
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train(small_rnn(), ADDING, config)


@pytest.mark.parametrize("fields, error, message", [
    (dict(steps=0), ValueError, "steps must be an int >= 1, got 0"),
    (dict(steps=2.5), TypeError, "steps must be an int"),
    (dict(batch_size=-1), ValueError, "batch_size must be an int >= 1"),
    (dict(lr=0.0), ValueError, "lr must be a finite number > 0"),
    (dict(lr=float("nan")), ValueError, "lr must be a finite number > 0"),
    (dict(lr="0.1"), TypeError, "lr must be a number"),
    (dict(optimizer="sgdd"), ValueError, r"optimizer must be one of \('sgd', 'adam', 'adamw', 'rmsprop'\)"),
    (dict(momentum=1.0, optimizer="sgd"), ValueError, r"momentum must be in \[0, 1\)"),
    (dict(momentum=0.9, optimizer="adam"), ValueError, "momentum is used only by 'sgd' and 'rmsprop'"),
    (dict(weight_decay=-1e-4), ValueError, "weight_decay must be a finite number >= 0"),
    (dict(clip_norm=0.0), ValueError, "clip_norm must be a finite number > 0"),
    (dict(clip_value=-1.0), ValueError, "clip_value must be a finite number > 0"),
    (dict(clip_norm=1.0, clip_value=1.0), ValueError, "at most one of clip_norm and clip_value"),
    (dict(seed=-1), ValueError, "seed must be an int >= 0"),
    (dict(seed=2**63), ValueError, r"seed must be an int in \[0, 2\*\*63\)"),
    (dict(eval_every=-5), ValueError, "eval_every must be an int >= 0"),
    (dict(eval_batch_size=0), ValueError, "eval_batch_size must be an int >= 1"),
    (dict(progress="yes"), TypeError, "progress must be True or False"),
    (dict(device="tpu"), ValueError, "unknown device 'tpu'"),
    (dict(device=3.0), TypeError, "device must be None, a device name or a torch.device"),
])
def test_bad_config_values_say_what_was_expected(fields, error, message):
    with pytest.raises(error, match=message):
        TrainConfig(**fields)
    with pytest.raises(error, match=message):
        train(small_rnn(), ADDING, **fields)


def test_bad_arguments_are_rejected_before_training():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        train(lambda x: x, ADDING)
    with pytest.raises(TypeError, match="task must be a SequenceTask"):
        train(small_rnn(), "adding")
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        train(small_rnn(), ADDING, {"steps": 3})
    with pytest.raises(TypeError, match="model must return a tensor"):
        train(DictReturning(), ADDING, steps=1)


class DictReturning(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 1)

    def forward(self, x):
        return {"outputs": self.head(x)}


# --------------------------------------------------------------------------- output

def test_progress_off_writes_nothing(capfd):
    train(small_rnn(), ADDING, steps=20, eval_every=10)
    train(exploding_rnn(), ADDING, steps=50, optimizer="sgd", lr=10.0)  # a diverging run is silent too
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_progress_on_shows_loss_and_grad_norm(capfd):
    train(small_rnn(), ADDING, steps=5, progress=True)
    out, err = capfd.readouterr()
    assert "loss=" in out + err and "grad_norm=" in out + err


def test_history_exports_for_plots_and_json():
    history = train(exploding_rnn(), ADDING, steps=200, optimizer="sgd", lr=10.0, eval_every=3)
    arrays = history.as_arrays()
    n = history.steps_completed
    assert all(arrays[k].shape == (n,) for k in ("step", "loss", "penalty", "grad_norm", "clipped"))
    assert arrays["eval_step"].shape == arrays["eval_loss"].shape == (len(history.evals),)
    assert arrays["clipped"].dtype == bool
    data = json.loads(json.dumps(history.to_dict()))
    assert data["loss"] == history.loss and data["steps_completed"] == n
    assert data["diverged"]["step"] == history.diverged.step
    assert data["config"]["optimizer"] == "sgd" and data["config"]["device"] is None
    assert repr(history).startswith("TrainingHistory(steps_completed=")
    assert isinstance(TrainingHistory(), TrainingHistory)  # an empty history is valid


# --------------------------------------------------------------------------- GPU

def test_gpu_run_matches_cpu(cuda):
    cpu = train(small_rnn(), ADDING, steps=30, eval_every=10)
    model = small_rnn()
    gpu = train(model, ADDING, steps=30, eval_every=10, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose([v for _, v in gpu.evals], [v for _, v in cpu.evals], rtol=1e-3, atol=1e-5)
