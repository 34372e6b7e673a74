"""labkit.tasks: the synthetic sequence tasks, checked against their definitions and baselines by Monte Carlo."""
import math

import pytest
import torch
import torch.nn.functional as F

from labkit.tasks import (
    TEMPORAL_SYMBOLS,
    SequenceTask,
    adding_baseline,
    adding_problem,
    copy_baseline,
    copy_task,
    temporal_order,
    temporal_order_baseline,
)

BIG = 200_000  # Monte Carlo batch: 3σ is then ~1% of the baselines


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def within_3_sigma(samples: torch.Tensor, expected: float) -> None:
    """Assert the sample mean of ``samples`` is within 3 standard errors of ``expected``."""
    mean = samples.mean().item()
    sigma = samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - expected) < 3 * sigma, f"mean {mean:.6f} vs {expected:.6f} (3σ = {3 * sigma:.2e})"


def within_3_sigma_frequency(hits: torch.Tensor, p: float) -> None:
    """Assert the frequency of True in ``hits`` is within 3σ of probability ``p``."""
    n = hits.numel()
    freq = hits.double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(freq - p) < 3 * sigma, f"frequency {freq:.5f} vs {p:.5f} (3σ = {3 * sigma:.2e})"


# --------------------------------------------------------------------------- adding problem, uRNN variant

@pytest.mark.parametrize("T", [2, 7, 50])
def test_adding_urnn_shapes_markers_and_target(T):
    x, y = adding_problem(512, T, generator=gen(), device="cpu")
    assert x.shape == (512, T, 2) and y.shape == (512, 1)
    assert x.dtype == y.dtype == torch.float32 and x.device.type == "cpu"
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= 0) & (values < 1)).all()
    assert set(markers.unique().tolist()) <= {0.0, 1.0}
    half = T // 2
    assert (markers[:, :half].sum(1) == 1).all(), "exactly one marker in the first half"
    assert (markers[:, half:].sum(1) == 1).all(), "exactly one marker in the second half"
    torch.testing.assert_close(y[:, 0], (values * markers).sum(1), rtol=0, atol=1e-6)


def test_adding_urnn_marker_positions_cover_each_half():
    T = 12
    x, _ = adding_problem(5000, T, generator=gen())
    marked = x[..., 1].nonzero()[:, 1]
    assert set(marked.tolist()) == set(range(T))


def test_adding_dtype_float64():
    x, y = adding_problem(4, 10, generator=gen(), dtype=torch.float64, device=torch.device("cpu"))
    assert x.dtype == y.dtype == torch.float64


