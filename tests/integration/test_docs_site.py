"""The docs site (`make docs`): built with warnings as errors, served on 127.0.0.1 and read
in a real headless Debian chromium (one browser over its DevTools pipe, tests/support).

What each page must show comes from the sources, not from this file: the modules and roles
and their options from ansible-doc (what antsibull-docs reads too), the guides' README
sections from the guides' own ``readme-section`` lines. The link check crawls every built
page and fetches every internal href/src from the server, fragments included.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import pytest

from support.ansible_run import COLLECTIONS, REPO
from support.headless_chromium import CHROMIUM, Chromium

sys.path.insert(0, str(REPO / "docs" / "sphinx"))
from readme_section import section_lines  # noqa: E402

BIN = Path(sys.executable).parent
COLLECTION = "overlaynet.flannel"
GUIDES = REPO / "docs" / "docsite" / "rst"

pytestmark = pytest.mark.slow


def _ansible_doc(*args: str) -> dict[str, Any]:
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_NOCOLOR="1")
    out = subprocess.run([str(BIN / "ansible-doc"), "--json", *args], check=True, capture_output=True,
                         text=True, env=env).stdout
    docs: dict[str, Any] = json.loads(out)
    return docs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make docs` into a directory of the test's own; it fails on any Sphinx warning."""
    out = tmp_path_factory.mktemp("ofld-docs")
    run = subprocess.run(["make", "--no-print-directory", "docs", f"DOCS_DIR={out}"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    # -W (warnings are errors) is in the build script antsibull-docs generated and make ran
    assert re.search(r"^sphinx-build .* -W\b", (out / "src" / "build.sh").read_text(), re.M)
    return out / "html"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """One headless chromium for the module's pages."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: `make deps` installs Debian's chromium"
    with Chromium(tmp_path_factory.mktemp("ofld-chromium")) as chromium:
        yield chromium


class _Page(HTMLParser):
    """A page's ids, its h1 text, its visible text and the URLs it refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[str] = []
        self.h1 = ""
        self.text: list[str] = []
        self._in_h1 = False
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("id", "name") if tag == "a" else ("id",):
            if values.get(name):
                self.ids.add(str(values[name]))
        for name in ("href", "src"):
            if values.get(name):
                self.refs.append(str(values[name]))
        self._in_h1 = self._in_h1 or tag == "h1"
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag: str) -> None:
        self._in_h1 = self._in_h1 and tag != "h1"
        self._skip -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.h1 += data
        if not self._skip:
            self.text.append(data)

    def words(self) -> str:
        return _normal("".join(self.text))


def _normal(text: str) -> str:
    """Whitespace collapsed, typographic quotes and dashes made plain (smartypants' doing), the
    theme's icon glyphs (private-use characters, as in each heading's link) dropped."""
    text = re.sub("[\ue000-\uf8ff]", "", text)
    text = text.translate(str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                                         "\u2013": "-", "\u2014": "-"}))
    return " ".join(text.split())


def _parse(markup: str) -> _Page:
    page = _Page()
    page.feed(markup)
    page.close()
    return page


def _option_ids(options: dict[str, Any], prefix: str, nested: str = "suboptions") -> Iterator[str]:
    """antsibull-docs' anchor of each option (or return value), nested ones as parent/child."""
    for name, spec in options.items():
        yield prefix + name
        yield from _option_ids(spec.get(nested) or {}, f"{prefix}{name}/", nested)


def _return_ids(returns: dict[str, Any]) -> set[str]:
    """The anchors of the return values; antsibull-docs shows ``ansible_facts`` by the facts
    it contains, so that one has no anchor of its own."""
    return set(_option_ids(returns, "return-", "contains")) - {"return-ansible_facts"}


def test_the_index_lists_every_module_role_and_guide(server: str, browser: Chromium) -> None:
    page = _parse(browser.dom(server))
    assert _normal(page.h1) == "Overlaynet.Flannel"
    modules = _ansible_doc("-t", "module", "-l", COLLECTION)
    roles = _ansible_doc("-t", "role", "-l", COLLECTION)
    assert modules and roles
    targets = {urldefrag(ref)[0] for ref in page.refs}
    for fqcn in modules:
        assert f"{fqcn.split('.')[-1]}_module.html" in targets, fqcn
    for fqcn in roles:
        assert f"{fqcn.split('.')[-1]}_role.html" in targets, fqcn
    for guide in GUIDES.glob("*.rst"):
        assert f"docsite/{guide.stem}.html" in targets, guide.name


