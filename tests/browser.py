"""Real-browser helpers: Debian's Chromium driven by Playwright (never a downloaded browser).

The browser itself is one per run: the `chromium` fixture in tests/conftest.py; tests take the `page` fixture."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

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


LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
DOCS = Path(__file__).resolve().parent.parent / "docs"
SCREENSHOT_WIDTH = 1000  # README images: small enough to load fast, wide enough to read


def is_local(url: str) -> bool:
    """True for the app's own address and for in-page data:/blob: URLs; False for anything remote."""
    parsed = urlparse(url)
    if parsed.scheme in ("data", "blob", "about"):
        return True
    return (parsed.hostname or "") in {h.strip("[]") for h in LOCAL_HOSTS}


class Watch:
    """Records what a page tries that it should not: remote requests (blocked, never sent), dialogs, errors."""

    def __init__(self, page) -> None:
        self.remote: list[str] = []
        self.dialogs: list[str] = []
        page.route(lambda url: not is_local(url), self._block)
        page.on("dialog", self._dialog)

    def _block(self, route) -> None:
        self.remote.append(route.request.url)
        route.abort()

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def open_tab(page, url: str, tab: str | None = None, ready: str | None = None) -> Watch:
    """Load the app with remote requests and dialogs watched, open `tab`, and wait for `ready` to be visible
    (the tab is rendered before anything is uploaded into it)."""
    watch = Watch(page)
    page.goto(url)
    page.wait_for_selector("#qvl-header")
    if tab:
        page.get_by_role("tab", name=tab).click()
    if ready:
        page.wait_for_selector(ready, state="visible")
    return watch


def send_chat(page, text: str, files: list[str]) -> None:
    """Type a chat message (with files attached, once their thumbnails show) and press Enter."""
    page.wait_for_selector("#chat-input textarea")
    if files:
        page.set_input_files("#chat-input input[type=file]", files)
        page.wait_for_selector("#chat-input img, #chat-input .thumbnail-item")
    page.fill("#chat-input textarea", text)
    page.keyboard.press("Enter")


def save_screenshot(page, name: str, **kwargs) -> Path:
    """Screenshot into tests/artifacts; with QVL_UPDATE_SCREENSHOTS=1 also a small optimized copy in docs/."""
    from PIL import Image

    artifacts = Path(__file__).resolve().parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    out = artifacts / f"{name}.png"
    page.screenshot(path=str(out), **kwargs)
    if os.environ.get("QVL_UPDATE_SCREENSHOTS") == "1":
        img = Image.open(out).convert("RGB")
        if img.width > SCREENSHOT_WIDTH:
            img = img.resize((SCREENSHOT_WIDTH, round(img.height * SCREENSHOT_WIDTH / img.width)),
                             Image.Resampling.LANCZOS)
        # A 256-colour palette keeps UI screenshots crisp at a fraction of the size.
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            DOCS / f"{name}.png", optimize=True)
    return out


VIEWPORTS = {"desktop": (1440, 900), "phone": (390, 844)}  # the desktop and phone sizes
# A status tracker's red badge, the one a failed event puts on each of its outputs (toasts excluded).
BADGES = "() => [...document.querySelectorAll('.error')].filter(e => e.offsetParent && e.innerText.trim() === 'Error'" \
         " && !e.closest('[data-testid=toast-body], .toast-body, .toast-wrap')).length"
