"""Helpers for the problem sets' test cells: comparisons that explain themselves, seeded inputs, and a
guard that makes the reference implementation unavailable while a student's function runs.

Nothing here writes to stderr (nbgrader gives a test cell zero points when anything does); every
failure is an ``AssertionError`` whose message tells the student what went wrong.
"""

from __future__ import annotations

import contextlib
import importlib
import numbers
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


class ReferenceUsedError(AssertionError):
    """The student's code called a function the exercise asks them to write themselves."""


# ---------------------------------------------------------------------------------------------------
# Comparisons


def _as_tensor(value: Any, name: str) -> Tensor:
    """Read a tensor, array, number or (nested) list of them as a CPU tensor, or fail with a message."""
    if value is None:
        raise AssertionError(f"`{name}` is None: did you forget to `return` it?")
    if isinstance(value, (str, bytes)):
        raise AssertionError(f"`{name}` should be a number or a tensor, but it is the string {value!r}")
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        if not value:
            return torch.tensor([])
        items = [_as_tensor(item, name) for item in value]
        if len({item.shape for item in items}) > 1:
            raise AssertionError(f"`{name}` is a list of items with different shapes, so it is not one array")
        return torch.stack(items)
    if isinstance(value, (numbers.Number, np.ndarray, np.generic)):
        array = np.array(value)  # float -> float64; a copy, as torch warns about read-only arrays
        if array.dtype.kind in "biufc":
            return torch.from_numpy(array)
        raise AssertionError(f"`{name}` should hold numbers, but it reads as an array of dtype {array.dtype}")
    raise AssertionError(f"`{name}` should be a number or a tensor, but it is a {type(value).__name__}")


def _format(x: Tensor) -> str:
    value = x.item()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def assert_close(
    actual: Any,
    expected: Any,
    *,
    name: str,
    rtol: float = 1e-5,
    atol: float = 1e-8,
    hint: str | None = None,
) -> None:
    r"""Check that ``actual`` equals ``expected`` entry by entry, within tolerance.

    An entry passes when :math:`|a - e| \le \text{atol} + \text{rtol}\,|e|` (as in ``torch.isclose``),
    or when both are the same non-finite value. Tensors, NumPy arrays, numbers and nested lists are
    compared by value whatever their type; dicts key by key; a list or tuple against a list or tuple
    item by item.

    Args:
        actual: the student's value.
        expected: the reference value.
        name: what the value is, as the student knows it (e.g. ``"total_norm"``); used in messages.
        rtol: relative tolerance.
        atol: absolute tolerance.
        hint: a sentence added to the failure message (e.g. the classic mistake this check catches).

    Raises:
        AssertionError: naming the quantity and saying what differs: the type, the shape, the first
            non-finite entry, or the worst entry with its index, both values and the errors.
    """
    with warnings.catch_warnings():  # a warning would go to stderr
        warnings.simplefilter("ignore")
        try:
            _assert_close(actual, expected, name, rtol, atol)
        except AssertionError as failure:
            if hint is None:
                raise
            raise AssertionError(f"{failure}\nHint: {hint}") from None


