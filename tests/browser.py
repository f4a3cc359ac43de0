"""Chromium for the browser tests and the screenshots: Debian's chromium driven by Selenium through
chromium-driver, and waiting for what the page shows."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helpers import skip_or_fail

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Chromium as root in a sandbox-less container, with nothing that reaches for the network
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic",
]  # fmt: skip


def require_browser(env: Mapping[str, str] = os.environ) -> None:
    """Return if chromium and chromium-driver are installed; else skip (under ``CI=true`` fail) saying how."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if not missing:
        return
    message = (
        f"{' and '.join(missing)} not found: the browser tests drive Debian's chromium through "
        "chromium-driver. Enable them with `sudo apt-get install chromium chromium-driver`, or run "
        "`make test`, which installs them when it can"
    )
    skip_or_fail(message, env)


def chromium_driver(width: int = 1300, height: int = 1000) -> Any:
    """A headless Selenium driver of Debian's chromium (selenium imported here: it is a test extra)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in [*CHROMIUM_FLAGS, f"--window-size={width},{height}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    return driver


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
