"""The book builds from scratch with warnings as errors, and its pages show what they should: offline,
every link resolving, figures with alt text, numbered chapters each ending with its problem set.

The book is built once per session (the `built_book` fixture in conftest.py); tests/test_book_browser.py
then loads the same pages in a real browser.
"""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.book_site import (ROOT, BookBuild, broken_reference, chapter_pages, fetched_urls, is_remote,
                             local_references, read_html, remote_urls_in_css)

pytestmark = pytest.mark.xdist_group("book")


def section(html: str, section_id: str) -> str:
    """The HTML of the <section> with the given id (up to the next section)."""
    match = re.search(rf'<section id="{section_id}">(.*?)(?=<section id=|$)', html, re.S)
    assert match, f'no <section id="{section_id}"> in the page'
    return match.group(1)


def numbered_chapters(html_dir: Path) -> list[Path]:
    """The built pages of the numbered chapters (book/NN_*.md)."""
    return [page for page in chapter_pages(html_dir) if re.match(r"\d\d_", page.name) and page.is_file()]


def test_book_builds_without_warnings(built_book: BookBuild) -> None:
    if built_book.returncode != 0:
        problems = "\n".join(built_book.problems()) or built_book.log[-6000:]
        pytest.fail(f"jupyter-book build -W -n failed:\n{problems}", pytrace=False)


def test_index_redirects_to_the_introduction(built_book: BookBuild) -> None:
    index = (built_book.html_dir / "index.html").read_text()
    assert "url=book/intro.html" in index, "index.html should redirect to the introduction"


def test_introduction_executed_and_shows_the_notation(built_book: BookBuild) -> None:
    intro = (built_book.html_dir / "book" / "intro.html").read_text()
    assert "<title>Exploding Gradients" in intro

    # The set-up cell ran at build time and its output is in the page.
    assert re.search(r"PyTorch \d+\.\d+\.\d+\S*, labkit \d+", intro), "the intro's code cell did not execute"

    notation = section(intro, "notation")
    assert "<table" in notation, "the notation table did not render as a table"
    assert notation.count("<tr") >= 15, "the notation table lost rows"
    for symbol in (r"W_{\mathrm{rec}}", r"\rho(W)", r"\lambda_1", r"\eta"):
        assert symbol in notation, f"notation table is missing {symbol}"


def test_bibliography_page_lists_the_cited_works(built_book: BookBuild) -> None:
    references = (built_book.html_dir / "book" / "references.html").read_text()
    assert "On the difficulty of training recurrent neural networks" in references
    cited = sum((page.read_text().count('href="references.html#id') for page in numbered_chapters(built_book.html_dir)))
    assert cited > 0, "no chapter cites a work from the bibliography"


def test_every_page_is_in_the_site(built_book: BookBuild) -> None:
    missing = [page.relative_to(built_book.html_dir) for page in chapter_pages(built_book.html_dir)
               if not page.is_file()]
    assert not missing, f"_toc.yml lists pages that were not built: {missing}"
    assert (built_book.html_dir / "search.html").is_file() and (built_book.html_dir / "searchindex.js").is_file()


def test_pages_load_nothing_from_outside_the_site(built_book: BookBuild) -> None:
    """Offline reading: no script, stylesheet, font, icon or image comes from another host. Links a
    reader may follow (<a href="https://...">, to cite a paper) are fine."""
    html_dir = built_book.html_dir
    remote = [f"{page.relative_to(html_dir)}: {url}" for page in built_book.pages()
              for url in fetched_urls(read_html(page)) if is_remote(url)]
    remote += [f"{css.relative_to(html_dir)}: {url}" for css in sorted(html_dir.rglob("*.css"))
               for url in remote_urls_in_css(css)]
    assert not remote, "the site fetches from other hosts:\n" + "\n".join(sorted(set(remote)))


