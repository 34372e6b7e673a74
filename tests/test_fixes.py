"""labkit.fixes against torch.nn.utils and against the formulas by hand."""

import math

import pytest
import torch
from torch import nn

from labkit import fixes

SHAPES = [[(3,)], [(4, 5), (5,)], [(2, 3, 4), (7, 7), (1,), ()]]
NORM_TYPES = [1.0, 2.0, 3.5, math.inf]


def make_params(shapes, seed, scale=1.0, without_grad=()):
    """Parameters with random gradients (both a torch and a labkit copy), some without .grad."""
    gen = torch.Generator().manual_seed(seed)
    ours, theirs = [], []
    for i, shape in enumerate(shapes):
        value = torch.randn(shape, generator=gen, dtype=torch.float64)
        grad = scale * torch.randn(shape, generator=gen, dtype=torch.float64)
        for params in (ours, theirs):
            p = nn.Parameter(value.clone())
            p.grad = None if i in without_grad else grad.clone()
            params.append(p)
    return ours, theirs


def grads(params):
    return [p.grad for p in params]


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("max_norm", [0.01, 0.5, 1e6])
def test_clip_grad_norm_matches_torch(shapes, norm_type, max_norm):
    ours, theirs = make_params(shapes, seed=len(shapes), scale=3.0)
    total = fixes.clip_grad_norm_(ours, max_norm, norm_type)
    expected_total = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    torch.testing.assert_close(total, expected_total, rtol=1e-12, atol=0)
    for g, expected in zip(grads(ours), grads(theirs)):
        torch.testing.assert_close(g, expected, rtol=1e-12, atol=1e-15)


def test_clip_grad_norm_is_global_and_keeps_direction():
    ours, _ = make_params([(3, 3), (4,)], seed=0, scale=10.0)
    before = torch.cat([g.flatten() for g in grads(ours)])
    total = fixes.clip_grad_norm_(ours, max_norm=1.0)
    after = torch.cat([g.flatten() for g in grads(ours)])
    assert total == pytest.approx(before.norm().item())
    assert after.norm().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(after / after.norm(), before / before.norm())


def test_clip_grad_norm_leaves_small_gradients_alone():
    ours, _ = make_params([(5,)], seed=1, scale=1e-3)
    before = ours[0].grad.clone()
    fixes.clip_grad_norm_(ours, max_norm=1.0)
    torch.testing.assert_close(ours[0].grad, before, rtol=0, atol=0)


def test_clip_grad_norm_skips_parameters_without_grad():
    ours, theirs = make_params([(3,), (4, 2), (6,)], seed=2, scale=5.0, without_grad={1})
    total = fixes.clip_grad_norm_(ours, 1.0)
    torch.testing.assert_close(total, torch.nn.utils.clip_grad_norm_(theirs, 1.0))
    assert ours[1].grad is None
    torch.testing.assert_close(ours[2].grad, theirs[2].grad)


def test_clip_grad_norm_accepts_a_single_tensor_and_a_generator():
    ours, theirs = make_params([(4, 4)], seed=3, scale=5.0)
    total = fixes.clip_grad_norm_(ours[0], 1.0)
    torch.testing.assert_close(total, torch.nn.utils.clip_grad_norm_(theirs[0], 1.0))
    torch.testing.assert_close(ours[0].grad, theirs[0].grad)

    model = nn.Linear(3, 2)
    model(torch.ones(1, 3)).sum().backward()
    expected = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    torch.testing.assert_close(fixes.clip_grad_norm_(model.parameters(), 1e6), expected)


