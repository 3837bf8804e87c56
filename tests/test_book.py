"""The book: the runner's helpers, the smoke book built
with warnings as errors, its pages and images, and the built book in headless Chromium."""

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import textwrap
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from test_notebooks import ARTIFACTS, CHAPTERS, smoke_book

from coop_utils import book
from coop_utils.__main__ import main


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    report = smoke_book(tmp_path_factory)
    assert report["build_returncode"] == 0, report["build_output"][-5000:]
    return Path(report["root"]) / "_build" / "html"


# --- the runner ---------------------------------------------------------------------------


def test_chapters_are_selected_by_number_or_name():
    assert [p.stem for p in book.select_chapters(["1", "03"])] == [CHAPTERS[1], CHAPTERS[3]]
    assert [p.stem for p in book.select_chapters([CHAPTERS[6]])] == [CHAPTERS[6]]
    assert [p.stem for p in book.select_chapters(["0"])] == ["00_does_it_replicate"]
    assert len(book.select_chapters(None)) == 8
    with pytest.raises(ValueError, match="unknown chapter '99'"):
        book.select_chapters(["99"])


def test_profile_parameters_carry_device_seed_and_chapter_settings():
    base, settings = book.profile_parameters("smoke")
    assert base["profile"] == "smoke" and base["device"] == "cpu" and base["seed"] == 0
    assert base["train"] is False and book.profile_parameters("preview", train=True)[0]["train"]
    assert set(settings) <= set(CHAPTERS)


def test_a_run_command_names_only_what_differs_from_the_profile():
    config = book.load_config("preview", dataset="tiny-imagenet", seed=2, data_root="/data")
    command = "python -m coop_utils train --profile preview --dataset tiny-imagenet"
    assert book.run_command(config) == f"{command} --method cooperative --seed 2"
    ablation = book.load_config("preview", variant="no-sfsl", sfsl=False, epochs=2)
    assert book.run_command(ablation).endswith("--variant no-sfsl --set epochs=2")


def test_unknown_chapter_setting_is_refused(tmp_path, monkeypatch):
    (tmp_path / "smoke.yaml").write_text("chapters:\n  08_missing: {x: 1}\n")
    monkeypatch.setattr(book, "PARAMS_DIR", tmp_path)
    with pytest.raises(ValueError, match="unknown chapter"):
        book.profile_parameters("smoke")


def test_an_override_no_chapter_declares_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="no selected chapter declares"):
        book.build_book("smoke", chapters=["01"], overrides={"nonsense": 1}, book_root=tmp_path)
    assert not (tmp_path / "book" / "executed").exists()


def test_command_line_names_a_bad_chapter(capsys):
    assert main(["book", "--chapters", "42", "--no-build"]) == 2
    assert "unknown chapter '42'" in capsys.readouterr().err


def test_a_failing_chapter_is_named_with_its_cell(tmp_path, monkeypatch):
    source = tmp_path / "notebooks" / "01_broken.py"
    source.parent.mkdir()
    source.write_text(
        textwrap.dedent(
            """\
            # ---
            # jupyter:
            #   kernelspec:
            #     display_name: Python 3
            #     language: python
            #     name: python3
            # ---

            # %% [markdown]
            # # Broken

            # %% tags=["parameters"]
            profile = "smoke"

            # %%
            x = 1

            # %%
            raise RuntimeError("boom")
            """
        )
    )
    result = book.execute_chapter(source, tmp_path / "out.ipynb", {"profile": "smoke"})
    assert result.error is not None
    assert "01_broken" in result.error and "boom" in result.error
    assert "cell" in result.error and "raise RuntimeError" in result.error


def test_a_chapter_not_executed_yet_gets_a_placeholder_page(tmp_path):
    source = book.select_chapters(["01"])[0]
    book._placeholder(source, tmp_path / "page.ipynb")
    page = nbformat.read(tmp_path / "page.ipynb", as_version=4)
    assert page.cells[0].source.startswith("# Dynamic depth")
    assert f"--chapters {source.stem[:2]}" in page.cells[0].source


# --- the built smoke book -------------------------------------------------------------------