def test_math_is_rendered_by_the_local_mathjax(built_book: BookBuild) -> None:
    html_dir = built_book.html_dir
    scripts = {url.split("?")[0].rsplit("/", 1)[-1] for page in built_book.pages()
               for url in fetched_urls(read_html(page)) if "mathjax" in url.lower()}
    assert scripts == {"tex-chtml.js"}, f"pages load MathJax as {scripts}; expected the local tex-chtml.js"
    assert (html_dir / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert (html_dir / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), \
        "MathJax's fonts are not in the site"


BROKEN_PAGE = """<html><head>
<link rel="stylesheet" href="https://fonts.example.org/font.css">
<link rel="canonical" href="https://example.org/book/page.html">
<style>@import "https://cdn.example.org/theme.css"; body { background: url(//cdn.example.org/bg.png) }</style>
<script src="https://cdn.example.org/lib.js"></script>
</head><body>
<a href="https://doi.org/10.1000/cited">a cited paper</a>
<img srcset="local.png 1x, https://cdn.example.org/big.png 2x" alt="">
<a href="other.html#there">fine</a> <a href="other.html#gone">no anchor</a> <a href="gone.html">no file</a>
<a href="#here">fine</a> <span id="here"></span>
</body></html>"""


def test_the_static_checks_catch_a_broken_page(tmp_path: Path) -> None:
    """The offline and link checks are not vacuous: they flag each fault of a page made to have them."""
    page = tmp_path / "page.html"
    page.write_text(BROKEN_PAGE)
    (tmp_path / "other.html").write_text('<p id="there">')
    remote = {url for url in fetched_urls(read_html(page)) if is_remote(url)}
    assert remote == {"https://fonts.example.org/font.css", "https://cdn.example.org/theme.css",
                      "//cdn.example.org/bg.png", "https://cdn.example.org/lib.js", "https://cdn.example.org/big.png"}
    broken = {url: broken_reference(page, url, tmp_path) for url in local_references(read_html(page))}
    assert broken == {"other.html#there": None, "other.html#gone": "other.html#gone: no id 'gone' in other.html",
                      "gone.html": "gone.html: no such file", "#here": None}


def test_every_internal_link_resolves(built_book: BookBuild) -> None:
    """Every href and src that points inside the site names a file that exists, and an anchor in it."""
    html_dir = built_book.html_dir
    broken = sorted({f"{page.relative_to(html_dir)}: {problem}" for page in built_book.pages()
                     for url in local_references(read_html(page))
                     if (problem := broken_reference(page, url, html_dir))})
    assert not broken, "broken links:\n" + "\n".join(broken)


RAW_TABLE_ROW = re.compile(r"\|\s*(?:-{3,}|—+|–+)\s*\|")  # a Markdown table's |---| row (smartquotes: |—|)


def raw_markdown_tables(html: str) -> list[str]:
    """Lines of a page's text, outside code blocks, that are a Markdown table shown as text."""
    text = re.sub(r"<pre\b.*?</pre>", "", html, flags=re.S)  # listings may show pipes on purpose
    text = re.sub(r"<[^>]+>", "", text)
    return [line.strip()[:80] for line in text.splitlines() if RAW_TABLE_ROW.search(line)]


def test_raw_markdown_tables_are_detected() -> None:
    assert raw_markdown_tables("<p>| a | b | |—|—| | 1 | 2 |</p>")
    assert not raw_markdown_tables("<table><tr><td>a</td></tr></table><pre>| --- |</pre>")


def test_tables_printed_by_cells_render_as_tables(built_book: BookBuild) -> None:
    """A cell that returns Markdown (the benchmarks and classics appendices) must show a table, not pipes:
    myst-nb renders such output as CommonMark, which has no tables, unless `nb_render_markdown_format`."""
    html_dir = built_book.html_dir
    leaked = [f"{page.relative_to(html_dir)}: {line}" for page in built_book.pages()
              for line in raw_markdown_tables(page.read_text(encoding="utf-8"))]
    assert not leaked, "Markdown tables shown as text:\n" + "\n".join(leaked)
    benchmarks = (html_dir / "book" / "appendix_benchmarks.html").read_text(encoding="utf-8")
    assert benchmarks.count("<table") >= 6, "the benchmarks appendix should show one table per suite"


def test_every_figure_has_alt_text(built_book: BookBuild) -> None:
    """Screen readers read the alt text, and it shows when an image fails. In a chapter, give a figure
    from a code cell its text with the cell metadata `mystnb: {image: {alt: ...}}` (or a `figure:` with a
    caption); a Markdown image takes `![alt text](path)`."""
    html_dir = built_book.html_dir
    missing = [f"{page.relative_to(html_dir)}: {element.attrs.get('src', '?')[-60:]}"
               for page in chapter_pages(html_dir) if page.is_file()
               for element in read_html(page).elements
               if element.tag == "img" and not element.attrs.get("alt", "").strip()]
    assert not missing, "images without alt text:\n" + "\n".join(missing)


def test_chapters_are_numbered(built_book: BookBuild) -> None:
    chapters = numbered_chapters(built_book.html_dir)
    assert chapters, "no numbered chapter (book/NN_*.md) in _toc.yml"
    unnumbered = [page.name for page in chapters
                  if not re.search(r'<h1>\s*<span class="section-number">\d+\. </span>', page.read_text())]
    assert not unnumbered, f"chapters without a number in their title: {unnumbered} (`numbered: true` in _toc.yml)"


def test_every_chapter_ends_with_its_problem_set(built_book: BookBuild) -> None:
    """Each chapter links a download of its released problem set (exactly the notebook in exercises/)
    and says how to open it in JupyterLab."""
    html_dir = built_book.html_dir
    problems = []
    for page in numbered_chapters(html_dir):
        number = page.name[:2]
        downloads = [element.attrs["href"] for element in read_html(page).elements
                     if element.tag == "a" and element.attrs.get("href", "").endswith(f"/ps{number}.ipynb")
                     and "download" in element.attrs.get("class", "")]
        released = sorted(ROOT.glob(f"exercises/ps{number}_*/ps{number}.ipynb"))
        if not downloads or not released:
            problems.append(f"{page.name}: no download link to exercises/ps{number}_*/ps{number}.ipynb")
        elif (page.parent / downloads[0]).resolve().read_bytes() != released[0].read_bytes():
            problems.append(f"{page.name}: the downloadable ps{number}.ipynb is not the released notebook")
        elif "JupyterLab" not in page.read_text():
            problems.append(f"{page.name}: does not say how to open the problem set in JupyterLab")
    assert not problems, "\n".join(problems)


def test_widgets_appear_as_static_figures(built_book: BookBuild) -> None:
    """A live ipywidget needs a kernel, so in the static book it would be an empty box: chapters show each
    explorer's static figure and leave the widget to JupyterLab."""
    pages_with_widgets = [page.relative_to(built_book.html_dir) for page in built_book.pages()
                          if "application/vnd.jupyter.widget-view+json" in page.read_text()]
    assert not pages_with_widgets, f"pages that display a live widget: {pages_with_widgets}"


def test_launch_buttons_are_configured_with_a_repository() -> None:
    """Launch buttons build their links from the repository URL; without one they would point at Jupyter
    Book's own repository. They may be off (the default here), never half on."""
    config = (ROOT / "_config.yml").read_text()
    launch = re.search(r"^launch_buttons:\n((?:[ \t]+.*\n)+)", config, re.M)
    assert launch, "_config.yml has no launch_buttons section for instructors to fill in"
    urls = re.findall(r'^\s+(jupyterhub_url|binderhub_url|colab_url):\s*"?([^"\s#]*)', launch.group(1), re.M)
    assert {name for name, _ in urls} == {"jupyterhub_url", "binderhub_url", "colab_url"}
    if any(url for _, url in urls):
        assert re.search(r"^repository:\n\s+url:\s*https://\S+", config, re.M), \
            "launch buttons are on, but _config.yml has no repository url"


def test_book_cache_is_emptied_when_labkit_changes(tmp_path: Path) -> None:
    """`make book` keeps executed chapters in a cache keyed on their code; a change to labkit (or a new
    environment) must empty it, or the book would show what the old labkit computed."""
    if shutil.which("make") is None:
        pytest.skip("needs make: sudo apt-get install make")
    stamp, source, cache, key = (tmp_path / "installed", tmp_path / "module.py",
                                 tmp_path / "cache", tmp_path / "cache.key")
    stamp.touch()
    source.write_text("VERSION = 1\n")

    def make_book_cache() -> None:
        subprocess.run(["make", "-s", "-C", str(ROOT), "-o", str(stamp), "book-cache", f"STAMP={stamp}",
                        f"BOOK_CACHE={cache}", f"BOOK_CACHE_KEY={key}", f"LABKIT_SOURCES={source}"],
                       check=True, capture_output=True, timeout=60)

    def cache_survives() -> bool:
        cache.mkdir(exist_ok=True)
        (cache / "executed").touch()
        make_book_cache()
        return cache.is_dir()

    make_book_cache()
    assert cache_survives(), "the cache was emptied although nothing changed"
    source.write_text("VERSION = 2\n")
    assert not cache_survives(), "labkit changed, but the cache was kept"
    assert cache_survives()
    os.utime(stamp, (0, 0))  # `make venv` reinstalled the environment: a new stamp time
    assert not cache_survives(), "the environment was reinstalled, but the cache was kept"
