"""Shared fixtures: one decoded-data cache per test session, so generated data is made once."""

import os

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
