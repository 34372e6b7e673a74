"""Where tensors live and how runs are made repeatable."""
from __future__ import annotations

import os
import random

import numpy as np
import torch

DEVICE_ENV_VAR = "LABKIT_DEVICE"


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """Pick the device to compute on: CUDA, then Apple MPS, then the CPU.

    Args:
        prefer: a device to use instead of the automatic choice (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``). When ``None``, the environment variable ``LABKIT_DEVICE`` is read and, if set,
            used the same way.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ValueError: if the requested device is not a device name or is not available on this machine.
    """
    requested = prefer if prefer is not None else os.environ.get(DEVICE_ENV_VAR) or None
    if requested is not None:
        try:
            device = torch.device(requested)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"unknown device {requested!r}: expected 'cpu', 'cuda', 'cuda:N' or 'mps'"
            ) from err
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} was requested but CUDA is not available here")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {requested!r} was requested but this machine has only "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"device {requested!r} was requested but Apple MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and PyTorch's global generators; return a fresh seeded CPU generator.

    Labkit's own code never draws from the global generators: tasks and initializers take an explicit
    ``torch.Generator``. Seeding the globals makes a student's own code repeatable too.

    Args:
        seed: a non-negative integer.

    Returns:
        A ``torch.Generator`` on the CPU seeded with ``seed``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
