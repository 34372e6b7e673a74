"""labkit.device: choosing the device and seeding every generator."""
import random

import numpy as np
import pytest
import torch

import labkit.device as device_module
from labkit.device import DEVICE_ENV_VAR, get_device, seed_everything


@pytest.fixture
def no_accelerator(monkeypatch):
    """A machine with neither CUDA nor MPS, and no LABKIT_DEVICE set."""
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    """A machine that reports one CUDA device (torch.device('cuda:0') needs no real GPU to be created)."""
    monkeypatch.delenv(DEVICE_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


def test_falls_back_to_cpu_without_accelerator(no_accelerator):
    assert get_device() == torch.device("cpu")


def test_prefers_cuda_when_available(one_gpu):
    assert get_device().type == "cuda"


def test_prefers_mps_when_only_mps(monkeypatch, no_accelerator):
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert get_device() == torch.device("mps")


def test_prefer_overrides_automatic_choice(one_gpu):
    assert get_device("cpu") == torch.device("cpu")
    assert get_device(torch.device("cpu")) == torch.device("cpu")
    assert get_device("cuda:0") == torch.device("cuda", 0)


def test_environment_variable_is_honoured(monkeypatch, one_gpu):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cpu")
    assert get_device() == torch.device("cpu")


def test_prefer_wins_over_environment_variable(monkeypatch, no_accelerator):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cuda")  # would be rejected if it were read
    assert get_device("cpu") == torch.device("cpu")


def test_empty_environment_variable_means_automatic(monkeypatch, no_accelerator):
    monkeypatch.setenv(DEVICE_ENV_VAR, "")
    assert get_device() == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda0", "", "cpux"])
def test_bad_device_name_is_rejected(no_accelerator, name):
    with pytest.raises(ValueError, match="unknown device"):
        get_device(name)


def test_bad_device_name_from_environment_is_rejected(monkeypatch, no_accelerator):
    monkeypatch.setenv(DEVICE_ENV_VAR, "tpu-please")
    with pytest.raises(ValueError, match="unknown device 'tpu-please'"):
        get_device()


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_unavailable_cuda_is_rejected(no_accelerator, name):
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device(name)


def test_unavailable_cuda_from_environment_is_rejected(monkeypatch, no_accelerator):
    monkeypatch.setenv(DEVICE_ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        get_device()


def test_cuda_index_beyond_device_count_is_rejected(one_gpu):
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        get_device("cuda:3")


def test_unavailable_mps_is_rejected(no_accelerator):
    with pytest.raises(ValueError, match="MPS is not available"):
        get_device("mps")


def _draws():
    return torch.rand(5).tolist(), np.random.rand(5).tolist(), [random.random() for _ in range(5)]


def test_seed_everything_makes_global_generators_repeatable():
    seed_everything(1234)
    first = _draws()
    seed_everything(1234)
    assert _draws() == first
    seed_everything(1235)
    other = _draws()
    for a, b in zip(first, other):
        assert a != b


def test_seed_everything_returns_a_seeded_cpu_generator():
    gen = seed_everything(7)
    assert isinstance(gen, torch.Generator) and gen.device == torch.device("cpu")
    assert torch.equal(torch.rand(4, generator=gen), torch.rand(4, generator=torch.Generator().manual_seed(7)))


def test_seed_everything_accepts_seeds_beyond_numpy_range():
    seed_everything(2**40)  # numpy only takes 32-bit seeds; labkit reduces modulo 2**32
    a = np.random.rand(3)
    seed_everything(2**40)
    assert np.array_equal(a, np.random.rand(3))


def test_seed_everything_rejects_negative():
    with pytest.raises(ValueError, match="non-negative"):
        seed_everything(-1)


@pytest.mark.parametrize("seed", [1.0, "3", True, None])
def test_seed_everything_rejects_non_int(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        seed_everything(seed)
