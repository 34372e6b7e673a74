"""labkit.fused_lstm: the hand-written backward pass the LSTM trains with, checked against autograd.

The reference is autograd differentiating the step-by-step loop (``LSTM.forward_by_autograd``), in float64,
for every input the fused node has: x, h_0, c_0, the four weight tensors, and losses that reach the model
through the hidden states, the final h_T and the final c_T.
"""
from __future__ import annotations

import pytest
import torch

import labkit.fused_lstm
from labkit.fused_lstm import lstm_sequence, lstm_steps, lstm_steps_backward
from labkit.models import LSTM

F64 = torch.float64


def _model(input_size: int = 3, hidden_size: int = 5, output_size: int | None = 2) -> LSTM:
    return LSTM(input_size, hidden_size, output_size, generator=torch.Generator().manual_seed(3)).double()


def _inputs(B: int = 4, T: int = 7, I: int = 3, H: int = 5) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(B, T, I, generator=gen, dtype=F64, requires_grad=True)
    h0 = torch.randn(B, H, generator=gen, dtype=F64, requires_grad=True)
    c0 = torch.randn(B, H, generator=gen, dtype=F64, requires_grad=True)
    return x, h0, c0


def _loss(out, weights: torch.Tensor) -> torch.Tensor:
    """A loss that reaches the model through every output: y_t, h_T and c_T, with unequal weights."""
    h_last, c_last = out.state
    return (out.outputs * weights).sum() + 0.7 * (h_last ** 2).sum() - 1.3 * torch.sin(c_last).sum()


def _gradients(model: LSTM, forward, x, h0, c0, weights) -> list[torch.Tensor]:
    tensors = [x, h0, c0, *model.parameters()]
    loss = _loss(forward(x, (h0, c0)), weights)
    return list(torch.autograd.grad(loss, tensors))


