"""The built book as a reader gets it: build it, read its pages' HTML, and serve it on localhost.

`build_book` runs the same command as `make book`; the rest reads what it wrote. Nothing here needs a
browser (tests/chromium.py is the browser).
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
BUILD_TIMEOUT_S = 1800  # every chapter executes; each is meant to take under a minute on two cores
NOT_PAGES = ("_static", "_sources", "_downloads", "_images")  # folders of assets, not of pages

# <link rel=...> values that make the browser fetch the link's target.
FETCHING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "dns-prefetch", "icon",
                 "apple-touch-icon", "manifest"}
# Attributes that make the browser fetch a resource, by tag (<link> is handled by its rel).
FETCHING_ATTRIBUTES = {"script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"),
                       "iframe": ("src",), "embed": ("src",), "object": ("data",), "video": ("src", "poster"),
                       "audio": ("src",), "track": ("src",), "input": ("src",)}
ABSOLUTE_URL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)  # has a scheme, or is protocol-relative
REMOTE_URL = re.compile(r"^(?:https?:)?//", re.I)
CSS_REMOTE_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])\s*((?:https?:)?//[^'")\s;]+)""", re.I)


@dataclass
class BookBuild:
    """The outcome of one `jupyter-book build`: its exit status, its log and where the HTML went."""
    returncode: int
    log: str
    html_dir: Path

    def problems(self) -> list[str]:
        """The build's warning and error lines (with -W, any one of them fails the build)."""
        plain = re.sub(r"\x1b\[[0-9;]*m", "", self.log)
        return [line for line in plain.splitlines() if re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line)
                and "Kernel is running over TCP without encryption" not in line]

    def pages(self) -> list[Path]:
        """Every HTML page of the site, sorted."""
        return sorted(page for page in self.html_dir.rglob("*.html")
                      if page.relative_to(self.html_dir).parts[0] not in NOT_PAGES)


def jupyter_book_command() -> str:
    """The jupyter-book script of the environment running the tests."""
    beside_python = Path(sys.executable).with_name("jupyter-book")
    command = str(beside_python) if beside_python.exists() else shutil.which("jupyter-book")
    assert command, "jupyter-book is not installed: run `make test`, which installs it"
    return command


def build_book(output_dir: Path) -> BookBuild:
    """Build the book from scratch into output_dir/_build, as `make book` does: warnings are errors,
    references are checked (-n), and --keep-going reports every warning and still writes the site."""
    result = subprocess.run(
        [jupyter_book_command(), "build", str(ROOT), "-W", "-n", "--keep-going", "--path-output", str(output_dir)],
        capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    return BookBuild(result.returncode, result.stdout + result.stderr, output_dir / "_build" / "html")


def build_book_once(output_dir: Path) -> BookBuild:
    """`build_book(output_dir)`, unless another process already did: the first of several processes (say,
    pytest-xdist workers) to get here builds, the others wait for it and read its result."""
    record = output_dir / "build.json"
    output_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{output_dir}.lock"):
        if not record.exists():
            build = build_book(output_dir)
            record.write_text(json.dumps({"returncode": build.returncode, "log": build.log}))
    result = json.loads(record.read_text())
    return BookBuild(result["returncode"], result["log"], output_dir / "_build" / "html")


def chapter_pages(html_dir: Path) -> list[Path]:
    """The pages of the chapters listed in _toc.yml (the introduction, chapters, back matter)."""
    toc = (ROOT / "_toc.yml").read_text()
    files = re.findall(r"^\s*(?:-\s*file|root):\s*(\S+)", toc, re.M)
    return [html_dir / f"{name}.html" for name in files]


# -- reading HTML -------------------------------------------------------------------------------------

@dataclass
class Element:
    tag: str
    attrs: dict[str, str]


@dataclass
class Html:
    """A page's elements (tag and attributes, in document order), its ids, and its inline CSS."""
    elements: list[Element] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    css: list[str] = field(default_factory=list)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.html = Html()
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.html.elements.append(Element(tag, values))
        self.html.ids.update(values[name] for name in ("id", "name") if values.get(name))
        if values.get("style"):
            self.html.css.append(values["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.html.css.append(data)


@functools.lru_cache(maxsize=None)
def read_html(page: Path) -> Html:
    """The elements, ids and inline CSS of an HTML file (cached: the tests read each page many times)."""
    reader = _Reader()
    reader.feed(page.read_text(encoding="utf-8"))
    return reader.html


def fetched_urls(html: Html) -> Iterator[str]:
    """Every URL the page makes the browser fetch by itself: scripts, stylesheets, icons, images, fonts
    and media, including url() and @import in inline CSS (not links the reader may follow)."""
    for element in html.elements:
        if element.tag == "link":
            if FETCHING_RELS & set(element.attrs.get("rel", "").lower().split()):
                yield element.attrs.get("href", "")
            continue
        for name in FETCHING_ATTRIBUTES.get(element.tag, ()):
            value = element.attrs.get(name, "").strip()
            if name == "srcset":
                yield from (candidate.split()[0] for candidate in value.split(",") if candidate.strip())
            elif value:
                yield value
    for css in html.css:
        yield from CSS_REMOTE_URL.findall(css)


def remote_urls_in_css(css_file: Path) -> list[str]:
    """The http(s) URLs a stylesheet would fetch (url(...) and @import)."""
    return CSS_REMOTE_URL.findall(css_file.read_text(encoding="utf-8", errors="replace"))


def is_remote(url: str) -> bool:
    return bool(REMOTE_URL.match(url.strip()))


def local_references(html: Html) -> Iterator[str]:
    """Every URL in the page that points inside the site: links, scripts, stylesheets, images."""
    for element in html.elements:
        for name in ("href", "src"):
            url = element.attrs.get(name, "").strip()
            if url and not ABSOLUTE_URL.match(url):
                yield url


def broken_reference(page: Path, url: str, html_dir: Path) -> str | None:
    """Why `url`, found in `page`, does not resolve (a missing file, or a missing #anchor); None if it does."""
    parts = urlsplit(url)
    target = page if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(html_dir.resolve()):
        return f"{url}: points outside the site"
    if not target.is_file():
        return f"{url}: no such file"
    anchor = unquote(parts.fragment)
    if anchor and target.suffix == ".html" and anchor not in read_html(target).ids:
        return f"{url}: no id '{anchor}' in {target.name}"
    return None


# -- serving ------------------------------------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # the browser tests report what matters
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve `directory` over HTTP on 127.0.0.1 (a free port) from a thread; yield its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/"
        finally:
            server.shutdown()
            thread.join()