def _assert_close(actual: Any, expected: Any, name: str, rtol: float, atol: float) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            raise AssertionError(f"`{name}` should be a dict but it is a {type(actual).__name__}")
        if set(actual) != set(expected):
            raise AssertionError(
                f"`{name}` has keys {sorted(map(str, actual))} but expected {sorted(map(str, expected))}"
            )
        for key in expected:
            _assert_close(actual[key], expected[key], f"{name}[{key!r}]", rtol, atol)
        return
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        if len(actual) != len(expected):
            raise AssertionError(f"`{name}` has {len(actual)} items but expected {len(expected)}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            _assert_close(a, e, f"{name}[{i}]", rtol, atol)
        return

    a, e = _as_tensor(actual, name), _as_tensor(expected, f"the expected {name}")
    if a.shape != e.shape:
        raise AssertionError(f"`{name}` has shape {tuple(a.shape)} but expected {tuple(e.shape)}")
    dtype = torch.complex128 if a.is_complex() or e.is_complex() else torch.float64
    a, e = a.to(dtype), e.to(dtype)

    same_non_finite = (a == e) | (a.isnan() & e.isnan())
    non_finite = ~torch.isfinite(a) & ~same_non_finite
    if non_finite.any():
        where = _index(int(non_finite.flatten().nonzero()[0]), a.shape)
        raise AssertionError(
            f"`{name}` holds {_format(a[where])}{_at(where)} where {_format(e[where])} was expected "
            f"({int(non_finite.sum())} of {a.numel()} entries are not finite). NaN and inf usually come "
            "from an overflow, a division by zero, or a NaN in an input."
        )

    close = torch.isclose(a, e, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return
    abs_err = (a - e).abs()
    badness = torch.where(close, -1.0, (abs_err / (atol + rtol * e.abs())).nan_to_num(nan=torch.inf))
    where = _index(int(badness.flatten().argmax()), a.shape)
    rel = f", relative error {(abs_err[where] / e[where].abs()).item():.3g}" if e[where] != 0 else ""
    n_differ = int((~close).sum())
    worst = "" if a.numel() == 1 else f" {n_differ} of {a.numel()} entries differ; the worst{_at(where)}:"
    raise AssertionError(
        f"`{name}` does not match the expected value:{worst} got {_format(a[where])}, expected "
        f"{_format(e[where])} (absolute error {abs_err[where].item():.3g}{rel}; "
        f"allowed: {atol:g} + {rtol:g}·|expected|)."
    )


def _index(flat: int, shape: torch.Size) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, tuple(shape))) if shape else ()


def _at(index: tuple[int, ...]) -> str:
    return f" at index {index if len(index) > 1 else index[0]}" if index else ""


# ---------------------------------------------------------------------------------------------------
# Inputs


