"""Argument checks shared by labkit's modules: one clear message for each kind of bad input."""
from __future__ import annotations

import math
from typing import Any

import torch


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    """Return ``value`` if it is an int ``>= minimum``; raise TypeError/ValueError saying what was expected."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value


def positive_float(value: Any, name: str, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    bound = "a finite number >= 0" if allow_zero else "a finite number > 0"
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def one_of(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``; otherwise list the choices in the error."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {choices}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def sequence_batch(x: Any, name: str, feature_size: int) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of shape (batch, time, feature_size)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (batch, time, {feature_size}), "
                        f"got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != feature_size:
        raise ValueError(f"{name} must have shape (batch, time, {feature_size}), got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sequence and one time step, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x
