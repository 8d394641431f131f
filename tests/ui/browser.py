"""Headless Debian chromium driven by Playwright. The project's setup installs both
(`infra/local/setup.sh`); Playwright never downloads a browser of its own here, it is pointed at
the system one. A missing browser fails the test that asked for it, naming the fix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

SETUP_HINT = "run `bash infra/local/setup.sh` (apt-get install chromium; pip install playwright)"
BROWSER_NAMES = ("chromium", "chromium-browser")


def chromium_path() -> str:
    """The system chromium (`QF_CHROMIUM` overrides), or a test failure saying how to get it."""
    wanted = os.environ.get("QF_CHROMIUM")
    found = shutil.which(wanted) if wanted else next(
        (p for p in map(shutil.which, BROWSER_NAMES) if p), None)
    if not found:
        pytest.fail(f"no chromium found on PATH ({wanted or ', '.join(BROWSER_NAMES)}): "
                    f"{SETUP_HINT}", pytrace=False)
    return found


def expect(locator: Any) -> Any:
    """Playwright's retrying assertions (no script evaluation: the page's CSP forbids it)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@contextmanager
def browser() -> Iterator[Any]:
    """A headless chromium for the duration of the block."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the playwright package is not installed: {SETUP_HINT}", pytrace=False)
    path = chromium_path()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, headless=True)
        try:
            yield b
        finally:
            b.close()