def test_clip_grad_norm_with_nothing_to_clip_returns_zero():
    assert fixes.clip_grad_norm_([], 1.0).item() == 0.0
    assert fixes.clip_grad_norm_([nn.Parameter(torch.ones(2))], 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_clip_grad_norm_error_if_nonfinite(bad):
    ours, _ = make_params([(3,), (2,)], seed=4)
    ours[1].grad[0] = bad
    with pytest.raises(RuntimeError, match="non-finite|nan|inf"):
        fixes.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    assert fixes.clip_grad_norm_(ours, 1.0).isfinite().item() is False  # the default does not raise


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_norm": -1.0}, ValueError, r"max_norm must be a real number >= 0, got -1\.0"),
        ({"max_norm": math.nan}, ValueError, r"max_norm must be a real number >= 0, got nan"),
        ({"max_norm": "1.0"}, TypeError, r"max_norm must be a real number >= 0, got str"),
        ({"max_norm": None}, TypeError, r"max_norm must be a real number >= 0, got NoneType"),
        ({"max_norm": 1.0, "norm_type": 0}, ValueError, r"norm_type must be a number p > 0 .*got 0\.0"),
        ({"max_norm": 1.0, "norm_type": -2.0}, ValueError, r"norm_type must be a number p > 0"),
        ({"max_norm": 1.0, "norm_type": math.nan}, ValueError, r"norm_type must be a number p > 0"),
        ({"max_norm": 1.0, "norm_type": "fro"}, TypeError, r"norm_type must be a number p > 0 .*got str"),
    ],
)
def test_clip_grad_norm_rejects_invalid_arguments(kwargs, error, message):
    ours, _ = make_params([(3,)], seed=5)
    before = ours[0].grad.clone()
    with pytest.raises(error, match=message):
        fixes.clip_grad_norm_(ours, **kwargs)
    torch.testing.assert_close(ours[0].grad, before, rtol=0, atol=0)


def test_clip_grad_norm_accepts_a_threshold_given_as_a_tensor():
    ours, theirs = make_params([(6,)], seed=6, scale=4.0)
    fixes.clip_grad_norm_(ours, torch.tensor(0.5))
    torch.nn.utils.clip_grad_norm_(theirs, 0.5)
    torch.testing.assert_close(ours[0].grad, theirs[0].grad)


def test_clip_grad_norm_rejects_something_that_is_not_parameters():
    with pytest.raises(TypeError, match="parameters must be a tensor or an iterable of tensors, got a float"):
        fixes.clip_grad_norm_(1.0, 1.0)
    with pytest.raises(TypeError, match="got an item of type str"):
        fixes.clip_grad_norm_(["w"], 1.0)


@pytest.mark.parametrize("shapes", SHAPES)
@pytest.mark.parametrize("clip_value", [0.0, 0.3, 10.0])
def test_clip_grad_value_matches_torch(shapes, clip_value):
    ours, theirs = make_params(shapes, seed=7, scale=2.0, without_grad={1})
    assert fixes.clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for g, expected in zip(grads(ours), grads(theirs)):
        if expected is None:
            assert g is None
        else:
            torch.testing.assert_close(g, expected, rtol=0, atol=0)
            assert g.abs().max() <= clip_value


def test_clip_grad_value_skips_parameters_without_grad():
    params = [nn.Parameter(torch.ones(2))]
    fixes.clip_grad_value_(params, 1.0)  # torch 2.13's foreach path fails here
    assert params[0].grad is None


@pytest.mark.parametrize("bad", [-0.1, math.nan])
def test_clip_grad_value_rejects_invalid_threshold(bad):
    ours, _ = make_params([(3,)], seed=8)
    with pytest.raises(ValueError, match="clip_value must be a real number >= 0"):
        fixes.clip_grad_value_(ours, bad)


class TwoLayer(nn.Module):
    """Names that exercise the bias rule: torch's own names, an RNN's and short ones."""

    def __init__(self):
        super().__init__()
        gen = torch.Generator().manual_seed(9)
        self.linear = nn.Linear(3, 4, dtype=torch.float64)
        self.rnn = nn.RNN(4, 2, dtype=torch.float64)  # weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0
        self.w = nn.Parameter(torch.randn(2, 2, generator=gen, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64))
        self.b_out = nn.Parameter(torch.randn(1, generator=gen, dtype=torch.float64))
        self.bottleneck = nn.Parameter(torch.randn(2, generator=gen, dtype=torch.float64))  # a weight


