"""A live Chromium page the agent drives (off unless the app enables it): allowed hosts only, one page per owner.

Each step takes a screenshot of the page's viewport, asks the model for the next action (`agent_step`), performs
it on the page at the mapped coordinates and starts over, until `terminate`/`answer`, the step limit, or the
caller stops pulling. The screenshot is taken at device scale 1, so its pixels are the page's CSS pixels and the
action's original-pixel coordinates are where the mouse goes.

What the model can do is what a person at the keyboard and mouse could do on that page: clicks, typing, named
keys, wheel scrolls, drags. Nothing it writes is evaluated as script, navigated to as a URL or sent anywhere but
to the page's keyboard. Requests (and WebSockets) to hosts outside the allowlist are aborted; downloads are
refused; a page that opens a window or tab has it closed at once.

Playwright's sync API is bound to the thread that started it, and the web server calls from many threads, so
one worker thread owns Playwright and every page operation runs there (`LiveBrowser._call`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from qvl_core.engine.backend import Backend
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.errors import UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
from qvl_core.parse.toolcall import AgentAction, ScreenKind
from qvl_core.tasks.agent import AgentStepResult, Trajectory, agent_step, check_screen

log = logging.getLogger(__name__)
T = TypeVar("T")

# Named limits and defaults.
VIEWPORTS: dict[str, tuple[int, int]] = {"computer": (1280, 800), "phone": (390, 844)}
DEFAULT_LIVE_STEPS = 10
MAX_LIVE_STEPS = 50
MAX_LIVE_PAGES = 16  # pages open at once (one per browser session); a further session is refused, not queued
MAX_URL_CHARS = 2048
NAVIGATION_TIMEOUT_S = 20.0
ACTION_TIMEOUT_S = 15.0  # one page operation (a click, a screenshot) before it is given up as stuck
MAX_WAIT_S = 5.0  # a `wait` action's pause on a live page, at most
LONG_PRESS_S = 0.8
SETTLE_S = 0.3  # after an action, before the next screenshot: let the page react (a click's handler, a scroll)
DRAG_STEPS = 12  # mouse moves along a drag, so the page sees a drag and not a jump
LOOPBACK_NAMES = ("localhost",)
# In-page URLs that never leave the machine.
LOCAL_SCHEMES = ("data", "blob", "about")
# Chromium as root runs only without its sandbox; the other flags stop it calling home.
CHROMIUM_ARGS = ("--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage")

# The keys the model may press, by the names the cookbooks' models write (lower case), as Playwright names them.
# A name not here is refused: the model gets a keyboard, not a way to send arbitrary key strings.
KEY_NAMES: dict[str, str] = {
    "ctrl": "Control", "control": "Control", "alt": "Alt", "option": "Alt", "shift": "Shift",
    "cmd": "Meta", "command": "Meta", "super": "Meta", "meta": "Meta", "win": "Meta", "windows": "Meta",
    "enter": "Enter", "return": "Enter", "esc": "Escape", "escape": "Escape", "tab": "Tab", "space": "Space",
    "backspace": "Backspace", "delete": "Delete", "del": "Delete", "insert": "Insert",
    "up": "ArrowUp", "down": "ArrowDown", "left": "ArrowLeft", "right": "ArrowRight",
    "arrowup": "ArrowUp", "arrowdown": "ArrowDown", "arrowleft": "ArrowLeft", "arrowright": "ArrowRight",
    "pageup": "PageUp", "pagedown": "PageDown", "page_up": "PageUp", "page_down": "PageDown",
    "home": "Home", "end": "End", **{f"f{n}": f"F{n}" for n in range(1, 13)},
}


# ---- which URLs a page may reach ---------------------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """True for http(s) URLs on loopback or on one of `hosts` (exact names), and in-page data:/blob:/about: URLs."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        return False
    host = parts.hostname.lower()
    return is_loopback(host) or host in hosts


def parse_hosts(text: str | None) -> tuple[str, ...]:
    """'a.example, B.example' -> ('a.example', 'b.example'); a URL or a wildcard is refused by name."""
    hosts = []
    for item in (text or "").split(","):
        host = item.strip().lower()
        if not host:
            continue
        if "/" in host or "*" in host or " " in host:
            raise UserError(f"--agent-browser-hosts takes host names separated by commas (e.g. example.com), got "
                            f"{item.strip()!r} (env QVL_AGENT_BROWSER_HOSTS).")
        hosts.append(host)
    return tuple(hosts)


