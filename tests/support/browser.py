"""Headless Chromium from Debian's `chromium` package, driven by Playwright (pip `playwright`, never its own browsers).

A test that asks for it is skipped, with the command that installs what is
missing, when either is absent; .ci/run installs both.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium browser; as root it runs only without its sandbox."""
    binary = shutil.which("chromium")
    if binary is None:
        pytest.skip("the `chromium` binary is not on PATH (Debian: apt-get install chromium; .ci/run does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox", "--headless=new"])
        try:
            yield browser
        finally:
            browser.close()
