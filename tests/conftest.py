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
