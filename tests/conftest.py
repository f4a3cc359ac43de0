"""Shared fixtures: one dSprites cache per test session, in a temporary folder."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Point VAEZOO_CACHE at a session folder so tests never touch the user's cache."""
    previous = os.environ.get("VAEZOO_CACHE")
    os.environ["VAEZOO_CACHE"] = str(tmp_path_factory.mktemp("vaezoo-cache"))
    yield os.environ["VAEZOO_CACHE"]
    if previous is None:
        os.environ.pop("VAEZOO_CACHE", None)
    else:
        os.environ["VAEZOO_CACHE"] = previous
