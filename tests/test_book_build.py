"""The book builds from scratch with warnings as errors, and its pages show what they should."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 1800  # every chapter executes; each is meant to take under a minute


def jupyter_book_command() -> str:
    """The jupyter-book script of the environment running the tests."""
    beside_python = Path(sys.executable).with_name("jupyter-book")
    command = str(beside_python) if beside_python.exists() else shutil.which("jupyter-book")
    assert command, "jupyter-book is not installed: run `make test`, which installs it"
    return command


def section(html: str, section_id: str) -> str:
    """The HTML of the <section> with the given id (up to the next section)."""
    match = re.search(rf'<section id="{section_id}">(.*?)(?=<section id=|$)', html, re.S)
    assert match, f'no <section id="{section_id}"> in the page'
    return match.group(1)


def test_book_builds_without_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [jupyter_book_command(), "build", str(ROOT), "-W", "-n", "--keep-going",
         "--path-output", str(tmp_path)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(f"jupyter-book build failed:\n{(result.stdout + result.stderr)[-6000:]}", pytrace=False)

    html_dir = tmp_path / "_build" / "html"
    index = (html_dir / "index.html").read_text()
    assert "url=book/intro.html" in index, "index.html should redirect to the introduction"

    intro = (html_dir / "book" / "intro.html").read_text()
    assert "<title>Exploding Gradients" in intro

    # The set-up cell ran at build time and its output is in the page.
    assert re.search(r"PyTorch \d+\.\d+\.\d+\S*, labkit \d+", intro), "the intro's code cell did not execute"

    notation = section(intro, "notation")
    assert "<table" in notation, "the notation table did not render as a table"
    assert notation.count("<tr") >= 15, "the notation table lost rows"
    for symbol in (r"W_{\mathrm{rec}}", r"\rho(W)", r"\lambda_1", r"\eta"):
        assert symbol in notation, f"notation table is missing {symbol}"

    references = (html_dir / "book" / "references.html").read_text()
    assert "On the difficulty of training recurrent neural networks" in references
