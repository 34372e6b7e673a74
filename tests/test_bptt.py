"""labkit.bptt: the hand-written backward pass through time equals autograd, number for number."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from labkit import bptt
from labkit.bptt import (ElmanCache, elman_backward, elman_bptt, elman_forward, elman_truncated_bptt,
                         jacobian_product_norms, lstm_backward, lstm_bptt, lstm_forward)
from labkit.models import LSTM, ElmanRNN
from labkit.tasks import SequenceTask

B, I, H, O = 3, 4, 6, 2
F64 = torch.float64


def rel_err(actual: Tensor, expected: Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (absolute error when ``expected`` is zero)."""
    scale = expected.norm().item()
    return (actual - expected).norm().item() / (scale if scale > 0 else 1.0)


def elman(nonlinearity: str = "tanh", readout: bool = True, seed: int = 0, **kwargs) -> ElmanRNN:
    gen = torch.Generator().manual_seed(seed)
    return ElmanRNN(I, H, O if readout else None, nonlinearity=nonlinearity, generator=gen, **kwargs).to(F64)


def lstm(readout: bool = True, seed: int = 0) -> LSTM:
    return LSTM(I, H, O if readout else None, generator=torch.Generator().manual_seed(seed)).to(F64)


def inputs(T: int, seed: int = 1, batch: int = B) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, T, I, generator=gen, dtype=F64), 0.5 * torch.randn(batch, H, generator=gen, dtype=F64)


def loss_fn(outputs: Tensor, y: Tensor) -> Tensor:
    """A loss that uses every output at every step, nonlinearly."""
    return ((outputs - y) ** 2).mean() + 0.1 * outputs.sin().sum()


def autograd_reference(model: nn.Module, x: Tensor, state, y: Tensor) -> tuple[Tensor, dict[str, Tensor], Tensor]:
    """Loss, parameter gradients and ‖∂L/∂h_t‖ from ordinary autograd (retained h_t grads)."""
    model.zero_grad()
    model.record_hidden_grads = True
    loss = loss_fn(model(x, state).outputs, y)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    norms = model.hidden_grad_norms()
    model.record_hidden_grads = False
    return loss.detach(), grads, norms


def assert_grads_equal(actual: dict[str, Tensor], expected: dict[str, Tensor], tol: float = 1e-10) -> None:
    assert list(actual) == list(expected)
    for name in expected:
        assert rel_err(actual[name], expected[name]) <= tol, name


# ---------------------------------------------------------------------------------------------- Elman RNN

@pytest.mark.parametrize("T", [2, 5, 50])
@pytest.mark.parametrize("readout", [True, False])
@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid", "relu"])
def test_elman_manual_bptt_equals_autograd(nonlinearity: str, readout: bool, T: int) -> None:
    model = elman(nonlinearity, readout)
    x, h0 = inputs(T)
    y = torch.randn(B, T, O if readout else H, dtype=F64)
    h0_leaf = h0.clone().requires_grad_(True)
    loss_ref, grads_ref, norms_ref = autograd_reference(model, x, h0_leaf, y)

    loss, result = elman_bptt(model, x, y, loss_fn, h0)

    assert torch.allclose(loss, loss_ref, rtol=1e-12, atol=0)
    assert_grads_equal(result.grads, grads_ref)
    assert rel_err(result.grad_h0, h0_leaf.grad) <= 1e-10
    assert result.hidden_grad_norms.shape == (T,)
    assert rel_err(result.hidden_grad_norms, norms_ref) <= 1e-10
    assert result.cell_grad_norms is None and result.grad_c0 is None


def test_elman_backward_takes_any_output_gradient() -> None:
    model = elman("tanh")
    x, h0 = inputs(7)
    grad_outputs = torch.randn(B, 7, O, dtype=F64)
    model.zero_grad()
    model(x, h0).outputs.backward(grad_outputs)

    result = elman_backward(model, elman_forward(model, x, h0), grad_outputs)

    assert_grads_equal(result.grads, {name: p.grad for name, p in model.named_parameters()})


