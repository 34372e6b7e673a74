"""labkit.models: the from-scratch models against torch.nn, hand-written references and numpy."""
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from labkit.models import (
    LSTM,
    ElmanRNN,
    ScalarRNN,
    largest_singular_value,
    random_orthogonal,
    spectral_radius_of,
)

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}
SHAPES = [(1, 1, 1, 1), (3, 7, 2, 5), (8, 30, 4, 16)]  # (B, T, I, H)
PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def randomize_(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Overwrite every parameter with U(-scale, scale) values from a seeded generator."""
    g = gen(seed)
    for p in module.parameters():
        p.copy_((2 * torch.rand(p.shape, generator=g, dtype=torch.float64) - 1) * scale)
    return module


def rand(*shape, dtype, seed):
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64).to(dtype).requires_grad_()


def assert_grads_close(ours: nn.Module, theirs: nn.Module, tol) -> None:
    for name in PARAM_NAMES:
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name + "_l0").grad, **tol,
                                   msg=lambda m, name=name: f"grad of {name}: {m}")


# --------------------------------------------------------------------------- Elman RNN vs torch.nn.RNN

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("B, T, I, H", SHAPES)
def test_elman_equals_torch_rnn(B, T, I, H, nonlinearity, dtype):
    rnn = randomize_(nn.RNN(I, H, nonlinearity=nonlinearity, batch_first=True, dtype=dtype), seed=B + T)
    model = ElmanRNN.from_torch(rnn)
    assert model.weight_hh.dtype == dtype and model.nonlinearity == nonlinearity
    x, h0 = rand(B, T, I, dtype=dtype, seed=1), rand(B, H, dtype=dtype, seed=2)
    ours = model(x, h0)
    theirs, h_T = rnn(x, h0.unsqueeze(0))
    torch.testing.assert_close(ours.outputs, theirs, **TOL[dtype])
    torch.testing.assert_close(ours.hidden, theirs, **TOL[dtype])
    torch.testing.assert_close(ours.state, h_T[0], **TOL[dtype])

    w_out, w_state = rand(B, T, H, dtype=dtype, seed=3).detach(), rand(B, H, dtype=dtype, seed=4).detach()
    loss_ours = (ours.outputs * w_out).sum() + (ours.state * w_state).sum()
    loss_theirs = (theirs * w_out).sum() + (h_T[0] * w_state).sum()
    inputs_ours = torch.autograd.grad(loss_ours, (x, h0), retain_graph=True)
    inputs_theirs = torch.autograd.grad(loss_theirs, (x, h0), retain_graph=True)
    loss_ours.backward()
    loss_theirs.backward()
    assert_grads_close(model, rnn, TOL[dtype])
    for a, b in zip(inputs_ours, inputs_theirs):  # ∂L/∂x and ∂L/∂h_0
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elman_readout_equals_linear_on_torch_output(dtype):
    B, T, I, H, O = 4, 12, 3, 8, 2
    rnn = randomize_(nn.RNN(I, H, batch_first=True, dtype=dtype), seed=5)
    linear = randomize_(nn.Linear(H, O, dtype=dtype), seed=6)
    model = ElmanRNN.from_torch(rnn, linear)
    x = rand(B, T, I, dtype=dtype, seed=1)
    ours = model(x)
    hidden, _ = rnn(x)
    theirs = linear(hidden)
    assert ours.outputs.shape == (B, T, O) and ours.hidden.shape == (B, T, H)
    torch.testing.assert_close(ours.outputs, theirs, **TOL[dtype])
    ours.outputs.square().sum().backward()
    theirs.square().sum().backward()
    assert_grads_close(model, rnn, TOL[dtype])
    torch.testing.assert_close(model.readout.weight.grad, linear.weight.grad, **TOL[dtype])
    torch.testing.assert_close(model.readout.bias.grad, linear.bias.grad, **TOL[dtype])


def test_elman_sigmoid_equals_hand_written_loop():
    B, T, I, H = 3, 9, 2, 4
    model = ElmanRNN(I, H, nonlinearity="sigmoid", generator=gen(1)).double()
    x, h = rand(B, T, I, dtype=torch.float64, seed=1).detach(), rand(B, H, dtype=torch.float64, seed=2).detach()
    out = model(x, h)
    W_ih, W_hh, b_ih, b_hh = (getattr(model, n).detach() for n in PARAM_NAMES)
    expected = []
    for t in range(T):
        h = 1 / (1 + torch.exp(-(x[:, t] @ W_ih.T + b_ih + h @ W_hh.T + b_hh)))
        expected.append(h)
    torch.testing.assert_close(out.hidden, torch.stack(expected, 1), **TOL[torch.float64])
    torch.testing.assert_close(out.state, expected[-1], **TOL[torch.float64])


def test_elman_without_state_starts_from_zeros():
    model = ElmanRNN(2, 3)
    x = torch.randn(2, 5, 2, generator=gen())
    torch.testing.assert_close(model(x).outputs, model(x, torch.zeros(2, 3)).outputs, rtol=0, atol=0)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_elman_to_torch_round_trip(nonlinearity):
    model = ElmanRNN(3, 6, 2, nonlinearity=nonlinearity, init="orthogonal", generator=gen(4))
    rnn, linear = model.to_torch()
    assert isinstance(rnn, nn.RNN) and rnn.batch_first and rnn.nonlinearity == nonlinearity
    back = ElmanRNN.from_torch(rnn, linear)
    assert model.state_dict().keys() == back.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    x = torch.randn(2, 10, 3, generator=gen())
    torch.testing.assert_close(linear(rnn(x)[0]), model(x).outputs, **TOL[torch.float32])


def test_elman_sigmoid_has_no_torch_equivalent():
    with pytest.raises(ValueError, match="supports only 'tanh' and 'relu'"):
        ElmanRNN(2, 3, nonlinearity="sigmoid").to_torch()


# --------------------------------------------------------------------------- LSTM vs torch.nn.LSTM

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B, T, I, H", SHAPES)
def test_lstm_equals_torch_lstm(B, T, I, H, dtype):
    lstm = randomize_(nn.LSTM(I, H, batch_first=True, dtype=dtype), seed=B + T, scale=0.8)
    model = LSTM.from_torch(lstm)
    x = rand(B, T, I, dtype=dtype, seed=1)
    h0, c0 = rand(B, H, dtype=dtype, seed=2), rand(B, H, dtype=dtype, seed=3)
    ours = model(x, (h0, c0))
    theirs, (h_T, c_T) = lstm(x, (h0.unsqueeze(0), c0.unsqueeze(0)))
    torch.testing.assert_close(ours.outputs, theirs, **TOL[dtype])
    torch.testing.assert_close(ours.state[0], h_T[0], **TOL[dtype])
    torch.testing.assert_close(ours.state[1], c_T[0], **TOL[dtype])

    w = [rand(*s, dtype=dtype, seed=10 + k).detach() for k, s in enumerate([(B, T, H), (B, H), (B, H)])]
    loss_ours = (ours.outputs * w[0]).sum() + (ours.state[0] * w[1]).sum() + (ours.state[1] * w[2]).sum()
    loss_theirs = (theirs * w[0]).sum() + (h_T[0] * w[1]).sum() + (c_T[0] * w[2]).sum()
    inputs_ours = torch.autograd.grad(loss_ours, (x, h0, c0), retain_graph=True)
    inputs_theirs = torch.autograd.grad(loss_theirs, (x, h0, c0), retain_graph=True)
    loss_ours.backward()
    loss_theirs.backward()
    assert_grads_close(model, lstm, TOL[dtype])
    for a, b in zip(inputs_ours, inputs_theirs):  # ∂L/∂x, ∂L/∂h_0, ∂L/∂c_0
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_lstm_readout_and_round_trip():
    model = LSTM(3, 5, 2, forget_bias=2.0, generator=gen(7))
    lstm, linear = model.to_torch()
    assert isinstance(lstm, nn.LSTM) and lstm.batch_first
    back = LSTM.from_torch(lstm, linear)
    for name, value in model.state_dict().items():
        assert torch.equal(value, back.state_dict()[name]), name
    x = torch.randn(4, 11, 3, generator=gen())
    out = model(x)
    torch.testing.assert_close(out.outputs, linear(lstm(x)[0]), **TOL[torch.float32])
    assert out.outputs.shape == (4, 11, 2) and out.hidden.shape == (4, 11, 5)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0, 2.5, -1.0])
def test_forget_bias_lands_in_torch_forget_gate(forget_bias):
    H = 4
    model = LSTM(1, H, forget_bias=forget_bias, generator=gen(3))
    assert torch.all(model.bias_ih[H:2 * H] == forget_bias)
    assert torch.all(model.bias_hh[H:2 * H] == 0)
    assert torch.equal(model.bias_ih[H:2 * H] + model.bias_hh[H:2 * H], torch.full((H,), forget_bias))
    assert not torch.all(model.bias_ih[:H] == forget_bias), "other gates keep their random bias"
    # Independent check through torch: with zero weights and input, c_1 = σ(b_i)tanh(b_g) and
    # c_2 = σ(b_f) c_1 + c_1, so c_2 / c_1 - 1 is torch's forget gate σ(b_f).
    lstm, _ = model.to_torch()
    with torch.no_grad():
        lstm.weight_ih_l0.zero_()
        lstm.weight_hh_l0.zero_()
        lstm.bias_ih_l0[2 * H:3 * H] = 1.0  # tanh(g) != 0 so that c_1 != 0
        x = torch.zeros(1, 2, 1)
        c_1 = lstm(x[:, :1])[1][1][0, 0]  # (H,)
        c_2 = lstm(x)[1][1][0, 0]
    torch.testing.assert_close(c_2 / c_1 - 1, torch.full((H,), 1 / (1 + math.exp(-forget_bias))))


def test_lstm_same_seed_same_weights():
    a, b, c = LSTM(3, 8, 2, generator=gen(1)), LSTM(3, 8, 2, generator=gen(1)), LSTM(3, 8, 2, generator=gen(2))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name])
    assert not torch.equal(a.weight_hh, c.weight_hh)


# --------------------------------------------------------------------------- Elman initialisation

@pytest.mark.parametrize("init", ["default", "gaussian", "orthogonal"])
@pytest.mark.parametrize("rho", [0.5, 1.0, 1.7])
def test_spectral_radius_init(init, rho):
    model = ElmanRNN(2, 32, init=init, spectral_radius=rho, generator=gen(5))
    eigenvalues = np.linalg.eigvals(model.weight_hh.detach().double().numpy())
    assert np.abs(eigenvalues).max() == pytest.approx(rho, rel=1e-5)


@pytest.mark.parametrize("gain", [1.0, 1.3])
def test_orthogonal_init(gain):
    W = ElmanRNN(2, 24, init="orthogonal", gain=gain, generator=gen(2)).weight_hh.detach()
    torch.testing.assert_close(W.T @ W, gain**2 * torch.eye(24), rtol=0, atol=1e-5)


def test_orthogonal_init_float64(float64):
    W = ElmanRNN(2, 24, init="orthogonal", gain=0.9, generator=gen(2)).weight_hh.detach()
    assert W.dtype == torch.float64
    torch.testing.assert_close(W.T @ W, 0.81 * torch.eye(24), rtol=0, atol=1e-12)


def test_gaussian_init_scale():
    H, gain = 400, 1.5
    W = ElmanRNN(1, H, init="gaussian", gain=gain, generator=gen(0)).weight_hh.detach().double()
    # entries N(0, gain²/H): H² samples give the variance to ~0.3 %; ρ → gain (circular law)
    assert W.var().item() * H == pytest.approx(gain**2, rel=0.02)
    assert spectral_radius_of(W) == pytest.approx(gain, rel=0.1)


def test_default_init_is_torch_uniform_range():
    H = 50
    model = ElmanRNN(3, H, generator=gen(0))
    bound = 1 / math.sqrt(H)
    for name in PARAM_NAMES:
        p = getattr(model, name)
        assert p.abs().max() <= bound and p.abs().max() > 0.9 * bound, name


@pytest.mark.parametrize("init", ["default", "gaussian", "orthogonal"])
def test_elman_same_seed_same_weights(init):
    a = ElmanRNN(3, 8, 2, init=init, generator=gen(1))
    b = ElmanRNN(3, 8, 2, init=init, generator=gen(1))
    c = ElmanRNN(3, 8, 2, init=init, generator=gen(2))
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name]), name
    assert not torch.equal(a.weight_hh, c.weight_hh)


def test_init_does_not_touch_global_generator():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    ElmanRNN(3, 8, 2, init="orthogonal", generator=gen(1))
    LSTM(3, 8, 2, generator=gen(1))
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------- matrix helpers

def test_spectral_radius_and_singular_value_match_numpy():
    A = torch.randn(7, 7, generator=gen(3), dtype=torch.float64)
    assert spectral_radius_of(A) == pytest.approx(np.abs(np.linalg.eigvals(A.numpy())).max(), rel=1e-12)
    assert largest_singular_value(A) == pytest.approx(np.linalg.norm(A.numpy(), ord=2), rel=1e-12)
    rect = torch.randn(4, 9, generator=gen(4))
    assert largest_singular_value(rect) == pytest.approx(np.linalg.svd(rect.double().numpy())[1][0], rel=1e-12)
    rotation = torch.tensor([[0.0, -2.0], [2.0, 0.0]])  # complex eigenvalues ±2i
    assert spectral_radius_of(rotation) == pytest.approx(2.0, rel=1e-12)


def test_spectral_radius_works_on_parameters_with_grad():
    W = ElmanRNN(1, 5).weight_hh
    assert W.requires_grad
    assert spectral_radius_of(W) == pytest.approx(np.abs(np.linalg.eigvals(W.detach().double().numpy())).max())


def test_matrix_helpers_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"expected a square matrix, got shape \(3, 4\)"):
        spectral_radius_of(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="expected a square matrix"):
        spectral_radius_of(torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected a matrix, got shape \(2, 2, 2\)"):
        largest_singular_value(torch.zeros(2, 2, 2))


def test_random_orthogonal(float64):
    Q = random_orthogonal(16, gen(1))
    assert Q.dtype == torch.float64
    torch.testing.assert_close(Q.T @ Q, torch.eye(16), rtol=0, atol=1e-12)
    torch.testing.assert_close(Q @ Q.T, torch.eye(16), rtol=0, atol=1e-12)
    assert torch.equal(Q, random_orthogonal(16, gen(1)))
    assert not torch.equal(Q, random_orthogonal(16, gen(2)))
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        random_orthogonal(0, gen())


def test_random_orthogonal_is_haar_not_biased():
    # QR of a Gaussian without the sign fix gives a positive diagonal for R, biasing Q; with it,
    # E[Q_11] = 0. Over 400 draws of 3x3, |mean| < 3 · sqrt(1/3 / 400) ≈ 0.087.
    g = gen(0)
    q11 = torch.tensor([random_orthogonal(3, g)[0, 0].item() for _ in range(400)])
    assert abs(q11.mean().item()) < 0.087


# --------------------------------------------------------------------------- ScalarRNN

def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


@pytest.mark.parametrize("activation, sigma", [("sigmoid", _sigmoid), ("tanh", math.tanh)])
def test_scalar_rnn_equals_python_loop(float64, activation, sigma):
    w, b, x0, steps = 5.3, -2.1, 0.4, 25
    states = ScalarRNN(w, b, activation=activation)(x0, steps)
    expected = [x0]
    for _ in range(steps):
        expected.append(w * sigma(expected[-1]) + b)
    assert states.shape == (steps + 1,)
    assert states.tolist() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_scalar_rnn_grid_equals_pointwise(float64):
    ws = torch.linspace(-3, 8, 6)
    bs = torch.linspace(-4, 2, 5)
    W, Bias = torch.meshgrid(ws, bs, indexing="ij")  # (6, 5)
    grid = ScalarRNN(W, Bias)(0.5, 12)
    assert grid.shape == (13, 6, 5)
    broadcast = ScalarRNN(ws[:, None], bs[None, :])(0.5, 12)  # (6, 1) with (1, 5)
    assert broadcast.shape == (13, 6, 5)
    for i, w in enumerate(ws.tolist()):
        for j, b in enumerate(bs.tolist()):
            point = ScalarRNN(w, b)(0.5, 12)
            torch.testing.assert_close(grid[:, i, j], point, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(broadcast[:, i, j], point, rtol=1e-12, atol=1e-12)


def test_scalar_rnn_gradient_matches_finite_difference(float64):
    model = ScalarRNN(2.0, -0.5)
    model(0.1, 10)[-1].backward()
    eps = 1e-6
    f = lambda w, b: ScalarRNN(w, b)(0.1, 10)[-1].item()
    assert model.w.grad.item() == pytest.approx((f(2 + eps, -0.5) - f(2 - eps, -0.5)) / (2 * eps), rel=1e-6)
    assert model.b.grad.item() == pytest.approx((f(2, -0.5 + eps) - f(2, -0.5 - eps)) / (2 * eps), rel=1e-6)


# --------------------------------------------------------------------------- per-step hidden gradients

@pytest.mark.parametrize("make", [lambda: ElmanRNN(3, 6, 2, generator=gen(1)), lambda: LSTM(3, 6, 2, generator=gen(1))])
def test_hidden_grad_norms_match_autograd(make):
    model = make()
    model.record_hidden_grads = True
    x = torch.randn(4, 15, 3, generator=gen())

    def loss_of(out):
        return out.outputs[:, -1].square().sum() + 0.1 * out.outputs.sum()

    # the reference from its own forward pass, step by step for autograd (the Elman RNN's forward is; the
    # LSTM's forward records the norms in its hand-written backward pass instead): autograd.grad would also
    # fill the retained .grad fields
    step_by_step = model.forward_by_autograd if isinstance(model, LSTM) else model
    reference = torch.autograd.grad(loss_of(step_by_step(x)), model.hidden_steps)
    assert len(model.hidden_steps) == 15
    loss_of(model(x)).backward()
    norms = model.hidden_grad_norms()
    assert norms.shape == (15,)
    torch.testing.assert_close(norms, torch.stack([g.norm() for g in reference]), rtol=1e-6, atol=0)
    assert not norms.requires_grad


@pytest.mark.parametrize("cls", [ElmanRNN, LSTM])
def test_hidden_grad_norms_need_recording(cls):
    model = cls(2, 3)
    model(torch.randn(1, 4, 2)).outputs.sum().backward()
    with pytest.raises(RuntimeError, match="record_hidden_grads = True"):
        model.hidden_grad_norms()
    assert model.hidden_steps == [], "nothing is kept when not recording"
    model.record_hidden_grads = True
    model(torch.randn(1, 4, 2))
    with pytest.raises(RuntimeError, match="run forward, then loss.backward"):
        model.hidden_grad_norms()


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("call, error, message", [
    (lambda: ElmanRNN(3, 0), ValueError, "hidden_size must be an int >= 1, got 0"),
    (lambda: ElmanRNN("3", 4), TypeError, "input_size must be an int"),
    (lambda: ElmanRNN(3, 4.0), TypeError, "hidden_size must be an int"),
    (lambda: ElmanRNN(3, 4, 0), ValueError, "output_size must be an int >= 1"),
    (lambda: ElmanRNN(3, 4, nonlinearity="gelu"), ValueError, "nonlinearity must be one of"),
    (lambda: ElmanRNN(3, 4, init="xavier"), ValueError, "init must be one of"),
    (lambda: ElmanRNN(3, 4, spectral_radius=-1), ValueError, "spectral_radius must be a finite number > 0"),
    (lambda: ElmanRNN(3, 4, spectral_radius=float("inf")), ValueError, "spectral_radius must be a finite"),
    (lambda: ElmanRNN(3, 4, gain=0), ValueError, "gain must be a finite number > 0"),
    (lambda: ElmanRNN(3, 4, gain="1"), TypeError, "gain must be a number"),
    (lambda: LSTM(3, 0), ValueError, "hidden_size must be an int >= 1"),
    (lambda: LSTM("3", 4), TypeError, "input_size must be an int"),
    (lambda: LSTM(3, 4, forget_bias=float("nan")), ValueError, "forget_bias must be a finite number"),
    (lambda: LSTM(3, 4, forget_bias="1"), TypeError, "forget_bias must be a finite number"),
    (lambda: ScalarRNN(activation="relu"), ValueError, "activation must be one of"),
    (lambda: ScalarRNN()(0.0, 0), ValueError, "steps must be an int >= 1"),
    (lambda: ElmanRNN.from_torch(nn.GRU(2, 3)), TypeError, "expected a torch.nn.RNN"),
    (lambda: ElmanRNN.from_torch(nn.RNN(2, 3, num_layers=2)), ValueError, "one-layer"),
    (lambda: LSTM.from_torch(nn.RNN(2, 3)), TypeError, "expected a torch.nn.LSTM"),
    (lambda: LSTM.from_torch(nn.LSTM(2, 3, proj_size=2)), ValueError, "no projection"),
])
def test_bad_constructor_arguments_are_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("cls", [ElmanRNN, LSTM])
@pytest.mark.parametrize("x, error, message", [
    (torch.zeros(2, 5), ValueError, r"x must have shape \(batch, time, 3\), got \(2, 5\)"),
    (torch.zeros(2, 5, 4), ValueError, r"x must have shape \(batch, time, 3\), got \(2, 5, 4\)"),
    (torch.zeros(2, 5, 3, 1), ValueError, r"x must have shape \(batch, time, 3\)"),
    (torch.zeros(2, 0, 3), ValueError, "at least one sequence and one time step"),
    (torch.zeros(2, 5, 3, dtype=torch.long), TypeError, "floating-point"),
    (np.zeros((2, 5, 3)), TypeError, "must be a torch.Tensor"),
])
def test_bad_inputs_are_rejected(cls, x, error, message):
    with pytest.raises(error, match=message):
        cls(3, 4)(x)


@pytest.mark.parametrize("state", [torch.zeros(2, 5), torch.zeros(1, 2, 4), torch.zeros(4)])
def test_elman_rejects_wrong_state_shape(state):
    with pytest.raises(ValueError, match=r"state must have shape \(batch, hidden_size\) = \(2, 4\)"):
        ElmanRNN(3, 4)(torch.zeros(2, 5, 3), state)


@pytest.mark.parametrize("state", [torch.zeros(2, 4), (torch.zeros(2, 4),), (torch.zeros(2, 4), torch.zeros(2, 3)),
                                   (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4))])
def test_lstm_rejects_wrong_state(state):
    with pytest.raises(ValueError, match=r"state must be a pair \(h_0, c_0\) of tensors of shape \(2, 4\)"):
        LSTM(3, 4)(torch.zeros(2, 5, 3), state)


# --------------------------------------------------------------------------- CPU vs CUDA

def test_cpu_and_cuda_agree(cuda):
    x = torch.randn(8, 40, 3, generator=gen())
    for model in (ElmanRNN(3, 16, 2, generator=gen(1)), LSTM(3, 16, 2, generator=gen(1))):
        cpu = model(x)
        gpu = model.to(cuda)(x.to(cuda))
        assert gpu.outputs.device.type == "cuda"
        torch.testing.assert_close(gpu.outputs.cpu(), cpu.outputs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gpu.hidden.cpu(), cpu.hidden, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- O(T) memory, not O(T²)

def _tensors(obj):
    """The tensors inside an op's (possibly nested) arguments or results."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


class AllocatedBytes(TorchDispatchMode):
    """Count the bytes of every fresh tensor storage created by an op (views of inputs are not counted)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        seen = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                self.total += storage.nbytes()
        return out


def bytes_for_forward_and_backward(run, T: int) -> int:
    x = torch.randn(4, T, 3, generator=gen())
    with AllocatedBytes() as counter:
        run(x).square().sum().backward()
    return counter.total


def indexing_each_step(x: torch.Tensor) -> torch.Tensor:
    """The O(T²) trap: x_proj[:, t] makes backward allocate a full (B, T, H) gradient at every step."""
    model = indexing_each_step.model
    x_proj = x @ model.weight_ih.T
    h = x_proj.new_zeros(x.shape[0], model.hidden_size)
    for t in range(x.shape[1]):
        h = torch.tanh(x_proj[:, t] + h @ model.weight_hh.T)
    return h


indexing_each_step.model = ElmanRNN(3, 16)


@pytest.mark.parametrize("run", [lambda x, m=ElmanRNN(3, 16, 2): m(x).outputs,
                                 lambda x, m=LSTM(3, 16, 2): m(x).outputs], ids=["elman", "lstm"])
def test_memory_grows_linearly_in_sequence_length(run):
    ratio = bytes_for_forward_and_backward(run, 200) / bytes_for_forward_and_backward(run, 50)
    assert 3 < ratio < 6, f"bytes allocated grew {ratio:.1f}x for 4x longer sequences (O(T²) would be ~16x)"


def test_memory_guard_catches_quadratic_loop():
    ratio = (bytes_for_forward_and_backward(indexing_each_step, 200)
             / bytes_for_forward_and_backward(indexing_each_step, 50))
    assert ratio > 10, f"the O(T²) trap was not detected (ratio {ratio:.1f})"
