"""Who may call what: API clients only the documented endpoints, anonymous clients only the login page."""

from __future__ import annotations

import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

FREE_LOGIN_FAILURES = 5  # wrong passwords a client may send before it has to wait
FIRST_LOCKOUT_S = 1.0  # the wait after the first failure past the free ones; it doubles with each further one
MAX_LOCKOUT_S = 300.0  # ... up to five minutes, so the right password always gets in again
FORGET_AFTER_S = 3600.0  # a client's failures are forgotten an hour after its last attempt
MAX_TRACKED_CLIENTS = 10_000  # bound on the per-client table: the least recently seen client is dropped first

LOGIN_PATHS = ("/login", "/login/")
# What the login page itself loads before anyone has logged in (recorded from Chromium): the page, Gradio's
# frontend build, fonts, theme and icon, plus the startup call `launch` makes to its own server.
ANONYMOUS_GET_PATHS = ("/", "/favicon.ico", "/theme.css", "/gradio_api/startup-events")
ANONYMOUS_GET_PREFIXES = ("/assets/", "/static/")
# What event_fn answers for an fn_index that names no event of the app (refused, whoever asks).
UNKNOWN_EVENT = object()
# Routes that run an event: the queue (`queue/join`, `call/…`) and the direct, non-queued `run/…` and `api/…`.
EVENT_ROUTE = re.compile(r"^(?:/gradio_api)?/(?:queue/join/?$|(run|api|call(?:/v2)?)/([^/]+)/?$)")


class LoginThrottle:
    """Failed logins per client: FREE_LOGIN_FAILURES free, then an exponential wait before the next try.

    An attempt counts as failed when it is admitted (and is forgiven when it succeeds), so parallel attempts
    cannot all slip in before the first answer comes back.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._clients: OrderedDict[str, tuple[int, float]] = OrderedDict()  # client -> (failures, last attempt)

    def wait_s(self, client: str) -> float:
        """Seconds `client` must wait before its next attempt (0: it may try now)."""
        now = self.clock()
        failures, last = self._clients.get(client, (0, now))
        if now - last > FORGET_AFTER_S:
            self._clients.pop(client, None)
            return 0.0
        if failures < FREE_LOGIN_FAILURES:
            return 0.0
        lockout = min(MAX_LOCKOUT_S, FIRST_LOCKOUT_S * 2 ** (failures - FREE_LOGIN_FAILURES))
        return max(0.0, last + lockout - now)

    def admit(self, client: str) -> float:
        """0 and the attempt is counted as a failure until `succeeded`; else the seconds left to wait."""
        wait = self.wait_s(client)
        if wait > 0:
            return wait
        failures, _ = self._clients.pop(client, (0, 0.0))
        self._clients[client] = (failures + 1, self.clock())
        while len(self._clients) > MAX_TRACKED_CLIENTS:
            self._clients.popitem(last=False)
        return 0.0

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def __len__(self) -> int:
        return len(self._clients)


def anonymous_allowed(method: str, path: str) -> bool:
    """What a client without a login may fetch when a login is required: the login page and its assets."""
    if method == "POST":
        return path in LOGIN_PATHS
    if method not in ("GET", "HEAD"):
        return False
    return path in ANONYMOUS_GET_PATHS or path.startswith(ANONYMOUS_GET_PREFIXES)


def from_own_page(headers: Headers) -> bool:
    """True when a browser says the request comes from a page of this very origin (the app's own page).

    Browsers set Sec-Fetch-Site and Origin themselves (scripts cannot), so an API client or another site's page
    never passes; a raw HTTP client can forge them, and then reaches no more than the page itself does.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin, host = headers.get("origin"), headers.get("x-forwarded-host") or headers.get("host")
    return origin is not None and urlsplit(origin).netloc == host


def event_fn(blocks: Any, path: str, body: bytes) -> Any:
    """The event (BlockFunction) an event route would run, by the body's fn_index or the path's API name."""
    match = EVENT_ROUTE.match(path)
    if match is None:
        return None
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return None  # Gradio refuses it
    fn_index = payload.get("fn_index") if isinstance(payload, dict) else None
    if fn_index is not None:
        # Gradio's own body model turns "3", 3.0 and true into the event 3 (and 1): read it as Gradio will, and
        # an index Gradio would not read either matches no event.
        if isinstance(fn_index, bool):
            fn_index = int(fn_index)
        elif isinstance(fn_index, float) and fn_index.is_integer():
            fn_index = int(fn_index)
        elif isinstance(fn_index, str) and fn_index.strip().lstrip("+-").isdigit():
            fn_index = int(fn_index.strip())
        if isinstance(fn_index, int):
            return blocks.fns.get(fn_index, UNKNOWN_EVENT)
        return UNKNOWN_EVENT
    name = match.group(2)
    return next((fn for fn in blocks.fns.values() if name is not None and fn.api_name == name), None)


def event_refusal(fn: Any, *, own_page: bool) -> str | None:
    """Why this call may not run the event, or None. Only documented (public) events are an API; the
    app's internal events answer its own page only; an index that names no event is refused outright."""
    if fn is UNKNOWN_EVENT:
        return "No such event: fn_index must be the whole number of a documented endpoint."
    if fn is None or getattr(fn, "api_visibility", "public") == "public" or own_page:
        return None
    return "This is an internal event of the app's page, not an API endpoint: use the documented endpoints."


def logged_in(app: Any, scope: dict) -> bool:
    cookies = HTTPConnection(scope).cookies
    token = cookies.get(f"access-token-{app.cookie_id}") or cookies.get(f"access-token-unsecure-{app.cookie_id}")
    return token is not None and token in app.tokens


class Guard:
    """ASGI middleware inside Gradio's app: login lock-down and throttle, and internal events for the page only."""

    def __init__(self, app: Any, throttle: LoginThrottle) -> None:
        self.app = app
        self.throttle = throttle

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        gradio_app, path, method = scope["app"], scope["path"], scope.get("method", "GET")
        locked = getattr(gradio_app, "auth", None) is not None and gradio_app.auth_dependency is None
        if locked and not logged_in(gradio_app, scope) and not anonymous_allowed(method, path):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await JSONResponse({"detail": "Not authenticated"}, 401)(scope, receive, send)
        if locked and method == "POST" and path in LOGIN_PATHS:
            return await self._login(scope, receive, send)
        if method == "POST" and EVENT_ROUTE.match(path):
            body = await read_body(receive)
            fn = event_fn(gradio_app.get_blocks(), path, body)
            why = event_refusal(fn, own_page=from_own_page(Headers(scope=scope)))
            if why is not None:
                return await JSONResponse({"detail": why}, 403)(scope, receive, send)
            return await self.app(scope, replay(body, receive), send)
        await self.app(scope, receive, send)

    async def _login(self, scope: dict, receive: Callable, send: Callable) -> None:
        client = (scope.get("client") or ("unknown",))[0]
        wait = self.throttle.admit(client)
        if wait > 0:
            retry = math.ceil(wait)
            return await JSONResponse({"detail": f"Too many failed logins: try again in {retry} s."}, 429,
                                      headers={"Retry-After": str(retry)})(scope, receive, send)

        async def watch(message: dict) -> None:
            if message["type"] == "http.response.start" and message["status"] == 200:
                self.throttle.succeeded(client)
            await send(message)

        await self.app(scope, receive, watch)


async def read_body(receive: Callable) -> bytes:
    parts, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client left; the app sees an empty body
        parts.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(parts)


def replay(body: bytes, receive_more: Callable) -> Callable:
    """A `receive` that hands the app the body already read, then the real one's messages (the disconnect)."""
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive_more()

    return receive
