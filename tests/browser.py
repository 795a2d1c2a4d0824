"""Real-browser helpers: Debian's Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out, which this network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def require_chromium() -> None:
    """Skip when Chromium is absent on a developer machine; in CI (or QVL_REQUIRE_BROWSER) fail instead."""
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI") or os.environ.get("QVL_REQUIRE_BROWSER"):
        pytest.fail(f"Chromium not found at {CHROMIUM}: `make browser` installs Debian's package.")
    pytest.skip("Chromium is not installed (make browser)")


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()