BIASES = {"linear.bias", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "b", "b_out"}


def split_parameters(model):
    named = dict(model.named_parameters())
    weights = [p for n, p in named.items() if n not in BIASES]
    biases = [p for n, p in named.items() if n in BIASES]
    return weights, biases


@pytest.mark.parametrize("include_biases", [False, True])
def test_l2_penalty_value_and_gradient(include_biases):
    model, strength = TwoLayer(), 0.3
    weights, biases = split_parameters(model)
    penalized = weights + biases if include_biases else weights
    penalty = fixes.l2_penalty(model, strength, include_biases=include_biases)
    by_hand = strength / 2 * sum((p.detach() ** 2).sum() for p in penalized)
    torch.testing.assert_close(penalty, by_hand)

    penalty.backward()
    for p in penalized:
        torch.testing.assert_close(p.grad, strength * p.detach())
    for p in set(biases) - set(penalized):
        assert p.grad is None


@pytest.mark.parametrize("include_biases", [False, True])
def test_l1_penalty_value_and_gradient(include_biases):
    model, strength = TwoLayer(), 0.7
    weights, biases = split_parameters(model)
    with torch.no_grad():
        model.w[0, 0] = 0.0  # the subgradient at 0 is taken as sign(0) = 0
    penalized = weights + biases if include_biases else weights
    penalty = fixes.l1_penalty(model, strength, include_biases=include_biases)
    by_hand = strength * sum(p.detach().abs().sum() for p in penalized)
    torch.testing.assert_close(penalty, by_hand)

    penalty.backward()
    for p in penalized:
        torch.testing.assert_close(p.grad, strength * p.detach().sign())
    for p in set(biases) - set(penalized):
        assert p.grad is None


def test_penalties_on_bare_tensors_penalize_all_of_them():
    w = torch.tensor([[1.0, -2.0], [3.0, 0.5]], requires_grad=True)
    b = torch.tensor([-1.0, 4.0], requires_grad=True)
    assert fixes.l2_penalty([w, b], 2.0).item() == pytest.approx(1 + 4 + 9 + 0.25 + 1 + 16)
    assert fixes.l1_penalty((t for t in [w, b]), 2.0).item() == pytest.approx(2 * (1 + 2 + 3 + 0.5 + 1 + 4))
    assert fixes.l2_penalty(w, 1.0).item() == pytest.approx(0.5 * (1 + 4 + 9 + 0.25))


def test_penalties_of_nothing_are_zero():
    assert fixes.l2_penalty([], 1.0).item() == 0.0
    assert fixes.l1_penalty(nn.Module(), 1.0).item() == 0.0
    assert fixes.l2_penalty(nn.Linear(2, 2), 0.0).item() == 0.0


@pytest.mark.parametrize("penalty", [fixes.l1_penalty, fixes.l2_penalty])
@pytest.mark.parametrize(("bad", "error"), [(-0.1, ValueError), (math.nan, ValueError), ("0.1", TypeError)])
def test_penalties_reject_invalid_strength(penalty, bad, error):
    with pytest.raises(error, match="strength must be a real number >= 0"):
        penalty(nn.Linear(2, 2), bad)


def unroll(w_rec, x0, steps, activation=torch.tanh):
    """x_{k+1} = W σ(x_k); returns [x_0, ..., x_T]."""
    states = [x0]
    for _ in range(steps):
        states.append(activation(states[-1]) @ w_rec.T)  # (B, H)
    return states


