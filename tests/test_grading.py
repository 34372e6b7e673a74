"""labkit.grading: the messages students see, seeded inputs, and the guard against calling the reference."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.utils.clip_grad
from torch import nn

from labkit import fixes
from labkit.grading import (
    AUTOGRAD,
    CLIPPING,
    REGULARIZATION,
    ReferenceUsedError,
    assert_close,
    forbid_references,
    seeded_inputs,
)

# ---------------------------------------------------------------------------------------------------
# assert_close


@pytest.mark.parametrize(
    ("actual", "expected"),
    [
        (torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])),
        (torch.tensor([1.0, 2.0], dtype=torch.float32), np.array([1.0, 2.0])),
        (np.float32(0.5), 0.5),
        (3, 3.0),
        ([[1.0, 2.0], [3.0, 4.0]], torch.tensor([[1.0, 2.0], [3.0, 4.0]])),
        ([torch.tensor(1.0), torch.tensor(2.0)], [1.0, 2.0]),
        ((torch.zeros(2), 1.5), (torch.zeros(2), 1.5)),
        ({"loss": 1.0, "grad": torch.ones(3)}, {"loss": 1.0, "grad": np.ones(3)}),
        (torch.tensor([1.0, 1e9]) * (1 + 1e-6), torch.tensor([1.0, 1e9])),  # within rtol
        (torch.tensor([float("nan"), float("inf")]), torch.tensor([float("nan"), float("inf")])),
        (torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([1.0, 2.0])),
        (torch.tensor(True), 1.0),
        (torch.zeros(0, 3), torch.zeros(0, 3)),
    ],
)
def test_assert_close_passes_on_equal_values(actual, expected):
    assert_close(actual, expected, name="x")


def failure_message(actual, expected, **kwargs):
    kwargs.setdefault("name", "total_norm")
    with pytest.raises(AssertionError) as failure:
        assert_close(actual, expected, **kwargs)
    return str(failure.value)


def test_assert_close_names_the_worst_entry():
    expected = torch.zeros(3, 4, dtype=torch.float64)
    actual = expected.clone()
    actual[0, 1] = 1e-3
    actual[2, 3] = 0.5
    message = failure_message(actual, expected, name="grad_w")
    assert "`grad_w`" in message
    assert "2 of 12 entries differ" in message
    assert "at index (2, 3)" in message
    assert "got 0.5, expected 0" in message
    assert "absolute error 0.5" in message


def test_assert_close_reports_relative_error_of_a_scalar():
    message = failure_message(torch.tensor(2.2), 2.0, name="loss")
    assert message.startswith("`loss` does not match the expected value: got 2.2, expected 2 ")
    assert "relative error 0.1" in message
    assert "index" not in message


def test_assert_close_uses_the_tolerances_given():
    assert_close(1.001, 1.0, name="x", rtol=1e-2)
    assert_close(1e-6, 0.0, name="x", atol=1e-5)
    assert "allowed: 0 + 0·|expected|" in failure_message(1.0 + 1e-12, 1.0, rtol=0, atol=0)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert "absolute error 1e-12" in failure_message(one + 1e-12, one, rtol=0, atol=0)  # compared in float64


def test_assert_close_shape_mismatch():
    message = failure_message(torch.zeros(4, 3), torch.zeros(3, 4), name="W_rec")
    assert message == "`W_rec` has shape (4, 3) but expected (3, 4)"
    assert "has shape (1,) but expected ()" in failure_message(torch.tensor([1.0]), 1.0)


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_assert_close_non_finite_values(bad, shown):
    actual = torch.ones(2, 3)
    actual[1, 0] = bad
    actual[1, 2] = bad
    message = failure_message(actual, torch.ones(2, 3), name="h")
    assert f"`h` holds {shown} at index (1, 0) where 1 was expected" in message
    assert "2 of 6 entries are not finite" in message


@pytest.mark.parametrize(
    ("actual", "expected", "fragment"),
    [
        (None, 1.0, "`total_norm` is None: did you forget to `return` it?"),
        ("1.0", 1.0, "`total_norm` should be a number or a tensor, but it is the string '1.0'"),
        (object(), 1.0, "should be a number or a tensor, but it is a object"),
        (np.array(["a"], dtype=object), ["a"], "dtype object"),
        ([torch.zeros(2), torch.zeros(3)], torch.zeros(2, 2), "items with different shapes"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], "`total_norm` has 2 items but expected 3"),
        ((1.0, 2.5), (1.0, 2.0), "`total_norm[1]` does not match"),
        ({"a": 1.0}, {"a": 1.0, "b": 2.0}, "has keys ['a'] but expected ['a', 'b']"),
        ({"a": 1.0, "b": 3.0}, {"a": 1.0, "b": 2.0}, "`total_norm['b']` does not match"),
        (1.0, {"a": 1.0}, "`total_norm` should be a dict but it is a float"),
    ],
)
def test_assert_close_explains_wrong_types_and_structure(actual, expected, fragment):
    assert fragment in failure_message(actual, expected)


def test_assert_close_appends_a_hint():
    hint = "Did you clip each parameter on its own instead of the global norm?"
    assert failure_message(2.0, 1.0, hint=hint).endswith(f"\nHint: {hint}")


def test_assert_close_writes_nothing_to_stderr(capfd):
    read_only = np.ones(3)
    read_only.flags.writeable = False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert_close(read_only, np.ones(3), name="x")
        assert_close(1 + 0j, 1.0, name="x")
        for actual, expected in [(None, 1.0), (torch.tensor([np.nan]), [1.0]), (2 + 1j, 2.0), (1.0, [1.0])]:
            with pytest.raises(AssertionError):
                assert_close(actual, expected, name="x")
    assert caught == []
    assert capfd.readouterr() == ("", "")


# ---------------------------------------------------------------------------------------------------
# seeded_inputs


def test_seeded_inputs_are_deterministic_and_shaped():
    x, w, b = seeded_inputs(0, (4, 3), (3, 3), 3)
    x2, w2, b2 = seeded_inputs(0, (4, 3), (3, 3), 3)
    assert (x.shape, w.shape, b.shape) == ((4, 3), (3, 3), (3,))
    assert x.dtype == torch.float64
    for first, second in [(x, x2), (w, w2), (b, b2)]:
        assert torch.equal(first, second)
    assert not torch.equal(seeded_inputs(1, (4, 3))[0], x)
    assert seeded_inputs(0, (2,), dtype=torch.float32)[0].dtype == torch.float32


def test_seeded_inputs_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    seeded_inputs(7, (10, 10), (3,))
    assert torch.equal(torch.rand(5), expected)


# ---------------------------------------------------------------------------------------------------
# forbid_references


def params_with_grad():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 4.0)
    return [p]


NOTEBOOK = """
import torch
from torch.nn.utils import clip_grad_norm_ as clip