class Images(HTMLParser):
    """The ``src`` of every ``<img>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs).get("src", ""))


def image_sources(page: Path) -> list[str]:
    parser = Images()
    parser.feed(page.read_text())
    return parser.sources


def test_the_smoke_book_builds_with_warnings_as_errors(built):
    assert (built / "index.html").exists()
    for page in ("index", "reproducing", "open-decisions", "bibliography"):
        assert (built / "book" / f"{page}.html").exists()


@pytest.mark.parametrize("name", CHAPTERS[1:])  # 00 draws only recorded results (none at smoke)
def test_every_chapter_page_has_a_figure_whose_image_exists(built, name):
    page = built / "book" / "executed" / f"{name}.html"
    sources = [src for src in image_sources(page) if not src.startswith("data:")]
    assert sources, f"{name} has no figure"
    for src in sources:
        assert (page.parent / src).resolve().is_file(), f"{name}: missing image {src}"
    assert "Smoke run: these numbers are not results" in page.read_text()


def test_pages_hide_their_parameters_and_load_no_widget_manager(built):
    for page in built.rglob("*.html"):
        text = page.read_text()
        assert 'profile = "smoke"' not in text, f"{page}: a parameters cell is shown"
        for script in ("require.js", "require.min.js", "html-manager", "embed-amd"):
            assert script not in text, f"{page} loads {script}"
    chapter = (built / "book" / "executed" / f"{CHAPTERS[1]}.html").read_text()
    assert "_static/book.css" in chapter and (built / "_static" / "book.css").is_file()


def test_every_image_the_book_references_exists(built):
    for page in built.rglob("*.html"):
        for src in image_sources(page):
            if not src.startswith(("data:", "http:", "https:")):
                assert (page.parent / src).resolve().is_file(), f"{page}: missing {src}"


def test_the_bibliography_lists_the_paper(built):
    text = (built / "book" / "bibliography.html").read_text().lower()
    assert "cooperative learning for cost-adaptive inference" in text
    assert "be your own teacher" in text


# --- the built book in a real browser -------------------------------------------------------


def above_stdio_and_pipe(descriptor: int) -> int:
    """The same pipe end as a descriptor >= 10, so that bash's ``3<&N 4>&M`` cannot clash."""
    moved = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(descriptor)
    return moved


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4)."""

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--remote-debugging-pipe",
    ]

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
        self.session = None

    def send(self, method: str, timeout: float = 60, **params):
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

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

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            width=1280,
            height=1600,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.send("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while self.evaluate("document.readyState") != "complete":
            assert time.monotonic() < deadline, f"{url} did not finish loading"
            time.sleep(0.2)

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.send("Browser.close", timeout=10)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self._write)
        os.close(self._read)


LOADED_IMAGES = """(async () => {
  const images = [...document.images];
  await Promise.all(images.map(image => image.complete ? null : new Promise(done => {
    image.onload = image.onerror = done; setTimeout(done, 10000);
  })));
  return images.map(image => ({src: image.getAttribute("src"), width: image.naturalWidth}));
})()"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    chromium = Chromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


@pytest.mark.parametrize(
    ("page", "least_images"),
    [("book/index.html", 0), (f"book/executed/{CHAPTERS[1]}.html", 3)],
)
def test_the_browser_renders_pages_with_their_images_loaded(built, browser, page, least_images):
    browser.open((built / page).as_uri())
    assert browser.evaluate("document.title"), f"{page} has no title"
    heading = browser.evaluate(
        "document.querySelector('h1') && document.querySelector('h1').innerText"
    )
    assert heading, f"{page} shows no heading"
    images = browser.evaluate(LOADED_IMAGES)
    figures = [image for image in images if "_images/" in (image["src"] or "")]
    assert len(figures) >= least_images, images
    assert all(image["width"] > 0 for image in images), [i for i in images if not i["width"]]
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / f"book-{Path(page).stem}.png"
    browser.screenshot(shot)
    assert shot.stat().st_size > 10_000


def test_benchmark_records_are_read_with_their_provenance(tmp_path):
    from coop_utils.runs import write_benchmark

    assert book.benchmark_records(tmp_path) == {}
    path = write_benchmark(
        tmp_path / "benchmarks" / "train_step.json", "train_step", {"ratio": 1.05}
    )
    (tmp_path / "benchmarks" / "unrelated.json").write_text("{}")
    records = book.benchmark_records(tmp_path)
    assert list(records) == ["train_step"] and records["train_step"]["results"] == {"ratio": 1.05}
    label = book.benchmark_label(records["train_step"])
    assert "(CPU," in label and records["train_step"]["date"][:10] in label
    assert json.loads(path.read_text())["command"].startswith("python ")