def check_url(url: str, hosts: tuple[str, ...]) -> str:
    """The URL a live page may open (a bare host gets http://), or UserError naming the host and the setting."""
    url = (url or "").strip()
    if not url:
        raise UserError("Give the page's URL first (e.g. http://127.0.0.1:8000/).")
    if len(url) > MAX_URL_CHARS:
        raise UserError(f"The URL is {len(url)} characters long, over the limit of {MAX_URL_CHARS}.")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"The live browser opens http(s) pages only, not {url!r}.")
    if not host_allowed(url, hosts):
        allowed = ", ".join(hosts) or "none besides this machine (loopback)"
        raise UserError(f"The live browser may not open {parts.hostname!r}: allowed hosts are {allowed} "
                        "(an admin adds hosts with --agent-browser-hosts / QVL_AGENT_BROWSER_HOSTS).")
    return url


def key_chord(keys: tuple[str, ...] | list[str]) -> str:
    """['ctrl', 'a'] -> 'Control+a'; UserError for a key outside KEY_NAMES that is not one character."""
    names = []
    for key in keys:
        k = str(key).strip()
        if len(k) == 1 and k.isprintable():
            names.append(k)
        elif k.lower() in KEY_NAMES:
            names.append(KEY_NAMES[k.lower()])
        else:
            raise UserError(f"Key {k!r} is not one the live page can press (named keys: enter, tab, esc, ctrl, "
                            "alt, shift, arrows, page up/down, home, end, F1-F12, or one character).")
    if not names:
        raise UserError("The key action named no key.")
    return "+".join(names)


# ---- what happened on the page -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PageOutcome:
    """What performing one action did: a line for the person, the page's URL after it, and what was refused."""

    done: str
    url: str
    problem: str | None = None  # the action could not be performed (the loop goes on: the model sees the page)
    blocked: tuple[str, ...] = ()  # requests the allowlist aborted during the action


def describe(action: AgentAction) -> str:
    """The action in words, for the log shown before it is performed (typed text shown as written)."""
    at = f" at ({action.coordinate[0]:.0f}, {action.coordinate[1]:.0f})" if action.coordinate else ""
    if action.action == "type":
        return f"type {action.text!r}{at}"
    if action.action == "key":
        return f"press {'+'.join(action.keys) or action.text!r}"
    if action.action in ("scroll", "hscroll"):
        return f"{action.action} {action.pixels:+g} px{at}"
    if action.action == "swipe" and action.coordinate2:
        return f"swipe{at} to ({action.coordinate2[0]:.0f}, {action.coordinate2[1]:.0f})"
    if action.action == "system_button":
        return f"press the {action.button} button"
    if action.action in ("answer", "terminate"):
        detail = action.text or action.status or ""
        return f"{action.action}" + (f": {detail}" if detail else "")
    return f"{action.action}{at}"


@dataclass
class _Page:
    context: Any
    page: Any
    start_url: str
    screen: ScreenKind
    pointer: tuple[float, float] = (0.0, 0.0)
    blocked: list[str] = field(default_factory=list)  # during the current action
    refused: list[str] = field(default_factory=list)  # since the page opened