def delegating_student(params, max_norm):
    return clip(params, max_norm)

def honest_student(params, max_norm):
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    for p in params:
        p.grad.mul_(min(1.0, max_norm / (total.item() + 1e-6)))
    return total

def swallowing_student(params, max_norm):
    try:
        return torch.nn.utils.clip_grad_norm_(params, max_norm)
    except Exception:
        return torch.tensor(6.928)

def crashing_student(params, max_norm):
    raise ValueError("student bug")
"""


@pytest.fixture
def notebook():
    """A namespace like a notebook's globals(), with the student's functions defined in it."""
    namespace = {}
    exec(NOTEBOOK, namespace)
    return namespace


def test_forbid_references_blocks_the_module_attribute():
    with pytest.raises(ReferenceUsedError) as failure:
        with forbid_references(*CLIPPING):
            torch.nn.utils.clip_grad_norm_(params_with_grad(), 1.0)
    assert str(failure.value) == (
        "This exercise asks you to implement clip_grad_norm_ yourself; "
        "calling torch.nn.utils.clip_grad_norm_ is not allowed."
    )
    assert isinstance(failure.value, AssertionError)  # so nbgrader counts it as a failed test


@pytest.mark.parametrize(
    "call",
    [
        lambda: torch.nn.utils.clip_grad.clip_grad_norm_(params_with_grad(), 1.0),
        lambda: torch.nn.utils.clip_grad_norm(params_with_grad(), 1.0),  # the deprecated alias calls it
    ],
)
@pytest.mark.filterwarnings("ignore:`torch.nn.utils.clip_grad_norm` is now deprecated")
def test_forbid_references_blocks_the_defining_module_and_aliases_that_call_it(call):
    with pytest.raises(ReferenceUsedError, match="calling torch.nn.utils.clip_grad_norm_ is not allowed"):
        with forbid_references("torch.nn.utils.clip_grad_norm_"):
            call()


def test_forbid_references_blocks_an_alias_in_the_namespace(notebook):
    original = torch.nn.utils.clip_grad_norm_
    with pytest.raises(ReferenceUsedError, match="calling torch.nn.utils.clip_grad_norm_ is not allowed"):
        with forbid_references(*CLIPPING, namespace=notebook):
            notebook["delegating_student"](params_with_grad(), 1.0)
    assert notebook["clip"] is original
    assert torch.nn.utils.clip_grad_norm_ is original
    assert torch.nn.utils.clip_grad.clip_grad_norm_ is original


def test_forbid_references_lets_an_honest_solution_run(notebook):
    params, reference = params_with_grad(), params_with_grad()
    expected = fixes.clip_grad_norm_(reference, 1.0)
    with forbid_references(*CLIPPING, namespace=notebook):
        total = notebook["honest_student"](params, 1.0)
        x = torch.ones(2, requires_grad=True)
        assert torch.equal(torch.autograd.grad((x * 2).sum(), x)[0], torch.full((2,), 2.0))  # allowed here
    assert_close(total, expected, name="total_norm")
    assert_close(params[0].grad, reference[0].grad, name="grad")


def test_forbid_references_reraises_a_swallowed_error(notebook):
    with pytest.raises(ReferenceUsedError, match="calling torch.nn.utils.clip_grad_norm_"):
        with forbid_references(*CLIPPING, namespace=notebook):
            notebook["swallowing_student"](params_with_grad(), 1.0)


def test_forbid_references_restores_after_the_student_raises(notebook):
    originals = {path: _lookup(path) for path in CLIPPING + AUTOGRAD}
    with pytest.raises(ValueError, match="student bug"):
        with forbid_references(*CLIPPING, *AUTOGRAD, namespace=notebook):
            notebook["crashing_student"](params_with_grad(), 1.0)
    assert {path: _lookup(path) for path in originals} == originals
    assert "backward" in vars(torch.Tensor)
    x = torch.ones(2, requires_grad=True)
    (3 * x).sum().backward()
    assert torch.equal(x.grad, torch.full((2,), 3.0))


def _lookup(path):
    module, _, attr = path.rpartition(".")
    if module == "torch.Tensor":
        return vars(torch.Tensor)[attr]
    return getattr(__import__(module, fromlist=[attr]), attr)


def test_forbid_references_blocks_methods_and_restores_inherited_ones():
    assert "clamp" not in vars(torch.Tensor)  # inherited from the C base class
    expected = "implement clamping by hand yourself; calling torch.Tensor.clamp is not allowed"
    with pytest.raises(ReferenceUsedError, match=expected):
        with forbid_references("torch.Tensor.clamp", task="clamping by hand"):
            torch.ones(2).clamp(0, 0.5)
    assert "clamp" not in vars(torch.Tensor)
    assert torch.equal(torch.ones(2).clamp(0, 0.5), torch.full((2,), 0.5))


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda x: (x * 2).sum().backward(), "torch.Tensor.backward"),
        (lambda x: torch.autograd.backward((x * 2).sum()), "torch.autograd.backward"),
        (lambda x: torch.autograd.grad((x * 2).sum(), x), "torch.autograd.grad"),
        (lambda x: torch.func.grad(lambda y: (y * 2).sum())(x), "torch.func.grad"),
    ],
)
def test_forbid_references_blocks_autograd_when_asked(call, path):
    with pytest.raises(ReferenceUsedError, match=f"calling {path} is not allowed"):
        with forbid_references(*AUTOGRAD):
            call(torch.ones(2, requires_grad=True))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda ns: fixes.l1_penalty(nn.Linear(2, 2), 0.1), "calling labkit.fixes.l1_penalty is not allowed"),
        (lambda ns: ns["l2"](nn.Linear(2, 2), 0.1), "implement l2_penalty yourself"),
    ],
)
def test_forbid_references_accepts_labkit_functions(call, message):
    namespace = {"l2": fixes.l2_penalty, "mine": lambda m: 0.0}
    with pytest.raises(ReferenceUsedError, match=message):
        with forbid_references(fixes.l1_penalty, *REGULARIZATION, namespace=namespace):
            assert namespace["mine"](None) == 0.0
            call(namespace)
    assert namespace["l2"] is fixes.l2_penalty
    assert fixes.l1_penalty(torch.ones(2), 1.0).item() == 2.0


def test_forbid_references_rejects_an_unknown_path():
    with pytest.raises(ValueError, match="cannot find 'torch.nn.utils.clip_grad_nrom_'"):
        with forbid_references("torch.nn.utils.clip_grad_nrom_"):
            pass


def test_presets_name_the_references():
    torch_ones = {"torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad_value_"}
    assert torch_ones | {"labkit.fixes.clip_grad_norm_", "labkit.fixes.clip_grad_value_"} <= set(CLIPPING)
    assert set(REGULARIZATION) == {"labkit.fixes.l1_penalty", "labkit.fixes.l2_penalty"}
    assert {"torch.autograd.grad", "torch.Tensor.backward"} <= set(AUTOGRAD)


def test_forbid_references_writes_nothing_to_stderr(capfd, notebook):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for student in ["delegating_student", "swallowing_student", "honest_student"]:
            try:
                with forbid_references(*CLIPPING, *AUTOGRAD, namespace=notebook):
                    notebook[student](params_with_grad(), 1.0)
            except ReferenceUsedError:
                pass
    assert caught == []
    assert capfd.readouterr() == ("", "")


def test_seeded_inputs_and_assert_close_on_cuda(cuda):
    (on_gpu,) = seeded_inputs(3, (4, 2), device=cuda)
    (on_cpu,) = seeded_inputs(3, (4, 2))
    assert on_gpu.device.type == "cuda"
    assert torch.equal(on_gpu.cpu(), on_cpu)
    assert_close(on_gpu, on_cpu, name="x")
    wrong = on_gpu.clone()
    wrong[3, 1] += 1.0
    assert "at index (3, 1)" in failure_message(wrong, on_cpu)