def test_pascanu_regularizer_linear_case_by_hand():
    gen = torch.Generator().manual_seed(10)
    w_rec = torch.randn(3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    states = unroll(w_rec, x0, steps=4, activation=lambda x: x)
    loss = states[-1].pow(2).sum()
    omega = fixes.pascanu_regularizer(loss, states)

    # Linear case: ∂E/∂x_T = 2 x_T and ∂E/∂x_k = ∂E/∂x_{k+1} W; the ratio is ‖g_{k+1} W‖ / ‖g_{k+1}‖.
    w = w_rec.detach()
    g = 2 * states[-1].detach()
    by_hand = torch.zeros((), dtype=torch.float64)
    for _ in range(4):
        by_hand += ((g @ w).norm(dim=-1) / g.norm(dim=-1) - 1).pow(2).mean()
        g = g @ w
    torch.testing.assert_close(omega, by_hand)


def test_pascanu_regularizer_gradient_flows_through_the_one_step_jacobian():
    gen = torch.Generator().manual_seed(11)
    w_rec = torch.randn(3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    states = unroll(w_rec, x0, steps=3)
    loss = states[-1].sum()
    # Ω with every ∂E/∂x_{k+1} frozen as a constant, differentiated by autograd directly.
    frozen = [g.detach() for g in torch.autograd.grad(loss, states[1:], retain_graph=True)]
    (grad,) = torch.autograd.grad(fixes.pascanu_regularizer(loss, states), w_rec)

    def omega_with_frozen(w):
        def step(x):
            return torch.tanh(x) @ w.T

        xs, total = unroll(w, x0.detach(), steps=3), 0.0
        for k, g in enumerate(frozen):
            jacobian = torch.autograd.functional.jacobian(step, xs[k], create_graph=True)
            total = total + ((g @ jacobian).norm() / g.norm() - 1) ** 2
        return total

    (expected,) = torch.autograd.grad(omega_with_frozen(w_rec), w_rec)
    torch.testing.assert_close(grad, expected)


def test_pascanu_regularizer_is_zero_for_an_orthogonal_linear_recurrence():
    gen = torch.Generator().manual_seed(12)
    w_rec = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))[0].requires_grad_()
    x0 = torch.ones(2, 4, dtype=torch.float64, requires_grad=True)
    states = unroll(w_rec, x0, steps=5, activation=lambda x: x)
    omega = fixes.pascanu_regularizer(states[-1].sum(), states)
    assert omega.item() == pytest.approx(0.0, abs=1e-10)


def test_pascanu_regularizer_leaves_out_undefined_ratios():
    gen = torch.Generator().manual_seed(13)
    w_rec = torch.randn(3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    states = unroll(w_rec, x0, steps=3, activation=lambda x: x)
    # Only x_1 of the first sequence reaches the loss: ∂E/∂x_1 is zero for the second sequence and
    # ∂E/∂x_2, ∂E/∂x_3 do not exist, so one ratio is left, averaged over a batch of two.
    omega = fixes.pascanu_regularizer(states[1][0].sum(), states)
    g = torch.ones(3, dtype=torch.float64)
    by_hand = ((g @ w_rec.detach()).norm() / g.norm() - 1) ** 2 / 2
    torch.testing.assert_close(omega, by_hand)


def test_pascanu_regularizer_rejects_states_outside_the_graph():
    w_rec = torch.eye(2, requires_grad=True)
    states = unroll(w_rec, torch.ones(2), steps=2)
    with pytest.raises(ValueError, match="requires_grad=True"):
        fixes.pascanu_regularizer(states[-1].sum(), states)
    with pytest.raises(ValueError, match="at least two states"):
        fixes.pascanu_regularizer(states[-1].sum(), states[:1])


def test_clip_grad_norm_on_cuda_matches_cpu_and_torch(cuda):
    ours, theirs = make_params([(4, 5), (5,), ()], seed=14, scale=3.0)
    on_gpu = [nn.Parameter(p.detach().to(cuda)) for p in ours]
    for p, q in zip(on_gpu, ours):
        p.grad = q.grad.to(cuda)
    total_gpu = fixes.clip_grad_norm_(on_gpu, 0.5, 3.0)
    total_cpu = fixes.clip_grad_norm_(ours, 0.5, 3.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, 3.0)
    assert total_gpu.device.type == "cuda"
    torch.testing.assert_close(total_gpu.cpu(), total_cpu)
    torch.testing.assert_close(total_cpu, expected)
    for p, q in zip(on_gpu, theirs):
        torch.testing.assert_close(p.grad.cpu(), q.grad)
