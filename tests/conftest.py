"""Shared fixtures: one dSprites cache per test session, in a temporary folder."""

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one worker per core, one thread each
    os.environ["OMP_NUM_THREADS"] = "1"  # also for the processes a test starts
    import torch

    torch.set_num_threads(1)


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