def test_elman_forward_matches_the_model_and_continues_from_its_final_state() -> None:
    model = elman("tanh")
    x, h0 = inputs(10)
    reference = model(x, h0)
    cache = elman_forward(model, x, h0)
    assert torch.equal(cache.outputs, reference.outputs.detach())
    assert torch.equal(cache.final_state, reference.state.detach())
    second_half = elman_forward(model, x[:, 5:], elman_forward(model, x[:, :5], h0).final_state)
    assert torch.allclose(second_half.hidden, reference.hidden[:, 5:], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("make_task", [lambda: SequenceTask.adding(12), lambda: SequenceTask.temporal_order(12)])
def test_elman_bptt_works_with_a_sequence_task_loss(make_task) -> None:
    task = make_task()
    model = ElmanRNN(task.input_size, 8, task.output_size).to(F64)
    x, y = task.sample(5)
    x = x.to(F64)
    model.zero_grad()
    task.loss(model(x).outputs, y).backward()

    loss, result = elman_bptt(model, x, y, task.loss)

    assert torch.allclose(loss, task.loss(model(x).outputs, y).detach())
    assert_grads_equal(result.grads, {name: p.grad for name, p in model.named_parameters()})


def test_elman_float32_matches_autograd_to_float32_precision() -> None:
    model = elman("tanh").float()
    x, h0 = (t.float() for t in inputs(30))
    y = torch.randn(B, 30, O)
    model.zero_grad()
    loss_fn(model(x, h0).outputs, y).backward()
    _, result = elman_bptt(model, x, y, loss_fn, h0)
    assert_grads_equal(result.grads, {name: p.grad for name, p in model.named_parameters()}, tol=1e-5)


def test_set_grads_puts_the_manual_gradients_where_an_optimizer_looks() -> None:
    model = elman("relu")
    x, h0 = inputs(6)
    _, result = elman_bptt(model, x, torch.zeros(B, 6, O, dtype=F64), loss_fn, h0)
    result.set_grads_(model)
    for name, p in model.named_parameters():
        assert torch.equal(p.grad, result.grads[name])


# ------------------------------------------------------------------------------------ Jacobian products

def autograd_jacobian_norm(model: ElmanRNN, x: Tensor, h_t: Tensor, t: int) -> float:
    """‖∂h_T/∂h_t‖₂ for one sequence (x of shape (1, T, I)), by torch.autograd.functional.jacobian."""
    if t == x.shape[1]:
        return 1.0
    jac = torch.autograd.functional.jacobian(lambda h: model(x[:, t:], h.unsqueeze(0)).state[0], h_t)
    return torch.linalg.matrix_norm(jac, ord=2).item()  # (H, H): rows index h_T, columns h_t


@pytest.mark.parametrize("nonlinearity", ["tanh", "sigmoid", "relu"])
def test_jacobian_norms_equal_autograd_jacobians(nonlinearity: str) -> None:
    T = 6
    model = elman(nonlinearity, gain=1.5, init="gaussian")
    x, h0 = inputs(T, batch=2)
    hidden = model(x, h0).hidden.detach()  # (2, T, H)

    per_sequence = jacobian_product_norms(model, x, h0)  # (2, T)
    _, result = elman_bptt(model, x, torch.zeros(2, T, O, dtype=F64), loss_fn, h0, jacobian_norms=True)

    assert per_sequence.shape == (2, T)
    for b in range(2):
        for t in range(1, T + 1):
            expected = autograd_jacobian_norm(model, x[b:b + 1], hidden[b, t - 1], t)
            assert per_sequence[b, t - 1].item() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert torch.equal(result.jacobian_norms, per_sequence[0])  # the report is for the first sequence


def test_jacobian_norms_follow_matrix_powers_in_the_near_linear_regime() -> None:
    """Tiny inputs, no biases, h_0 = 0: tanh stays at its linear part, so ∂h_T/∂h_k ≈ W_hh^{T−k}."""
    T = 12
    model = elman("tanh", init="gaussian", gain=1.3)
    with torch.no_grad():
        model.bias_ih.zero_()
        model.bias_hh.zero_()
    x = 1e-6 * inputs(T, batch=1)[0]

    norms = jacobian_product_norms(model, x)[0]

    W = model.weight_hh.detach()
    for k in range(1, T + 1):
        expected = torch.linalg.matrix_norm(torch.linalg.matrix_power(W, T - k), ord=2).item()
        assert norms[k - 1].item() == pytest.approx(expected, rel=1e-6)


def test_jacobian_norms_are_computed_only_when_asked_for() -> None:
    model = elman("tanh")
    x, h0 = inputs(5)
    cache, grad_outputs = elman_forward(model, x, h0), torch.ones(B, 5, O, dtype=F64)
    assert elman_backward(model, cache, grad_outputs).jacobian_norms is None
    with_norms = elman_backward(model, cache, grad_outputs, jacobian_norms=True)
    assert torch.equal(with_norms.jacobian_norms, jacobian_product_norms(model, x, h0)[0])


# ---------------------------------------------------------------------------------------------- truncated BPTT

@pytest.mark.parametrize("chunk_len", [1, 3, 4, 10])
def test_truncated_bptt_equals_autograd_with_detach_between_chunks(chunk_len: int) -> None:
    T = 10
    model = elman("tanh")
    x, h0 = inputs(T)
    y = torch.randn(B, T, O, dtype=F64)
    h0_leaf = h0.clone().requires_grad_(True)
    model.zero_grad()
    model.record_hidden_grads = True
    state, outputs, hidden_steps = h0_leaf, [], []
    for x_chunk in x.split(chunk_len, dim=1):
        run = model(x_chunk, state)
        outputs.append(run.outputs)
        hidden_steps += model.hidden_steps
        state = run.state.detach()  # the truncation
    loss_ref = loss_fn(torch.cat(outputs, dim=1), y)
    loss_ref.backward()

    loss, result = elman_truncated_bptt(model, x, y, loss_fn, chunk_len, h0)

    assert torch.allclose(loss, loss_ref.detach(), rtol=1e-12, atol=0)
    assert_grads_equal(result.grads, {name: p.grad for name, p in model.named_parameters()})
    assert rel_err(result.grad_h0, h0_leaf.grad) <= 1e-10
    assert rel_err(result.hidden_grad_norms, torch.stack([h.grad.norm() for h in hidden_steps])) <= 1e-10
    assert torch.equal(result.final_state, state)


def test_truncation_changes_the_gradient_and_a_full_length_chunk_does_not() -> None:
    model = elman("tanh", init="orthogonal")
    x, h0 = inputs(12)
    y = torch.randn(B, 12, O, dtype=F64)
    _, full = elman_bptt(model, x, y, loss_fn, h0)
    _, whole = elman_truncated_bptt(model, x, y, loss_fn, 12, h0)
    _, cut = elman_truncated_bptt(model, x, y, loss_fn, 3, h0)
    assert_grads_equal(whole.grads, full.grads)
    assert rel_err(cut.grads["weight_hh"], full.grads["weight_hh"]) > 1e-3


# ---------------------------------------------------------------------------------------------- LSTM

def lstm_autograd_reference(model: LSTM, x: Tensor, h0: Tensor, c0: Tensor, y: Tensor):
    """The LSTM step by step in autograd with every c_t retained, to read ‖∂L/∂c_t‖ off ``c_t.grad``."""
    W_ih, W_hh, bias = model.weight_ih, model.weight_hh, model.bias_ih + model.bias_hh
    h, c, hs, cs = h0, c0, [], []
    for x_t in x.unbind(1):
        i, f, g, o = (x_t @ W_ih.T + h @ W_hh.T + bias).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        c.retain_grad()
        h.retain_grad()
        hs.append(h)
        cs.append(c)
    hidden = torch.stack(hs, dim=1)
    outputs = model.readout(hidden) if model.readout is not None else hidden
    assert torch.allclose(outputs, model(x, (h0, c0)).outputs, rtol=1e-12, atol=1e-14)  # a faithful reference
    model.zero_grad()
    loss_fn(outputs, y).backward()
    return torch.stack([h.grad.norm() for h in hs]), torch.stack([c.grad.norm() for c in cs])


@pytest.mark.parametrize("T", [2, 5, 50])
@pytest.mark.parametrize("readout", [True, False])
def test_lstm_manual_bptt_equals_autograd(readout: bool, T: int) -> None:
    model = lstm(readout)
    x, h0 = inputs(T)
    c0 = torch.randn(B, H, dtype=F64, generator=torch.Generator().manual_seed(5))
    y = torch.randn(B, T, O if readout else H, dtype=F64)
    h0_leaf, c0_leaf = h0.clone().requires_grad_(True), c0.clone().requires_grad_(True)
    loss_ref, grads_ref, norms_ref = autograd_reference(model, x, (h0_leaf, c0_leaf), y)

    loss, result = lstm_bptt(model, x, y, loss_fn, (h0, c0))

    assert torch.allclose(loss, loss_ref, rtol=1e-12, atol=0)
    assert_grads_equal(result.grads, grads_ref)
    assert rel_err(result.grad_h0, h0_leaf.grad) <= 1e-10
    assert rel_err(result.grad_c0, c0_leaf.grad) <= 1e-10
    assert rel_err(result.hidden_grad_norms, norms_ref) <= 1e-10
    hidden_norms, cell_norms = lstm_autograd_reference(model, x, h0, c0, y)
    assert rel_err(result.hidden_grad_norms, hidden_norms) <= 1e-10
    assert result.cell_grad_norms.shape == (T,)
    assert rel_err(result.cell_grad_norms, cell_norms) <= 1e-10
    assert result.jacobian_norms is None


def test_lstm_forward_matches_the_model_and_continues_from_its_final_state() -> None:
    model = lstm()
    x, _ = inputs(8)
    reference = model(x)
    cache = lstm_forward(model, x)
    assert torch.equal(cache.outputs, reference.outputs.detach())
    second_half = lstm_forward(model, x[:, 4:], lstm_forward(model, x[:, :4]).final_state)
    assert torch.allclose(second_half.outputs, reference.outputs[:, 4:], rtol=1e-12, atol=1e-14)
    assert torch.allclose(second_half.final_state[1], reference.state[1], rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------------------- the checks catch mistakes

def test_a_transposed_recurrent_weight_in_the_backward_pass_is_caught() -> None:
    """The classic bug: W_hh instead of W_hhᵀ in δ_{t-1} = W_hhᵀ g_t. Same forward, wrong backward."""
    model = elman("tanh")
    x, h0 = inputs(8)
    grad_outputs = torch.randn(B, 8, O, dtype=F64)
    cache = elman_forward(model, x, h0)
    wrong = copy.deepcopy(model)
    with torch.no_grad():
        wrong.weight_hh.copy_(model.weight_hh.T)

    right, buggy = elman_backward(model, cache, grad_outputs), elman_backward(wrong, cache, grad_outputs)

    assert rel_err(buggy.grads["weight_ih"], right.grads["weight_ih"]) > 1e-2
    assert rel_err(buggy.grad_h0, right.grad_h0) > 1e-2


def test_a_missing_activation_derivative_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    model = elman("tanh")
    x, h0 = inputs(8)
    grad_outputs = torch.randn(B, 8, O, dtype=F64)
    cache = elman_forward(model, x, h0)
    right = elman_backward(model, cache, grad_outputs)
    monkeypatch.setattr(bptt, "activation_derivative", lambda name, h: torch.ones_like(h))  # σ' dropped

    buggy = elman_backward(model, cache, grad_outputs)

    assert rel_err(buggy.grads["weight_hh"], right.grads["weight_hh"]) > 1e-2


# ---------------------------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_with_a_message_that_says_what_was_expected() -> None:
    model = elman("tanh")
    x, h0 = inputs(5)
    cache = elman_forward(model, x, h0)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, 4\), got \(3, 5, 3\)"):
        elman_forward(model, x[..., :3])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, time, 4\)"):
        elman_forward(model, x[0])
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        elman_forward(model, x.tolist())
    with pytest.raises(TypeError, match="x has dtype torch.float32 but the model's parameters have dtype"):
        elman_forward(model, x.float())
    with pytest.raises(ValueError, match=r"h0 must have shape \(3, 6\), got \(3, 5\)"):
        elman_forward(model, x, h0[:, :5])
    with pytest.raises(ValueError, match=r"grad_outputs must have shape \(3, 5, 2\), got \(3, 5, 6\)"):
        elman_backward(model, cache, torch.zeros(B, 5, H, dtype=F64))
    with pytest.raises(TypeError, match="grad_outputs must have dtype torch.float64 like the model, got .*float32"):
        elman_backward(model, cache, torch.zeros(B, 5, O))
    with pytest.raises(TypeError, match="model must be a labkit.models.ElmanRNN, got RNN"):
        elman_forward(nn.RNN(I, H, batch_first=True), x)
    with pytest.raises(TypeError, match="model must be a labkit.models.LSTM, got ElmanRNN"):
        lstm_forward(model, x)
    with pytest.raises(TypeError, match="cache must be an LSTMCache"):
        lstm_backward(lstm(), cache, torch.zeros(B, 5, O, dtype=F64))
    with pytest.raises(ValueError, match=r"cache is for input/hidden sizes \(4, 6\), the model has \(4, 7\)"):
        elman_backward(ElmanRNN(I, 7, O).to(F64), cache, torch.zeros(B, 5, O, dtype=F64))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(3, 6\)"):
        lstm_forward(lstm(), x, (h0, h0[:1]))
    with pytest.raises(TypeError, match=r"state must be a pair \(h_0, c_0\)"):
        lstm_forward(lstm(), x, h0)
    with pytest.raises(ValueError, match="chunk_len must be an int >= 1, got 0"):
        elman_truncated_bptt(model, x, x, loss_fn, 0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor, got \\(3, 5, 2\\)"):
        elman_bptt(model, x, None, lambda outputs, y: outputs)


def test_the_cache_is_a_dataclass_of_detached_tensors() -> None:
    model = elman("tanh")
    x, h0 = inputs(4)
    cache = elman_forward(model, x, h0.requires_grad_(True))
    assert isinstance(cache, ElmanCache)
    assert not any(t.requires_grad for t in (cache.x, cache.h0, cache.hidden, cache.outputs))


def test_manual_bptt_runs_on_the_gpu_and_equals_autograd_there(cuda: torch.device) -> None:
    x, h0 = (t.to(cuda) for t in inputs(20))
    y = torch.randn(B, 20, O, dtype=F64, device=cuda)
    for model, bptt_fn, state in ((elman("tanh").to(cuda), elman_bptt, h0), (lstm().to(cuda), lstm_bptt, None)):
        model.zero_grad()
        loss_fn(model(x, state).outputs, y).backward()
        _, result = bptt_fn(model, x, y, loss_fn, state)
        assert result.grads["weight_hh"].device.type == "cuda"
        assert_grads_equal(result.grads, {name: p.grad for name, p in model.named_parameters()})
