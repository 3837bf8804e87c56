"""Every page of the reader's book (what `make book` builds) in headless Chromium, offline.

Each page is opened from ``file://`` with every other request failed (the DevTools ``Fetch``
domain intercepts them, and DNS resolves nothing), so a page that needs a CDN fails. On each
page: every image loads, MathJax (bundled with the build) has typeset the maths and no raw TeX
is left in the text, and the console shows no error (exceptions, ``console.error``, error log
entries, failed loads). At a reader's 1280-pixel window, no figure is drawn wider than its
column (and so shown scaled down, its lettering with it), and no code, maths or table box is
wider than its room unless it scrolls with a visible scrollbar. A screenshot of each page is
kept in ``test-artifacts/``.

The pages are those of ``_toc.yml`` plus Sphinx's search and index pages;
:func:`test_every_page_of_the_build_is_checked` holds that list to the HTML files of the build.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from test_notebooks import ARTIFACTS

from coop_utils.book import REPO_ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; .ci/run does)",
)

#: Sphinx's own pages, reachable from every page (the search box, the index): checked as well
UTILITY_PAGES = ["search.html", "genindex.html"]


def toc_pages(toc: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """The HTML page of every document of the table of contents, root first."""
    files: list[str] = []

    def walk(node) -> None:
        if isinstance(node, dict):
            for key in ("root", "file"):
                if key in node:
                    files.append(str(node[key]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load(toc.read_text()))
    return [f"{Path(name).with_suffix('')}.html" for name in files]


PAGES = toc_pages() + UTILITY_PAGES


def built_pages(html: Path) -> set[str]:
    """The HTML files of a build, less the theme's template fragments under ``_static/``."""
    return {
        path.relative_to(html).as_posix()
        for path in html.rglob("*.html")
        if path.relative_to(html).parts[0] != "_static"
    }


def test_every_page_of_the_build_is_checked(reader_built):
    built = reader_built
    pages = built_pages(built)
    # index.html at the top is Jupyter Book's redirect to the root page, which is checked
    redirect = (built / "index.html").read_text()
    root = toc_pages()[0]
    assert f'url={root}"' in redirect and "<body" not in redirect, redirect
    assert pages - {"index.html"} == set(PAGES), "pages the browser test does not know"


# --- headless Chromium over the DevTools protocol ---------------------------------------------


def above_stdio_and_pipe(descriptor: int) -> int:
    """The same pipe end as a descriptor >= 10, so that bash's ``3<&N 4>&M`` cannot clash."""
    moved = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(descriptor)
    return moved


