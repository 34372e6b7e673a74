"""The built book in a real browser: headless Chromium, cut off from the network, loads every page from a
local server, as a reader with the downloaded site would. Every page: no console errors, nothing
requested from another host, the math typeset (no raw TeX left), every image loaded; search works. A
screenshot of each page goes to screenshots/ (git-ignored) for a human to review.

Needs Debian's `chromium` (`make test` installs it when run as root). Without it these tests skip, except
under CI, where they fail.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.book_site import ROOT, BookBuild, serve
from tests.chromium import Chromium, Visit, find_chromium

pytestmark = pytest.mark.xdist_group("book")

SCREENSHOTS = ROOT / "screenshots"
SEARCH_TERM = "gradient"

# Runs in each page once it has loaded: waits for MathJax to finish typesetting, for every image to load
# or fail, and for web fonts; then reports what a reader would see.
INSPECT_PAGE = """(async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  const images = Array.from(document.images);
  await Promise.all(images.map(img => { img.loading = "eager"; return img.decode().catch(() => null); }));
  await document.fonts.ready;
  const prose = (document.querySelector("article") || document.body).cloneNode(true);
  prose.querySelectorAll("pre, code, script, style, textarea, mjx-container").forEach(node => node.remove());
  const math = Array.from(document.querySelectorAll(".math"));
  return {
    math: math.length,
    typeset: document.querySelectorAll("mjx-container").length,
    untypeset: math.filter(node => !node.querySelector("mjx-container")).map(node => node.textContent.trim()),
    math_errors: Array.from(document.querySelectorAll("mjx-merror")).map(node => node.textContent),
    prose: prose.textContent,
    images: images.length,
    broken_images: images.filter(img => !(img.complete && img.naturalWidth > 0)).map(img => img.getAttribute("src")),
  };
})()"""

# Waits (up to 30 s) for Sphinx's search page to finish, then returns its summary and result links.
SEARCH_RESULTS = """(async () => {
  for (let waited = 0; waited < 30000; waited += 100) {
    const summary = document.querySelector("#search-results .search-summary");
    if (summary && /finished|did not match/i.test(summary.textContent)) {
      return {summary: summary.textContent.trim(),
              links: Array.from(document.querySelectorAll("#search-results li a")).map(a => a.getAttribute("href"))};
    }
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  return {summary: document.querySelector("#search-results")?.textContent.trim() || "nothing", links: []};
})()"""

# TeX a reader should never see: display or inline delimiters, a control sequence, an unparsed $x$.
RAW_TEX = re.compile(r"\$\$|\\[()\[\]]|\\[a-zA-Z]{2,}|\$[^$\s][^$\n]{0,80}?[^$\s\\]\$")


@dataclass
class PageReport:
    """One page as the browser showed it."""
    page: str          # its path in the site, e.g. book/intro.html
    visit: Visit       # console errors and requested URLs
    seen: dict         # INSPECT_PAGE's answer
    screenshot: Path


@pytest.fixture(scope="module")
def chromium_executable() -> str:
    executable = find_chromium()
    if executable is None:
        message = ("needs a headless browser: `sudo apt-get install chromium` "
                   "(`make test` installs it when run as root)")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the browser tests", pytrace=False)
        pytest.skip(message)
    return executable


@pytest.fixture(scope="module")
def site(built_book: BookBuild) -> Iterator[str]:
    """The base URL of the built book, served on localhost."""
    with serve(built_book.html_dir) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser(chromium_executable: str) -> Iterator[Chromium]:
    with Chromium(chromium_executable) as chromium:
        yield chromium


def inspect(browser: Chromium, site: str, page: str, screenshots: Path) -> PageReport:
    """Load one page of the site, wait until it has settled, see what it shows, and photograph it."""
    visit = browser.open(site + quote(page))
    seen = browser.evaluate(INSPECT_PAGE)
    browser.collect(visit)  # what the page reported while MathJax typeset and images loaded
    return PageReport(page, visit, seen, browser.screenshot(screenshots / Path(page).with_suffix(".png")))


def math_problems(seen: dict) -> list[str]:
    """Math a reader would see as TeX: left untypeset, typeset with an error, or raw in the text."""
    return ([f"not typeset: {text[:80]}" for text in seen["untypeset"]]
            + [f"MathJax error: {text[:80]}" for text in seen["math_errors"]]
            + [f"raw TeX in the text: {match!r}" for match in sorted(set(RAW_TEX.findall(seen["prose"])))])


@pytest.fixture(scope="module")
def reports(built_book: BookBuild, site: str, browser: Chromium) -> list[PageReport]:
    """Every page of the site (but redirects), loaded, inspected and photographed once (each screenshot
    replaces the page's previous one)."""
    pages = [path.relative_to(built_book.html_dir).as_posix() for path in built_book.pages()
             # index.html only forwards to the introduction (test_book_build.py checks where)
             if 'http-equiv="refresh"' not in path.read_text().lower()]
    assert pages, "the site has no pages"
    return [inspect(browser, site, page, SCREENSHOTS) for page in pages]


def failures(found: dict[str, list[str]]) -> str:
    """The problems of each page that has any, for an assertion message."""
    return "\n".join(f"{page}:\n  " + "\n  ".join(problems) for page, problems in found.items() if problems)


def console_errors(visit: Visit, site: str) -> list[str]:
    """The page's console errors. The browser's own request for /favicon.ico, made because the book
    declares no icon, fails on every site without one: that is not the page's error."""
    return [error for error in visit.errors if not error.endswith(f"{site}favicon.ico")]


def test_no_console_errors(reports: list[PageReport], site: str) -> None:
    found = {report.page: console_errors(report.visit, site) for report in reports}
    assert not any(found.values()), "errors in the browser console:\n" + failures(found)


def test_nothing_is_requested_from_another_host(reports: list[PageReport], site: str) -> None:
    found = {report.page: sorted({url for url in report.visit.requests
                                  if not url.startswith((site, "data:", "blob:", "about:"))})
             for report in reports}
    assert not any(found.values()), "pages that need the network:\n" + failures(found)


def test_math_is_typeset(reports: list[PageReport]) -> None:
    found = {report.page: math_problems(report.seen) for report in reports}
    assert not any(found.values()), "math a reader would see as TeX:\n" + failures(found)
    pages_with_math = [report for report in reports if report.seen["math"]]
    assert pages_with_math, "no page has math: is MathJax loaded at all?"
    assert all(report.seen["typeset"] >= report.seen["math"] for report in pages_with_math)


def test_every_image_loads(reports: list[PageReport]) -> None:
    found = {report.page: [f"not loaded: {src}" for src in report.seen["broken_images"]] for report in reports}
    assert not any(found.values()), "images that did not load:\n" + failures(found)
    assert sum(report.seen["images"] for report in reports) > 0, "the book has no figures"


def test_every_page_has_a_screenshot(reports: list[PageReport]) -> None:
    missing = [report.page for report in reports
               if not (report.screenshot.is_file() and report.screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n")]
    assert not missing, f"no screenshot of {missing}"


def test_search_works_offline(site: str, browser: Chromium) -> None:
    """Sphinx's search runs in the page, on the site's own searchindex.js."""
    visit = browser.open(f"{site}search.html?q={SEARCH_TERM}")
    results = browser.evaluate(SEARCH_RESULTS)
    browser.collect(visit)
    assert not console_errors(visit, site), f"errors on the search page: {visit.errors}"
    assert "Search finished" in results["summary"], f"search for {SEARCH_TERM!r}: {results['summary']}"
    chapters = [link for link in results["links"] if re.match(r"book/\d\d_", link)]
    assert chapters, f"searching for {SEARCH_TERM!r} found no chapter: {results['links']}"


BROKEN_PAGE = r"""<!doctype html>
<html><head><script src="https://cdn.example.org/widgets.js"></script></head>
<body><article>
  <p>Unparsed math: $\alpha_1$ and $$x^2$$.</p>
  <img src="missing.png" alt="a figure that is not there">
  <script>console.error("a script failed")</script>
</article></body></html>
"""


def test_the_browser_checks_catch_a_broken_page(tmp_path: Path, browser: Chromium) -> None:
    """The checks above are not vacuous: on a page with each fault, each one reports it."""
    (tmp_path / "broken.html").write_text(BROKEN_PAGE)
    with serve(tmp_path) as base_url:
        report = inspect(browser, base_url, "broken.html", tmp_path / "screenshots")
    assert any("a script failed" in error for error in report.visit.errors)
    assert any("missing.png" in error for error in report.visit.errors)
    assert "https://cdn.example.org/widgets.js" in report.visit.requests
    assert report.seen["broken_images"] == ["missing.png"]
    raw_tex = " ".join(math_problems(report.seen))
    assert "'$$'" in raw_tex and "alpha_1" in raw_tex, raw_tex
    assert report.screenshot.is_file()