class LiveBrowser:
    """One headless Chromium with one page per owner (a browser session's id), driven from one worker thread."""

    def __init__(self, hosts: tuple[str, ...] = (), *, executable: str | None = None,
                 settle_s: float = SETTLE_S) -> None:
        self.hosts = tuple(h.lower() for h in hosts)
        self.executable = executable if executable is not None else shutil.which("chromium")
        self.settle_s = settle_s
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="qvl-live-browser")
        self._playwright: Any = None
        self._browser: Any = None
        self._pages: dict[str, _Page] = {}
        self._lock = threading.Lock()
        self._closed = False

    @staticmethod
    def available() -> str | None:
        """None when Playwright can be imported; else what to install."""
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            return ("The live browser needs Playwright and a Chromium: `pip install playwright` and "
                    "`apt-get install chromium` (or `playwright install chromium`).")
        return None

    # -- the worker thread ---------------------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], timeout: float = ACTION_TIMEOUT_S + NAVIGATION_TIMEOUT_S) -> T:
        if self._closed:
            raise UserError("The live browser has been shut down.")
        future = self._executor.submit(fn)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise UserError(f"The live page did not answer within {timeout:.0f} s.") from None

    def _ensure_browser(self) -> Any:
        if self._browser is None or not self._browser.is_connected():
            from playwright.sync_api import sync_playwright

            if self._playwright is None:
                self._playwright = sync_playwright().start()
            args = [*CHROMIUM_ARGS, *(["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])]
            self._browser = self._playwright.chromium.launch(executable_path=self.executable or None, args=args)
        return self._browser

    # -- pages ---------------------------------------------------------------------------------------------------
    def open(self, owner: str, url: str, screen: ScreenKind = "computer") -> str:
        """Open (or reuse) `owner`'s page at `url`; returns the URL it landed on. UserError for a refused URL."""
        url = check_url(url, self.hosts)
        check_screen(screen)
        with self._lock:
            if owner not in self._pages and len(self._pages) >= MAX_LIVE_PAGES:
                raise UserError(f"{MAX_LIVE_PAGES} live pages are open (the limit): try again when one closes.")
        return self._call(lambda: self._open(owner, url, screen))

    def _open(self, owner: str, url: str, screen: ScreenKind) -> str:
        entry = self._pages.get(owner)
        if entry is not None and entry.screen != screen:
            self._close_page(owner)
            entry = None
        if entry is None:
            width, height = VIEWPORTS[screen]
            phone = screen == "phone"
            context = self._ensure_browser().new_context(
                viewport={"width": width, "height": height}, device_scale_factor=1, is_mobile=phone,
                has_touch=phone, accept_downloads=False, service_workers="block")
            context.set_default_timeout(ACTION_TIMEOUT_S * 1000)
            context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_S * 1000)
            entry = _Page(context, None, url, screen)  # the handlers below close over this one entry
            context.route("**/*", lambda route: self._route(route, entry))
            if hasattr(context, "route_web_socket"):
                context.route_web_socket("**/*", lambda ws: self._route_ws(ws, entry))
            entry.page = context.new_page()
            # Registered after our own page exists: any later page is a popup or a new window, closed at once.
            context.on("page", lambda p: p.close() if p is not entry.page else None)
            entry.page.on("dialog", lambda d: d.dismiss())
            self._pages[owner] = entry
        entry.start_url = url
        entry.blocked.clear()
        with contextlib.suppress(Exception):  # a page that fails to load still shows (its error page)
            entry.page.goto(url, wait_until="load")
        return entry.page.url

    def _route(self, route: Any, entry: _Page) -> None:
        url = route.request.url
        if host_allowed(url, self.hosts):
            route.continue_()
        else:
            entry.blocked.append(url)
            entry.refused.append(url)
            route.abort("blockedbyclient")

    def _route_ws(self, ws: Any, entry: _Page) -> None:
        if host_allowed(ws.url, self.hosts):
            ws.connect_to_server()
        else:
            entry.blocked.append(ws.url)
            entry.refused.append(ws.url)
            ws.close()

    def has_page(self, owner: str) -> bool:
        return owner in self._pages

    def url(self, owner: str) -> str:
        return self._call(lambda: self._entry(owner).page.url)

    def refused(self, owner: str) -> list[str]:
        """Every URL the allowlist aborted on `owner`'s page since it opened."""
        return self._call(lambda: list(self._entry(owner).refused))

    def _entry(self, owner: str) -> _Page:
        entry = self._pages.get(owner)
        if entry is None or entry.page.is_closed():
            raise UserError("No live page is open: give a URL and start.")
        return entry

    def screenshot(self, owner: str, path: Path) -> Path:
        """A PNG of `owner`'s page viewport at CSS-pixel size."""
        self._call(lambda: self._entry(owner).page.screenshot(path=str(path), animations="disabled"))
        return path

    def perform(self, owner: str, action: AgentAction, start: tuple[float, float] | None = None) -> PageOutcome:
        """Do `action` on `owner`'s page (coordinates in screenshot pixels). A refused action is a problem in the
        outcome, not an exception: the next step shows the model the page as it is."""
        return self._call(lambda: self._perform(self._entry(owner), action, start))

    def _perform(self, entry: _Page, action: AgentAction, start: tuple[float, float] | None) -> PageOutcome:
        page, mouse = entry.page, entry.page.mouse
        entry.blocked.clear()
        name, p, p2 = action.action, action.coordinate, action.coordinate2
        problem = None
        try:
            if name in ("left_click", "right_click", "middle_click", "double_click", "triple_click", "click"):
                button = {"right_click": "right", "middle_click": "middle"}.get(name, "left")
                count = {"double_click": 2, "triple_click": 3}.get(name, 1)
                if name == "click" and entry.screen == "phone":
                    page.touchscreen.tap(*p)
                else:
                    mouse.click(*p, button=button, click_count=count)
                entry.pointer = p
            elif name == "mouse_move":
                mouse.move(*p)
                entry.pointer = p
            elif name == "left_click_drag":
                begin = start or entry.pointer
                mouse.move(*begin)
                mouse.down()
                mouse.move(*p, steps=DRAG_STEPS)
                mouse.up()
                entry.pointer = p
            elif name == "long_press":
                mouse.move(*p)
                mouse.down()
                page.wait_for_timeout(LONG_PRESS_S * 1000)
                mouse.up()
                entry.pointer = p
            elif name == "swipe":
                # A finger moving up scrolls the page down: the wheel moves by the swipe's opposite.
                mouse.move(*p)
                mouse.wheel(p[0] - p2[0], p[1] - p2[1])
            elif name in ("scroll", "hscroll"):
                if p is not None:
                    mouse.move(*p)
                    entry.pointer = p
                pixels = action.pixels or 0.0
                # Positive pixels scroll up (the cookbook's convention); the wheel's positive delta scrolls down.
                mouse.wheel(pixels, 0) if name == "hscroll" else mouse.wheel(0, -pixels)
            elif name == "type":
                if p is not None:
                    mouse.click(*p)
                page.keyboard.type(action.text or "")
            elif name == "key":
                keys = action.keys or ((action.text,) if action.text else ())
                page.keyboard.press(key_chord(keys))
            elif name == "system_button":
                button = (action.button or "").strip().lower()
                if button == "back":
                    page.go_back(wait_until="load")
                elif button == "home":
                    page.goto(entry.start_url, wait_until="load")
                elif button == "enter":
                    page.keyboard.press("Enter")
                else:
                    problem = f"The {action.button!r} button does nothing on a web page (Back, Home and Enter do)."
            elif name == "wait":
                page.wait_for_timeout(min(MAX_WAIT_S, max(0.0, action.time or 1.0)) * 1000)
            elif name == "open":
                problem = f"Opening an app ({action.text!r}) is not possible on a web page."
            # terminate / answer: nothing to do on the page.
        except UserError as exc:
            problem = str(exc)
        except Exception as exc:  # noqa: BLE001 - a page that refuses an action is reported, the loop goes on
            problem = f"The page refused the action: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        if problem is None and name not in ("wait", "terminate", "answer"):
            # Playwright's own wait, not time.sleep: route handlers (the allowlist) run only while it waits.
            page.wait_for_timeout(self.settle_s * 1000)
            with contextlib.suppress(Exception):
                page.wait_for_load_state("load", timeout=NAVIGATION_TIMEOUT_S * 1000)
        if page.url.startswith("chrome-error://") and entry.blocked:
            # The action led off the allowed hosts: Chromium shows its error page; back to where the task was.
            with contextlib.suppress(Exception):
                page.go_back(wait_until="load")
            problem = problem or "The page tried to leave the allowed hosts; it was blocked and went back."
        done = f"did not {describe(action)}" if problem and not entry.blocked else describe(action)
        return PageOutcome(done, page.url, problem, tuple(entry.blocked))

    def close_page(self, owner: str) -> None:
        """Close `owner`'s page and its context (cookies, storage); a no-op without one."""
        if owner in self._pages and not self._closed:
            with contextlib.suppress(Exception):
                self._call(lambda: self._close_page(owner))

    def _close_page(self, owner: str) -> None:
        entry = self._pages.pop(owner, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                entry.context.close()

    def close(self) -> None:
        """Close every page and the browser, and stop the worker thread."""
        if self._closed:
            return

        def shutdown() -> None:
            for owner in list(self._pages):
                self._close_page(owner)
            with contextlib.suppress(Exception):
                if self._browser is not None:
                    self._browser.close()
            with contextlib.suppress(Exception):
                if self._playwright is not None:
                    self._playwright.stop()

        with contextlib.suppress(Exception):
            self._call(shutdown)
        self._closed = True
        self._executor.shutdown(wait=False)


# ---- the loop ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LiveStep:
    """One finished step: the screenshot the model saw, what it asked for, and what the page did."""

    screenshot: Path
    result: AgentStepResult
    outcome: PageOutcome | None  # None: nothing was performed (a problem, or a final action)

    def to_json(self) -> dict:
        out = self.result.to_json()
        if self.outcome is not None:
            out["page"] = {"done": self.outcome.done, "url": self.outcome.url, "problem": self.outcome.problem,
                           "blocked": list(self.outcome.blocked)}
        return out


@dataclass(frozen=True)
class LiveProgress:
    """Where the loop is: `phase` is "thinking" (the model is answering; `raw` so far), "acting" (about to
    perform `pending`, described in `note`), "acted", or "done" (`note` says why it ended)."""

    phase: str
    steps: tuple[LiveStep, ...]
    screenshot: Path | None
    trajectory: Trajectory
    raw: str = ""
    reasoning: str = ""
    pending: AgentStepResult | None = None
    note: str = ""
    url: str = ""


def drive(session: Backend, browser: LiveBrowser, owner: str, url: str, task: str, *, folder: Path,
          screen: ScreenKind = "computer", max_steps: int = DEFAULT_LIVE_STEPS, sampling: SamplingParams | None = None,
          max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS, thinking: bool | None = None,
          thinking_budget: int = DEFAULT_THINKING_BUDGET) -> Iterator[LiveProgress]:
    """Open `url` on `owner`'s page and let the model work on `task` step by step (see the module docstring).

    Stop by closing the iterator: the page stays as it is (the next run continues from it).
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or not 1 <= max_steps <= MAX_LIVE_STEPS:
        raise UserError(f"Steps must be a whole number from 1 to {MAX_LIVE_STEPS}, got {max_steps!r}.")
    trajectory = Trajectory(task, screen)
    landed = browser.open(owner, url, screen)
    steps: list[LiveStep] = []
    for n in range(1, max_steps + 1):
        shot = browser.screenshot(owner, folder / f"step-{n:02d}.png")
        yield LiveProgress("thinking", tuple(steps), shot, trajectory, url=landed)
        result = None
        with contextlib.closing(agent_step(session, shot, trajectory, sampling=sampling,
                                           max_image_tokens=max_image_tokens, thinking=thinking,
                                           thinking_budget=thinking_budget)) as progress:
            for p in progress:
                result = p.result
                if result is None:
                    yield LiveProgress("thinking", tuple(steps), shot, trajectory, p.raw, p.reasoning, url=landed)
        assert result is not None
        trajectory = trajectory.with_step(result, shot)
        if result.action is None or result.action.final:
            steps.append(LiveStep(shot, result, None))
            why = (f"No action: {result.problem.message}" if result.problem else
                   f"The model ended the task ({describe(result.action)}).")
            yield LiveProgress("done", tuple(steps), shot, trajectory, result.raw, result.reasoning, note=why,
                               url=landed)
            return
        yield LiveProgress("acting", tuple(steps), shot, trajectory, result.raw, result.reasoning, result,
                           f"Step {n}: {describe(result.action)} …", landed)
        outcome = browser.perform(owner, result.action, result.start)
        landed = outcome.url
        steps.append(LiveStep(shot, result, outcome))
        note = f"Step {n}: {outcome.done}" + (f" ✗ ({outcome.problem})" if outcome.problem else " ✓")
        yield LiveProgress("acted", tuple(steps), shot, trajectory, result.raw, result.reasoning, note=note,
                           url=landed)
    last = browser.screenshot(owner, folder / f"step-{max_steps + 1:02d}.png")
    yield LiveProgress("done", tuple(steps), last, trajectory, steps[-1].result.raw, steps[-1].result.reasoning,
                       note=f"Stopped after {max_steps} steps (the step limit) without a terminate.", url=landed)