def test_every_gradient_matches_autograd_through_the_step_by_step_loop() -> None:
    model = _model()
    x, h0, c0 = _inputs()
    weights = torch.randn(4, 7, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    fused = _gradients(model, model.forward, x, h0, c0, weights)
    reference = _gradients(model, model.forward_by_autograd, x, h0, c0, weights)
    names = ["x", "h0", "c0", *(name for name, _ in model.named_parameters())]
    for name, ours, theirs in zip(names, fused, reference):
        assert torch.allclose(ours, theirs, rtol=0, atol=1e-12), name
        assert theirs.abs().max() > 1e-3, f"{name}: the reference gradient is ~0, the check would be empty"


def test_forward_is_the_same_function_as_the_loop() -> None:
    model = _model()
    x, h0, c0 = _inputs()
    ours, theirs = model(x, (h0, c0)), model.forward_by_autograd(x, (h0, c0))
    for a, b in zip((ours.outputs, ours.hidden, *ours.state), (theirs.outputs, theirs.hidden, *theirs.state)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, rtol=0, atol=1e-14)


def test_a_wrong_backward_would_be_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the tanh derivative (1 − y²) in the backward pass: the comparison above must then fail."""
    model = _model()
    x, h0, c0 = _inputs()
    weights = torch.ones(4, 7, 2, dtype=F64)
    reference = _gradients(model, model.forward_by_autograd, x, h0, c0, weights)
    monkeypatch.setattr(labkit.fused_lstm, "_through_tanh", lambda grad, y: grad)
    wrong = _gradients(model, model.forward, x, h0, c0, weights)
    assert not torch.allclose(wrong[4], reference[4], atol=1e-6)  # weight_ih


def test_totals_are_the_retained_gradients_of_each_hidden_state() -> None:
    """δh_t from the fused backward equals h_t.grad when autograd keeps every h_t; the model records its norms."""
    model = _model(output_size=None)
    x, h0, c0 = (t.detach() for t in _inputs())
    model.record_hidden_grads = True
    model.forward_by_autograd(x, (h0, c0)).hidden.pow(2).sum().backward()
    assert len(model.hidden_steps) == x.shape[1] and model.has_hidden_grads()
    retained = torch.stack([h.grad for h in model.hidden_steps])  # (T, B, H)
    retained_norms = model.hidden_grad_norms()

    trace = lstm_steps(x.transpose(0, 1), h0, c0, model.weight_ih, model.weight_hh, model.bias_ih, model.bias_hh)
    totals = lstm_steps_backward(trace, model.weight_ih, model.weight_hh, 2 * trace.hidden).hidden
    assert torch.allclose(totals, retained, rtol=0, atol=1e-12)

    out = model(x, (h0, c0))  # the fused path records the norms during backward
    assert model.hidden_steps == [] and not model.has_hidden_grads()
    out.hidden.pow(2).sum().backward()
    assert model.has_hidden_grads()
    assert torch.allclose(model.hidden_grad_norms(), retained_norms, rtol=0, atol=1e-12)
    assert torch.allclose(retained_norms, torch.linalg.vector_norm(totals, dim=(1, 2)), rtol=0, atol=1e-12)


def test_nothing_is_recorded_unless_asked() -> None:
    model = _model(output_size=None)
    x, h0, c0 = (t.detach() for t in _inputs())
    model(x, (h0, c0)).hidden.sum().backward()
    assert not model.has_hidden_grads()
    with pytest.raises(RuntimeError, match="record_hidden_grads = True"):
        model.hidden_grad_norms()


def test_gradient_of_the_final_state_alone() -> None:
    """Only h_T and c_T used (the hidden-state output unused): autograd passes zeros for it, as it should."""
    model = _model(output_size=None)
    x, h0, c0 = _inputs()

    def gradient(forward) -> tuple[torch.Tensor, ...]:
        h_last, c_last = forward(x, (h0, c0)).state
        return torch.autograd.grad((h_last * c_last).sum(), [x, model.weight_hh])

    fused, reference = gradient(model.forward), gradient(model.forward_by_autograd)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-12) for a, b in zip(fused, reference))


def test_no_grad_inputs_and_no_grad_mode() -> None:
    model = _model()
    x = torch.randn(2, 6, 3, dtype=F64)  # x needs no gradient: the fused backward skips ∂L/∂x
    model(x).outputs.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with torch.no_grad():
        out = model(x)
    assert not out.outputs.requires_grad
    assert torch.allclose(out.outputs, model.forward_by_autograd(x).outputs, atol=1e-14)


def test_non_contiguous_input_and_float32() -> None:
    model = LSTM(3, 8, generator=torch.Generator().manual_seed(0))
    x = torch.randn(6, 5, 3).transpose(0, 1)  # (B=5, T=6, I=3), not contiguous
    assert not x.is_contiguous()
    ours = torch.autograd.grad(model(x).hidden.sum(), list(model.parameters()))
    theirs = torch.autograd.grad(model.forward_by_autograd(x).hidden.sum(), list(model.parameters()))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, theirs))


def test_second_derivatives_are_refused_with_a_pointer_to_the_autograd_path() -> None:
    model = _model()
    x, h0, c0 = _inputs()
    (grad_x,) = torch.autograd.grad(model(x, (h0, c0)).outputs.sum(), [x], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|twice"):
        grad_x.sum().backward()
    (grad_x,) = torch.autograd.grad(model.forward_by_autograd(x, (h0, c0)).outputs.sum(), [x], create_graph=True)
    grad_x.sum().backward()  # the step-by-step path supports them
    assert model.weight_hh.grad is not None


def test_lstm_sequence_is_batch_first() -> None:
    model = _model(output_size=None)
    x, h0, c0 = (t.detach() for t in _inputs(B=4, T=7))
    hidden, h_last, c_last = lstm_sequence(x, h0, c0, model.weight_ih, model.weight_hh, model.bias_ih,
                                           model.bias_hh)
    assert hidden.shape == (4, 7, 5) and h_last.shape == c_last.shape == (4, 5)
    assert torch.equal(hidden[:, -1], h_last)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
def test_cuda_gradients_match_cpu() -> None:
    model = _model()
    x, h0, c0 = _inputs()
    weights = torch.randn(4, 7, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    cpu = _gradients(model, model.forward, x, h0, c0, weights)
    gpu_model = _model().cuda()
    moved = [t.detach().cuda().requires_grad_() for t in (x, h0, c0)]
    gpu = _gradients(gpu_model, gpu_model.forward, *moved, weights.cuda())
    assert all(torch.allclose(a, b.cpu(), atol=1e-10) for a, b in zip(cpu, gpu))