@pytest.mark.parametrize("variant", ["urnn", "lstm1997"])
def test_adding_same_seed_same_batch_other_seed_other_batch(variant):
    a = adding_problem(16, 30, variant=variant, generator=gen(3))
    b = adding_problem(16, 30, variant=variant, generator=gen(3))
    c = adding_problem(16, 30, variant=variant, generator=gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


def test_omitted_generator_is_deterministic():
    assert torch.equal(adding_problem(8, 20)[0], adding_problem(8, 20)[0])


def test_adding_urnn_baseline_by_monte_carlo():
    _, y = adding_problem(BIG, 10, generator=gen(1), dtype=torch.float64)
    assert adding_baseline("urnn") == pytest.approx(1 / 6, abs=1e-15)
    within_3_sigma((y - 1.0) ** 2, adding_baseline("urnn"))  # the true mean target is 1


# --------------------------------------------------------------------------- adding problem, 1997 variant

@pytest.mark.parametrize("T", [24, 31, 100])
def test_adding_1997_markers_values_and_target(T):
    x, y = adding_problem(4000, T, variant="lstm1997", generator=gen(), dtype=torch.float64)
    assert x.shape == (4000, T, 2) and y.shape == (4000, 1)
    values, markers = x[..., 0], x[..., 1]
    assert ((values >= -1) & (values <= 1)).all()
    assert set(markers.unique().tolist()) <= {-1.0, 0.0, 1.0}
    plus = markers == 1
    assert (plus.sum(1) == 2).all(), "exactly two marked steps"
    positions = plus.nonzero()[:, 1].view(-1, 2)  # (B, 2), sorted
    assert (positions[:, 0] < 10).all(), "one mark among the first ten steps"
    assert (positions[:, 1] <= T // 2 - 1).all(), "both marks among the first T/2 steps"
    # -1 on the first step when it is not marked, always on the last, 0 elsewhere
    assert (markers[~plus[:, 0], 0] == -1).all()
    assert (markers[:, -1] == -1).all()
    middle = markers[:, 1:-1]
    assert ((middle == 0) | (middle == 1)).all()
    torch.testing.assert_close(y[:, 0], 0.5 + (values * plus).sum(1) / 4, rtol=0, atol=1e-12)


def test_adding_1997_second_mark_is_one_of_the_first_T_over_2_minus_1_unmarked_steps():
    # Hochreiter & Schmidhuber (1997): "one of the first T/2 - 1 still unmarked pairs". The first mark is
    # in 0..9, so for T = 24 the second is uniform over the 11 steps {0..11} minus the first: steps 10
    # and 11 can only hold the second mark, each with probability 1/11.
    T = 24
    x, _ = adding_problem(BIG // 4, T, variant="lstm1997", generator=gen(5))
    plus = x[..., 1] == 1
    assert not plus[:, T // 2:].any()
    within_3_sigma_frequency(plus[:, 10], 1 / 11)
    within_3_sigma_frequency(plus[:, 11], 1 / 11)


def test_adding_1997_first_step_value_is_zero_when_first_mark_is_on_it():
    x, _ = adding_problem(20000, 40, variant="lstm1997", generator=gen(2), dtype=torch.float64)
    values, plus = x[..., 0], x[..., 1] == 1
    # when step 0 and a step >= 10 are marked, the first mark (always in 0..9) must be step 0: X1 := 0
    first_mark_on_step_0 = plus[:, 0] & plus[:, 10:].any(1)
    assert first_mark_on_step_0.sum() > 100
    assert (values[first_mark_on_step_0, 0] == 0).all()
    within_3_sigma_frequency(values[:, 0] == 0, 1 / 10)  # P(first mark on step 0) = 1/10
    assert (values[~plus[:, 0], 0] != 0).all(), "an unmarked first step keeps its random value"


def test_adding_1997_baseline_by_monte_carlo():
    _, y = adding_problem(BIG, 24, variant="lstm1997", generator=gen(1), dtype=torch.float64)
    assert adding_baseline("lstm1997") == pytest.approx(19 / 480, abs=1e-15)
    within_3_sigma((y - 0.5) ** 2, adding_baseline("lstm1997"))  # the true mean target is 1/2


# --------------------------------------------------------------------------- copy task

@pytest.mark.parametrize("delay", [1, 5, 100])
def test_copy_layout(delay):
    x, y = copy_task(256, delay, generator=gen(), device="cpu")
    L = delay + 20
    assert x.shape == (256, L, 10) and y.shape == (256, L)
    assert x.dtype == torch.float32 and y.dtype == torch.long and x.device.type == "cpu"
    assert (x.sum(-1) == 1).all() and set(x.unique().tolist()) == {0.0, 1.0}, "one-hot"
    symbols = x.argmax(-1)
    data = symbols[:, :10]
    assert ((data >= 1) & (data <= 8)).all()
    assert (symbols[:, 10:10 + delay - 1] == 0).all(), "delay - 1 blanks"
    assert (symbols[:, 10 + delay - 1] == 9).all(), "the delimiter"
    assert (symbols[:, -10:] == 0).all(), "10 trailing blanks"
    assert (y[:, :delay + 10] == 0).all()
    assert torch.equal(y[:, -10:], data), "the target repeats the first 10 inputs"


def test_copy_symbols_are_uniform_over_eight():
    x, _ = copy_task(BIG // 10, 1, generator=gen(9))
    data = x.argmax(-1)[:, :10].flatten()
    for s in range(1, 9):
        within_3_sigma_frequency(data == s, 1 / 8)


def test_copy_same_seed_same_batch():
    assert torch.equal(copy_task(8, 10, generator=gen(1))[1], copy_task(8, 10, generator=gen(1))[1])
    assert not torch.equal(copy_task(8, 10, generator=gen(1))[1], copy_task(8, 10, generator=gen(2))[1])


@pytest.mark.parametrize("delay", [1, 10, 100])
def test_copy_baseline_is_the_memoryless_cross_entropy(delay):
    task = SequenceTask.copy(delay)
    x, y = task.sample(64, gen(), device="cpu")
    # blanks with probability 1 for the first T + 10 steps, then uniform over the 8 data symbols
    probs = torch.zeros(64, delay + 20, 10, dtype=torch.float64)
    probs[:, :delay + 10, 0] = 1.0
    probs[:, delay + 10:, 1:9] = 1 / 8
    logits = probs.log()  # -inf where the probability is 0
    direct = F.cross_entropy(logits.reshape(-1, 10), y.reshape(-1)).item()
    expected = 10 * math.log(8) / (delay + 20)
    assert direct == pytest.approx(expected, rel=1e-12)
    assert copy_baseline(delay) == pytest.approx(expected, rel=1e-15)
    assert task.baseline == copy_baseline(delay)
    assert task.loss(logits, y).item() == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- temporal order

def _decode(x):
    return x.argmax(-1)  # (B, T) indices into TEMPORAL_SYMBOLS


@pytest.mark.parametrize("T", [10, 37, 100])
def test_temporal_order_layout_and_class(T):
    x, y = temporal_order(4000, T, generator=gen(), device="cpu")
    assert x.shape == (4000, T, 8) and y.shape == (4000,)
    assert x.dtype == torch.float32 and y.dtype == torch.long and x.device.type == "cpu"
    assert (x.sum(-1) == 1).all(), "one-hot"
    s = _decode(x)
    E, B, X, Y = (TEMPORAL_SYMBOLS.index(c) for c in "EBXY")
    assert (s[:, 0] == E).all() and (s[:, -1] == B).all()
    middle = s[:, 1:-1]
    assert ((middle <= 3) | (middle == X) | (middle == Y)).all(), "distractors are a, b, c, d"
    relevant = (s == X) | (s == Y)
    assert (relevant.sum(1) == 2).all(), "exactly two of X/Y"
    t = relevant.nonzero()[:, 1].view(-1, 2)
    t1, t2 = t[:, 0], t[:, 1]
    assert ((t1 >= T // 10) & (t1 <= 2 * T // 10)).all()
    assert ((t2 >= 5 * T // 10) & (t2 <= 6 * T // 10)).all()
    rows = torch.arange(4000)
    first_is_y = (s[rows, t1] == Y).long()
    second_is_y = (s[rows, t2] == Y).long()
    assert torch.equal(y, 2 * first_is_y + second_is_y), "classes XX, XY, YX, YY = 0, 1, 2, 3"


def test_temporal_order_positions_as_in_the_paper_for_T_100():
    x, _ = temporal_order(5000, 100, generator=gen(4))
    s = _decode(x)
    relevant = (s == TEMPORAL_SYMBOLS.index("X")) | (s == TEMPORAL_SYMBOLS.index("Y"))
    t = relevant.nonzero()[:, 1].view(-1, 2)
    assert set(t[:, 0].tolist()) == set(range(10, 21))
    assert set(t[:, 1].tolist()) == set(range(50, 61))


def test_temporal_order_classes_equally_likely():
    _, y = temporal_order(BIG // 4, 20, generator=gen(11))
    for c in range(4):
        within_3_sigma_frequency(y == c, 1 / 4)


def test_temporal_order_baseline_is_uniform_cross_entropy():
    task = SequenceTask.temporal_order(30)
    x, y = task.sample(128, gen(), device="cpu")
    uniform = torch.zeros(128, 30, 4, dtype=torch.float64)
    assert F.cross_entropy(uniform[:, -1], y).item() == pytest.approx(math.log(4), rel=1e-12)
    assert task.loss(uniform, y).item() == pytest.approx(temporal_order_baseline(), rel=1e-12)
    assert temporal_order_baseline() == pytest.approx(math.log(4), rel=1e-15)


def test_temporal_order_same_seed_same_batch():
    assert torch.equal(temporal_order(8, 50, generator=gen(1))[0], temporal_order(8, 50, generator=gen(1))[0])
    assert not torch.equal(temporal_order(8, 50, generator=gen(1))[0], temporal_order(8, 50, generator=gen(2))[0])


# --------------------------------------------------------------------------- SequenceTask

@pytest.mark.parametrize("task, T", [
    (SequenceTask.adding(30), 30),
    (SequenceTask.adding(30, "lstm1997"), 30),
    (SequenceTask.copy(15), 35),
    (SequenceTask.temporal_order(40), 40),
])
def test_sequence_task_sizes_match_its_generator(task, T):
    x, y = task.sample(6, gen(), device="cpu")
    assert task.seq_len == T and x.shape == (6, T, task.input_size) and x.device.type == "cpu"
    outputs = torch.zeros(6, T, task.output_size)
    loss = task.loss(outputs, y)
    assert loss.dim() == 0 and torch.isfinite(loss)
    again = task.sample(6, gen(), device="cpu")
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])


def test_sequence_task_adding_scores_the_last_step():
    task = SequenceTask.adding(20)
    assert (task.input_size, task.output_size, task.baseline) == (2, 1, adding_baseline("urnn"))
    x, y = task.sample(32, gen())
    outputs = torch.full((32, 20, 1), 1e3)
    outputs[:, -1] = y
    assert task.loss(outputs, y).item() == 0.0
    outputs[:, -1] = y + 0.5
    assert task.loss(outputs, y).item() == pytest.approx(0.25)


def test_sequence_task_adding_baseline_by_monte_carlo():
    task = SequenceTask.adding(10)
    x, y = task.sample(BIG, gen(8))
    per_example = (torch.ones(BIG, 1) - y).double() ** 2
    within_3_sigma(per_example, task.baseline)


@pytest.mark.parametrize("shape", [(4, 20), (4, 20, 2), (4, 20, 1, 1)])
def test_sequence_task_loss_rejects_wrong_output_shape(shape):
    task = SequenceTask.adding(20)
    _, y = task.sample(4, gen())
    with pytest.raises(ValueError, match=r"outputs must have shape \(batch, time, 1\)"):
        task.loss(torch.zeros(shape), y)


def test_temporal_order_task_loss_rejects_wrong_class_count():
    task = SequenceTask.temporal_order(20)
    _, y = task.sample(4, gen())
    with pytest.raises(ValueError, match=r"\(batch, time, 4\)"):
        task.loss(torch.zeros(4, 20, 8), y)


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("call, error, message", [
    (lambda: adding_problem(0, 10), ValueError, "batch_size must be an int >= 1, got 0"),
    (lambda: adding_problem(4, 1), ValueError, "seq_len must be an int >= 2, got 1"),
    (lambda: adding_problem(4, 23, variant="lstm1997"), ValueError, "seq_len must be an int >= 24, got 23"),
    (lambda: adding_problem(4, 10, variant="1997"), ValueError, "variant must be one of"),
    (lambda: adding_problem(4, 10.0), TypeError, "seq_len must be an int"),
    (lambda: adding_problem(4.5, 10), TypeError, "batch_size must be an int"),
    (lambda: adding_problem(True, 10), TypeError, "batch_size must be an int"),
    (lambda: adding_problem(4, 10, variant=None), TypeError, "variant must be one of"),
    (lambda: adding_baseline("foo"), ValueError, "variant must be one of"),
    (lambda: copy_task(0, 10), ValueError, "batch_size must be an int >= 1"),
    (lambda: copy_task(4, 0), ValueError, "delay must be an int >= 1, got 0"),
    (lambda: copy_task(4, "10"), TypeError, "delay must be an int"),
    (lambda: copy_baseline(-3), ValueError, "delay must be an int >= 1"),
    (lambda: temporal_order(4, 9), ValueError, "seq_len must be an int >= 10, got 9"),
    (lambda: temporal_order(-1, 20), ValueError, "batch_size must be an int >= 1"),
    (lambda: temporal_order(4, 20.0), TypeError, "seq_len must be an int"),
    (lambda: SequenceTask.adding(1), ValueError, "seq_len must be an int >= 2"),
    (lambda: SequenceTask.adding(20, "lstm1997"), ValueError, "seq_len must be an int >= 24"),
    (lambda: SequenceTask.adding(30, "uRNN"), ValueError, "variant must be one of"),
    (lambda: SequenceTask.copy(0), ValueError, "delay must be an int >= 1"),
    (lambda: SequenceTask.temporal_order(5), ValueError, "seq_len must be an int >= 10"),
    (lambda: SequenceTask.adding(20).sample(0), ValueError, "batch_size must be an int >= 1"),
])
def test_bad_arguments_are_rejected(call, error, message):
    with pytest.raises(error, match=message):
        call()