def seeded_inputs(
    seed: int,
    *shapes: int | Sequence[int],
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> tuple[Tensor, ...]:
    """Standard-normal tensors of the given shapes, the same on every run and every device.

    They are drawn on the CPU from a local ``torch.Generator``, so the global RNG state that the
    student's code may rely on is left untouched, then moved to ``device``.

    Args:
        seed: the generator's seed.
        shapes: one shape per tensor, e.g. ``(4, 3), 5`` for a 4×3 matrix and a 5-vector.
        dtype: a floating-point dtype.
        device: where the tensors go (default: CPU).

    Returns:
        One tensor per shape, in order, e.g. ``x, w = seeded_inputs(0, (4, 3), (3,))``.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors = tuple(torch.randn(shape, generator=generator, dtype=dtype) for shape in shapes)
    return tensors if device is None else tuple(t.to(device) for t in tensors)


# ---------------------------------------------------------------------------------------------------
# Forbidding the reference implementation


def _resolve(path: str) -> tuple[object, str, object]:
    """Split a dotted path into (the module or class that holds it, its attribute name, the object)."""
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attr in parts[split:-1]:
                owner = getattr(owner, attr)
            return owner, parts[-1], getattr(owner, parts[-1])
        except AttributeError:
            break
    raise ValueError(f"cannot find {path!r}: expected a dotted path such as 'torch.nn.utils.clip_grad_norm_'")


def _existing(*paths: str) -> tuple[str, ...]:
    """The paths that exist in the installed versions (presets name functions newer torches added)."""
    found = []
    for path in paths:
        with contextlib.suppress(ValueError):
            _resolve(path)
            found.append(path)
    return tuple(found)


CLIPPING = _existing(
    "torch.nn.utils.clip_grad_norm_",
    "torch.nn.utils.clip_grad_value_",
    "torch.nn.utils.clip_grads_with_norm_",
    "torch.nn.utils.get_total_norm",
    "labkit.fixes.clip_grad_norm_",
    "labkit.fixes.clip_grad_value_",
)
REGULARIZATION = _existing("labkit.fixes.l1_penalty", "labkit.fixes.l2_penalty")
AUTOGRAD = _existing(
    "torch.autograd.grad",
    "torch.autograd.backward",
    "torch.Tensor.backward",
    "torch.autograd.functional.jacobian",
    "torch.autograd.functional.vjp",
    "torch.func.grad",
    "torch.func.vjp",
    "torch.func.jacrev",
    "torch.func.jacfwd",
)

_ABSENT = object()


def _holders(owner: object, original: object) -> list[object]:
    """The module or class named in the path, its parent packages and the module that defines ``original``."""
    names = [getattr(original, "__module__", None) or ""]
    if isinstance(owner, types.ModuleType):
        names.append(owner.__name__)
    holders = [owner]
    for name in names:
        parts = name.split(".")
        prefixes = (".".join(parts[:i]) for i in range(1, len(parts) + 1))
        holders += [sys.modules[prefix] for prefix in prefixes if prefix in sys.modules]
    return list({id(h): h for h in holders}.values())


@contextlib.contextmanager
def forbid_references(
    *targets: str | Callable[..., Any],
    namespace: MutableMapping[str, Any] | None = None,
    task: str | None = None,
) -> Iterator[None]:
    """Make reference implementations raise ``ReferenceUsedError`` while the ``with`` block runs.

    Use it around the call to the student's function, after computing the expected value::

        expected = labkit.fixes.clip_grad_norm_(reference_params, 1.0)
        with forbid_references(*CLIPPING, namespace=globals()):
            actual = clip_grad_norm_(student_params, 1.0)

    Each target is swapped for a stub wherever the same object is found in: the module or class the
    dotted path names, that module's parent packages, the module that defines the function (so
    ``torch.nn.utils.clip_grad.clip_grad_norm_`` is covered along with ``torch.nn.utils.clip_grad_norm_``),
    and ``namespace`` (pass the notebook's ``globals()`` to catch ``from torch.nn.utils import
    clip_grad_norm_ as clip``). Everything is restored on exit, also when the block raises. If the
    student's code catches the error and carries on, it is raised again on exit.

    Limits: this guard makes the obvious shortcut earn nothing; it is not a sandbox. It does not see
    references kept elsewhere (another module, a closure, a default argument, a ``functools.partial``
    made earlier), private functions that do the same work, or code that undoes the swap.

    Args:
        targets: dotted paths (``"torch.nn.utils.clip_grad_norm_"``, ``"torch.Tensor.backward"``) or
            the functions themselves; the presets ``CLIPPING``, ``REGULARIZATION`` and ``AUTOGRAD``
            hold the usual ones.
        namespace: a dict (usually the notebook's ``globals()``) in which every name bound to a
            target is swapped too.
        task: what the exercise asks for, for the message (default: the function's name).

    Raises:
        ReferenceUsedError: when the block calls a target.
        ValueError: when a dotted path names nothing.
    """
    raised: list[ReferenceUsedError] = []

    def stub_for(path: str) -> Callable[..., Any]:
        def forbidden(*args: Any, **kwargs: Any) -> Any:
            error = ReferenceUsedError(
                f"This exercise asks you to implement {task or path.rsplit('.', 1)[-1]} yourself; "
                f"calling {path} is not allowed."
            )
            raised.append(error)
            raise error

        return forbidden

    originals: dict[int, tuple[str, object, str, object]] = {}  # id(original) -> (path, owner, attr, it)
    for target in targets:
        path = target if isinstance(target, str) else f"{target.__module__}.{target.__qualname__}"
        owner, attr, original = _resolve(path)
        originals.setdefault(id(original), (path, owner, attr, original))

    swapped: list[tuple[Any, str, object]] = []  # (module, class or dict; name; the raw value it held)

    def swap(holder: Any, name: str, new: object) -> None:
        old = (holder if isinstance(holder, MutableMapping) else vars(holder)).get(name, _ABSENT)
        swapped.append((holder, name, old))
        _set(holder, name, new)

    try:
        for path, owner, attr, original in originals.values():
            stub = stub_for(path)
            swap(owner, attr, stub)  # even when a class inherits it or wraps it in a staticmethod
            for holder in [*_holders(owner, original), namespace or {}]:
                entries = holder if isinstance(holder, MutableMapping) else vars(holder)
                for name in [name for name, value in entries.items() if value is original]:
                    swap(holder, name, stub)
        yield
    except Exception:
        if not raised:
            raise
    finally:
        for holder, name, old in reversed(swapped):
            _set(holder, name, old)
    if raised:
        raise raised[0]


def _set(holder: Any, name: str, value: object) -> None:
    """Bind ``name`` to ``value`` in a dict, module or class; ``_ABSENT`` removes the binding."""
    if isinstance(holder, MutableMapping):
        if value is _ABSENT:
            del holder[name]
        else:
            holder[name] = value
    elif value is _ABSENT:
        delattr(holder, name)
    else:
        setattr(holder, name, value)
