"""Shared pytest fixtures: one intra-op thread, a float64 default dtype, a CUDA device or a skip."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """Run torch ops on one thread: the tests' tensors are tiny, and with pytest-xdist (or a busy machine)
    several threads per process oversubscribe the cores and make each small matmul ~50x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def float64():
    """Make float64 the default dtype for one test, then restore whatever it was."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch.float64
    torch.set_default_dtype(previous)


@pytest.fixture
def cuda():
    """The CUDA device, or skip the test on a machine without one."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: torch.cuda.is_available() is False here")
    return torch.device("cuda")