def test_each_module_page_renders_its_title_and_every_option(server: str, browser: Chromium) -> None:
    names = sorted(_ansible_doc("-t", "module", "-l", COLLECTION))
    docs = _ansible_doc("-t", "module", *names)
    for fqcn in names:
        doc = docs[fqcn]["doc"]
        page = _parse(browser.dom(f"{server}{fqcn.split('.')[-1]}_module.html"))
        assert _normal(page.h1) == _normal(f"{fqcn} module - {doc['short_description']}")
        missing = set(_option_ids(doc["options"], "parameter-")) - page.ids
        assert not missing, f"{fqcn}: options not on its page: {sorted(missing)}"
        missing = _return_ids(docs[fqcn].get("return") or {}) - page.ids
        assert not missing, f"{fqcn}: return values not on its page: {sorted(missing)}"


def test_each_role_page_renders_its_title_and_every_option(server: str, browser: Chromium) -> None:
    names = sorted(_ansible_doc("-t", "role", "-l", COLLECTION))
    for fqcn in names:
        entry_points = _ansible_doc("-t", "role", fqcn)[fqcn]["entry_points"]
        page = _parse(browser.dom(f"{server}{fqcn.split('.')[-1]}_role.html"))
        assert _normal(page.h1).startswith(f"{fqcn} role - "), page.h1
        for entry, spec in entry_points.items():
            missing = set(_option_ids(spec.get("options") or {}, f"parameter-{entry}--")) - page.ids
            assert not missing, f"{fqcn} ({entry}): options not on its page: {sorted(missing)}"


def _first_sentence(markdown: list[str]) -> str:
    """The first prose line of a README section, as a page shows it (markup dropped): not in
    a code block, not a heading, a table row or an indented line."""
    in_fence = False
    for line in markdown:
        if line.lstrip().startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and line.strip() and not line.startswith(("#", "|", "    ")):
            return _normal(re.sub(r"[`*]", "", line.lstrip("- ")))
    raise AssertionError("the section has no prose line")


def test_each_guide_shows_the_readme_sections_it_includes(server: str, browser: Chromium) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for guide in sorted(GUIDES.glob("*.rst")):
        titles = re.findall(r"^\.\. readme-section:: (.+)$", guide.read_text(encoding="utf-8"), re.M)
        assert titles, f"{guide.name} includes no README section"
        words = _parse(browser.dom(f"{server}docsite/{guide.stem}.html")).words()
        for title in titles:
            assert _first_sentence(section_lines(readme, title)) in words, f"{guide.name}: {title}"


def _fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own 127.0.0.1 server)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _is_internal(ref: str) -> bool:
    parts = urlsplit(ref)
    return not parts.scheme and not parts.netloc


def test_every_internal_link_resolves(site: Path, server: str) -> None:
    pages: dict[str, _Page] = {}
    broken: list[str] = []
    checked = 0
    for path in sorted(site.rglob("*.html")):
        url = urljoin(server, path.relative_to(site).as_posix())
        for ref in _parse(path.read_text(encoding="utf-8")).refs:
            if not _is_internal(ref := html.unescape(ref)):
                continue
            target, fragment = urldefrag(urljoin(url, ref))
            checked += 1
            if target not in pages:
                status, body = _fetch(target)
                if status != 200:
                    broken.append(f"{url}: {ref} -> HTTP {status}")
                    continue
                is_html = target.endswith((".html", "/"))
                pages[target] = _parse(body.decode("utf-8")) if is_html else _Page()
            if fragment and fragment not in pages[target].ids:
                broken.append(f"{url}: {ref} -> no id {fragment!r}")
    assert checked > 100, f"only {checked} internal links found: is the crawl reading the pages?"
    assert not broken, "\n".join(broken)