#: what a page may load: its own files and inline data
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4).

    :meth:`open` opens a page in a fresh tab with the console and the network watched and every
    request that is not local failed; :attr:`events` then holds the page's console, log and
    network events and :attr:`blocked` the URLs it tried to fetch.
    """

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        # offline even for what the Fetch interception would not see (preconnects, workers)
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--remote-debugging-pipe",
    ]

    WATCHED = ("Runtime.", "Log.", "Network.loadingFailed", "Network.requestWillBeSent", "Page.")

    def __init__(self, executable: str, profile_dir: Path) -> None:
        to_browser, self._write = map(above_stdio_and_pipe, os.pipe())
        self._read, from_browser = map(above_stdio_and_pipe, os.pipe())
        command = [executable, *self.FLAGS, f"--user-data-dir={profile_dir}", "about:blank"]
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "bash", *command],
            pass_fds=(to_browser, from_browser),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None
        self.target: str | None = None
        self.events: list[dict] = []
        self.blocked: list[str] = []

    # the protocol

    def _post(self, method: str, params: dict) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def send(self, method: str, timeout: float = 60, **params):
        """Send a command and wait for its answer, handling the events that come meanwhile."""
        wanted = self._post(method, params)
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if "method" in message:
                self._handle(message)

    def pump(self, seconds: float) -> None:
        """Handle the events of the next ``seconds``."""
        deadline = time.monotonic() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                message = self._receive(deadline)
                if "method" in message:
                    self._handle(message)

    def _handle(self, message: dict) -> None:
        if message.get("sessionId") != self.session:
            return
        method, params = message["method"], message.get("params", {})
        if method == "Fetch.requestPaused":
            url = params["request"]["url"]
            if url.startswith(LOCAL_SCHEMES):
                self._post("Fetch.continueRequest", {"requestId": params["requestId"]})
            else:
                self.blocked.append(url)
                self._post(
                    "Fetch.failRequest",
                    {"requestId": params["requestId"], "errorReason": "InternetDisconnected"},
                )
        elif method.startswith(self.WATCHED):
            self.events.append(message)

    def _receive(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self._read], [], [], max(remaining, 0))
            if not ready:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    # pages

    def open(self, url: str, timeout: float = 120) -> None:
        """Open ``url`` in a fresh tab, offline and watched, and wait until it has loaded."""
        self.close_page()
        self.target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=self.target, flatten=True)[
            "sessionId"
        ]
        self.events, self.blocked = [], []
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.send(f"{domain}.enable")
        self.send("Fetch.enable", patterns=[{"urlPattern": "*"}])
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=1600,
            deviceScaleFactor=1,
            mobile=False,
        )
        navigation = self.send("Page.navigate", url=url)
        assert "errorText" not in navigation, f"{url}: {navigation['errorText']}"
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            self.pump(0.2)

    def evaluate(self, expression: str, timeout: float = 120):
        result = self.send(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:60]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def errors(self) -> list[str]:
        """The page's console errors, uncaught exceptions, error log entries and failed loads."""
        found = [f"network request blocked (offline): {url}" for url in self.blocked]
        requested = {}
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent":
                requested[params["requestId"]] = params["request"]["url"]
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                exception = details.get("exception", {})
                text = exception.get("description") or details.get("text", "")
                found.append(f"uncaught exception: {text} ({details.get('url', '')})")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                args = [arg.get("value", arg.get("description", "")) for arg in params["args"]]
                found.append(f"console.{params['type']}: {' '.join(map(str, args))}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                found.append(f"log ({entry['source']}): {entry['text']} {entry.get('url', '')}")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                url = requested.get(params["requestId"], params["requestId"])
                if url not in self.blocked:
                    found.append(f"failed load: {url}: {params['errorText']}")
        return found

    def screenshot(self, path: Path, most_height: int = 12000) -> None:
        """The whole page (up to ``most_height`` pixels) as a PNG, as a reader's 1280-pixel-wide
        window lays it out: the window is made as tall as the page, so that sticky sidebars
        and headers stay where a reader sees them (capturing beyond the viewport shifts them)."""
        height = self.evaluate("document.documentElement.scrollHeight")
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=min(height, most_height),
            deviceScaleFactor=1,
            mobile=False,
        )
        self.pump(0.5)
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close_page(self) -> None:
        if self.target is not None:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.send("Target.closeTarget", targetId=self.target)
        self.target = self.session = None

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.close_page()
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = Chromium(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


# --- what is checked on a page ---------------------------------------------------------------

#: every image once it has loaded or failed
LOADED_IMAGES = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(image => image.complete ? null : new Promise(done => {
    image.onload = image.onerror = done; setTimeout(done, 20000);
  })));
  return images.map(image => ({src: image.getAttribute("src"), width: image.naturalWidth}));
})()"""

#: MathJax's state once its first typesetting of the page is done (or 60 s have passed)
MATHJAX = """(async () => {
  const math = document.querySelectorAll(".math").length;
  const mathjax = window.MathJax;
  if (!mathjax || !mathjax.startup) {
    return {math, loaded: false, done: false, typeset: 0};
  }
  const late = new Promise(done => setTimeout(() => done(false), 60000));
  const done = await Promise.race([mathjax.startup.promise.then(() => true), late]);
  const typeset = document.querySelectorAll("mjx-container").length;
  return {math, loaded: true, version: mathjax.version, done, typeset};
})()"""

#: the text a reader sees, outside code and typeset maths, one string per block of the page
PAGE_TEXT = """(() => {
  const skip = "pre, code, kbd, samp, script, style, textarea, noscript, template, "
    + "mjx-container, mjx-assistive-mml, .MathJax";
  const blocks = new Map();
  const blockOf = element => {
    for (let node = element; node && node !== document.body; node = node.parentElement) {
      if (!getComputedStyle(node).display.startsWith("inline")) return node;
    }
    return document.body;
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const parent = text.parentElement;
    if (!parent || parent.closest(skip)) continue;
    const block = blockOf(parent);
    blocks.set(block, (blocks.get(block) || "") + text.data);
  }
  return [...blocks.values()].filter(text => text.trim());
})()"""

#: TeX that MathJax did not typeset: display and inline delimiters, environments, and $...$ by
#: Pandoc's rule (a non-space after the opening $ and before the closing one, no digit after
#: it), so that "$20 and $30" is not maths
RAW_TEX = re.compile(
    r"\\[()\[\]]|\$\$|\\begin\{|(?<![\\$])\$(?=[^\s$])[^$\n]*?(?<=[^\s\\])\$(?!\d)"
)


#: at the window's width (1280 px): each image drawn wider than the box it is shown in (so
#: scaled down), and each box of code, maths or table wider than its room that does not
#: scroll with a scrollbar that takes room (a visible one); SVG drawings scale without loss
LAYOUT = """(() => {
  const found = [];
  const article = document.querySelector("article.bd-article") || document.body;
  for (const image of article.querySelectorAll("img")) {
    const src = image.getAttribute("src") || "";
    if (!image.naturalWidth || src.endsWith(".svg")) continue;
    const shown = image.getBoundingClientRect().width;
    if (shown < image.naturalWidth - 1) {
      found.push(`figure ${src.slice(-40)} drawn ${image.naturalWidth} px wide, `
        + `shown at ${Math.round(shown)} px`);
    }
  }
  const boxes = "pre, div.math, mjx-container[display='true'], table";
  for (const box of article.querySelectorAll(boxes)) {
    if (box.scrollWidth <= box.clientWidth + 1) continue;
    if (box.parentElement.closest(boxes) || box.closest("details:not([open])")) continue;
    const style = getComputedStyle(box);
    const borders = parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
    const scrollbar = box.offsetHeight - box.clientHeight - borders;
    const scrolls = ["auto", "scroll"].includes(style.overflowX) && scrollbar > 0;
    if (!scrolls) {
      const text = (box.innerText || "").trim().split("\\n")[0].slice(0, 60);
      found.push(`${box.tagName.toLowerCase()} ${box.scrollWidth} px wide in `
        + `${box.clientWidth} px, overflow-x ${style.overflowX}, no visible scrollbar: `
        + `${JSON.stringify(text)}`);
    }
  }
  return found;
})()"""

#: text no page may say: the paper is public (arXiv 2312.08532)
FORBIDDEN_TEXT = ("Only the paper's abstract is public",)
#: the paper, linked from the landing page
PAPER_URL = "https://arxiv.org/abs/2312.08532"


def raw_tex(blocks: list[str]) -> list[str]:
    found = []
    for text in blocks:
        for match in RAW_TEX.finditer(text):
            start = max(match.start() - 30, 0)
            found.append(f"{match.group()!r} in ...{text[start : match.end() + 30]!r}...")
    return found


def test_raw_tex_is_told_from_prices_and_code_free_text():
    assert raw_tex(["the loss $L = \\sum_i \\ell_i$ is"]) and raw_tex(["at $s$ it"])
    assert raw_tex(["$$x$$"]) and raw_tex(["\\(x\\)"]) and raw_tex(["\\begin{equation}"])
    assert not raw_tex(["costs $20 and $30, or $ 5 $"]) and not raw_tex(["plain text"])


@needs_chromium
@pytest.mark.parametrize("page", PAGES)
def test_the_page_renders_offline_with_images_maths_and_no_console_error(
    browser, reader_built, page
):
    built = reader_built
    path = built / page
    assert path.is_file(), f"{page} was not built"
    browser.open(path.as_uri())
    failures = []
    if not browser.evaluate("document.title"):
        failures.append("no title")
    if page not in UTILITY_PAGES and not browser.evaluate(
        "document.querySelector('h1') && document.querySelector('h1').innerText"
    ):
        failures.append("no heading")

    images = browser.evaluate(LOADED_IMAGES)
    failures += [f"image did not load: {image['src']}" for image in images if not image["width"]]

    mathjax = browser.evaluate(MATHJAX)
    if mathjax["math"] and not mathjax["loaded"]:
        failures.append(f"{mathjax['math']} maths element(s) but MathJax did not load")
    if mathjax["loaded"] and not mathjax["done"]:
        failures.append("MathJax did not finish typesetting in 60 s")
    if mathjax["math"] and mathjax["loaded"] and not mathjax["typeset"]:
        failures.append("MathJax typeset nothing")
    failures += [f"raw TeX: {where}" for where in raw_tex(browser.evaluate(PAGE_TEXT))]
    failures += browser.evaluate(LAYOUT)
    text = browser.evaluate("document.body.innerText")
    failures += [f"says {forbidden!r}" for forbidden in FORBIDDEN_TEXT if forbidden in text]
    if page == toc_pages()[0]:
        links = browser.evaluate("[...document.links].map(link => link.href)")
        if not any(link.startswith(PAPER_URL) for link in links):
            failures.append(f"the landing page does not link the paper ({PAPER_URL})")

    browser.pump(1.0)  # late errors: scripts that load after the page
    failures += browser.errors()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"browser-{page.removesuffix('.html').replace('/', '-')}.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000, f"{page}: blank screenshot"
    summary = f"{page} ({len(images)} images, MathJax {mathjax})"
    assert not failures, summary + ":\n  " + "\n  ".join(failures)


#: where the summary page's scope line, tally and verdict table lie, in page pixels
OPENING = """(() => Object.fromEntries(
  [".replication-scope", ".replication-tally", "table.verdicts"].map(selector => {
    const element = document.querySelector(selector);
    if (!element) return [selector, null];
    const box = element.getBoundingClientRect();
    return [selector, {top: box.top + window.scrollY, bottom: box.bottom + window.scrollY}];
  })))()"""


@needs_chromium
def test_the_summary_page_opens_on_its_scope_and_tally_within_the_first_screen(
    browser, reader_built
):
    """A reader's first screen of *Does it replicate?* (1280 x 800) holds the one-line scope
    of the replication and the verdict tally, in that order, and the verdict table begins
    in it."""
    page = reader_built / "book" / "executed" / "00_does_it_replicate.html"
    browser.open(page.as_uri())
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        width=1280,
        height=800,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.pump(0.5)
    boxes = browser.evaluate(OPENING)
    ARTIFACTS.mkdir(exist_ok=True)
    shot = browser.send("Page.captureScreenshot", format="png")["data"]
    (ARTIFACTS / "browser-first-screen-00.png").write_bytes(base64.b64decode(shot))
    for selector in (".replication-scope", ".replication-tally"):
        assert boxes[selector] is not None, f"the page has no {selector}"
        assert boxes[selector]["bottom"] <= 800, (
            f"{selector} ends at {boxes[selector]['bottom']} px"
        )
    assert boxes[".replication-scope"]["bottom"] <= boxes[".replication-tally"]["top"]
    assert boxes["table.verdicts"] is not None and boxes["table.verdicts"]["top"] < 800
