"""Forward + backward cost grows linearly in the sequence length T: counted, not timed.

Wall-clock time is for benchmarks/ (a busy machine makes it noisy); these count what the time is made of.
For T and 2T steps, the number of torch operations run (forward and backward) and the bytes autograd
saves for the backward pass must both roughly double. An O(T²) trap, such as a step that looks back at
every earlier state, would quadruple them; the last two tests check that the counters do catch one.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from labkit.bptt import elman_bptt, lstm_bptt
from labkit.models import LSTM, ElmanRNN

T = 50  # compared with 2T
B, I, H = 4, 3, 16


class OpCounter(TorchDispatchMode):
    """Count the aten operations run while active, in the forward and in the backward pass."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _inputs(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(B, steps, I, generator=gen), torch.randn(B, steps, 2, generator=gen)


def op_count(train_step, steps: int) -> int:
    x, y = _inputs(steps)
    train_step(x, y)  # warm-up: first calls may run one-off operations
    with OpCounter() as counter:
        train_step(x, y)
    return counter.count


def saved_bytes(train_step, steps: int) -> int:
    """Bytes of the distinct tensors autograd keeps for the backward pass of one training step."""
    x, y = _inputs(steps)
    seen = set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        seen.add((tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.element_size()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        train_step(x, y)
    return sum(torch.Size(shape).numel() * size for _, shape, _, size in seen)


def mse(outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((outputs - y) ** 2).mean()


def autograd_step(model: torch.nn.Module):
    def step(x, y):
        model.zero_grad(set_to_none=True)
        mse(model(x).outputs, y).backward()
    return step


def recording(model: LSTM | ElmanRNN) -> LSTM | ElmanRNN:
    model.record_hidden_grads = True
    return model


def attending_to_the_past(x: torch.Tensor, y: torch.Tensor) -> None:
    """The O(T²) control: every step mixes in all earlier states, by a product (so autograd keeps them all)."""
    model = attending_to_the_past.model
    x_proj = x @ model.weight_ih.T
    h = x_proj.new_zeros(x.shape[0], H)
    states = [h]
    for x_t in x_proj.unbind(1):
        past = torch.stack(states, dim=1)  # (B, t, H)
        h = torch.tanh(x_t + h @ model.weight_hh.T + (past * h.unsqueeze(1)).mean(1))
        states.append(h)
    mse(model.readout(torch.stack(states[1:], dim=1)), y).backward()


def summing_the_past(x: torch.Tensor, y: torch.Tensor) -> None:
    """The O(T²) control for operation counts: every step adds up all earlier states one by one."""
    model = summing_the_past.model
    h = x.new_zeros(x.shape[0], H)
    states = []
    for x_t in x.unbind(1):
        h = torch.tanh(x_t @ model.weight_ih.T + h @ model.weight_hh.T)
        states.append(h + 0.01 * sum(states, torch.zeros_like(h)))
    mse(model.readout(torch.stack(states, dim=1)), y).backward()


attending_to_the_past.model = summing_the_past.model = ElmanRNN(I, H, 2)

TRAIN_STEPS = {
    "LSTM": lambda: autograd_step(LSTM(I, H, 2)),
    "LSTM recording h_t grads": lambda: autograd_step(recording(LSTM(I, H, 2))),
    "ElmanRNN": lambda: autograd_step(ElmanRNN(I, H, 2)),
    "ElmanRNN recording h_t grads": lambda: autograd_step(recording(ElmanRNN(I, H, 2))),
}
MANUAL_BPTT = {
    "elman_bptt": lambda: lambda x, y, model=ElmanRNN(I, H, 2): elman_bptt(model, x, y, mse),
    "lstm_bptt": lambda: lambda x, y, model=LSTM(I, H, 2): lstm_bptt(model, x, y, mse),
}


@pytest.mark.parametrize("name", list(TRAIN_STEPS) + list(MANUAL_BPTT))
def test_operation_count_is_linear_in_sequence_length(name):
    step = {**TRAIN_STEPS, **MANUAL_BPTT}[name]()
    ratio = op_count(step, 2 * T) / op_count(step, T)
    assert 1.7 < ratio < 2.1, f"{name}: {ratio:.2f}x the operations for twice the steps (linear: 2x)"


@pytest.mark.parametrize("name", list(TRAIN_STEPS))
def test_saved_memory_is_linear_in_sequence_length(name):
    step = TRAIN_STEPS[name]()
    ratio = saved_bytes(step, 2 * T) / saved_bytes(step, T)
    assert 1.7 < ratio < 2.1, f"{name}: autograd kept {ratio:.2f}x the bytes for twice the steps (linear: 2x)"


def test_saved_memory_guard_catches_a_quadratic_model():
    ratio = saved_bytes(attending_to_the_past, 2 * T) / saved_bytes(attending_to_the_past, T)
    assert ratio > 3, f"the O(T²) control was not detected: {ratio:.2f}x"


def test_operation_count_guard_catches_a_quadratic_model():
    ratio = op_count(summing_the_past, 2 * T) / op_count(summing_the_past, T)
    assert ratio > 3, f"the O(T²) control was not detected: {ratio:.2f}x"


@pytest.mark.parametrize("make", [lambda: LSTM(I, H, 2), lambda: ElmanRNN(I, H, 2)], ids=["LSTM", "ElmanRNN"])
def test_saved_memory_is_linear_on_cuda(make, cuda):
    step = autograd_step(make().to(cuda))

    def on_gpu(x, y):
        step(x.to(cuda), y.to(cuda))

    ratio = saved_bytes(on_gpu, 2 * T) / saved_bytes(on_gpu, T)
    assert 1.7 < ratio < 2.1, f"{ratio:.2f}x the bytes on CUDA for twice the steps (linear: 2x)"


def test_benchmark_suite_runs_on_cuda(cuda):
    """benchmarks/run.py's GPU suite (the same LSTM comparison, speed-ups, CPU/GPU agreement), one repeat."""
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import run

    section = run.suite_cuda(argparse.Namespace(quick=True, repeats=1))
    assert section["available"] and section["rows"][0]["device"].startswith("cuda")
    assert section["agreement"]["agree"], section["agreement"]
