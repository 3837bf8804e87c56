"""Shared fixtures: one decoded-data cache per test session, so generated data is made once;
the smoke book built once per session (test_book.py, test_browser.py)."""

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def session_cache_dir(tmp_path_factory):
    """Point COOP_CACHE_DIR at a fresh folder for the session (tests may override it)."""
    previous = os.environ.get("COOP_CACHE_DIR")
    path = tmp_path_factory.mktemp("coop-cache")
    os.environ["COOP_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("COOP_CACHE_DIR", None)
    else:
        os.environ["COOP_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """The smoke book's ``_build/html``, built with warnings as errors (see
    ``test_notebooks.smoke_book``: ``COOP_TEST_BOOK=<folder>`` keeps it between sessions)."""
    from test_notebooks import smoke_book

    report = smoke_book(tmp_path_factory)
    assert report["build_returncode"] == 0, report["build_output"][-5000:]
    return Path(report["root"]) / "_build" / "html"


@pytest.fixture(scope="session")
def reader_built(tmp_path_factory):
    """The reader's book (``make book``: the committed results and weights, nothing trained),
    built with warnings as errors into a temporary folder; ``COOP_TEST_READER_BOOK=<folder>``
    keeps it between sessions."""
    from coop_utils import book

    folder = Path(
        os.environ.get("COOP_TEST_READER_BOOK", tmp_path_factory.getbasetemp() / "reader-book")
    )
    html = folder / "root" / "_build" / "html"
    if not (html / "book" / "index.html").exists():
        report = book.build_book(
            "preview",
            overrides={
                "run_root": str(folder / "runs"),
                "results_root": str(book.REPO_ROOT / "results"),
            },
            book_root=folder / "root",
            echo=lambda line: None,
            capture_build=True,
        )
        errors = [f"{c.name}: {c.error}" for c in report.chapters if c.error]
        assert not errors, errors
        assert report.build_returncode == 0, report.build_output[-5000:]
    return html
