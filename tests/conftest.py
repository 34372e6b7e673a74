"""Shared pytest fixtures: one intra-op thread, a float64 default dtype, a CUDA device or a skip, and the
book built once per session."""
import os

import pytest
import torch

from tests.book_site import BookBuild, build_book_once


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


@pytest.fixture(scope="session")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> BookBuild:
    """The book, built from scratch once per test run, even with pytest-xdist: workers share one build in
    the run's temporary folder (the first builds, the others wait). Mark the tests that use it
    `@pytest.mark.xdist_group("book")` so that `--dist loadgroup` keeps them on one worker.

    A build with warnings still returns (test_book_build.py reports them); one that wrote no site fails
    every test that needs it."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        run_dir = tmp_path_factory.getbasetemp().parent  # this run's, shared by its workers
    else:
        run_dir = tmp_path_factory.mktemp("run")
    build = build_book_once(run_dir / "book")
    if not (build.html_dir / "index.html").is_file():
        pytest.fail(f"jupyter-book wrote no site:\n{build.log[-6000:]}", pytrace=False)
    return build
