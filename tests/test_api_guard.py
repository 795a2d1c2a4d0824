"""Who may call what, attacked by raw HTTP: only the documented endpoints, only through the queue, and nothing but
the login page for a client without a login (failed logins throttled)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from starlette.datastructures import Headers

from tests.conftest import free_port
from ui import guard
from ui.common import GPU_QUEUE
from ui.config import ServeConfig
from ui.guard import LoginThrottle, anonymous_allowed, event_refusal, from_own_page
from ui.launch import build_app
from ui.shell import LAUNCH_KWARGS

DOCUMENTED = {"agent_step", "agent_zoom", "chat", "chat_reasoning", "chat_reset", "ground", "parse_document",
              "video_qa"}  # README's API section
HOLD = "hold-the-gpu"
USER = ("ann", "s3cret")


# ---- pure: the throttle and the access decisions -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failed_logins_back_off_exponentially_and_the_right_password_gets_in_later():
    """Bug: no rate limit on /login (30 wrong passwords in 0.06 s, then the right one accepted)."""
    clock = Clock()
    throttle = LoginThrottle(clock)
    for _ in range(guard.FREE_LOGIN_FAILURES):
        assert throttle.admit("1.2.3.4") == 0
    assert throttle.admit("1.2.3.4") == guard.FIRST_LOCKOUT_S  # refused, and not counted again
    assert throttle.admit("5.6.7.8") == 0  # another client is not held up
    clock.now += guard.FIRST_LOCKOUT_S
    assert throttle.admit("1.2.3.4") == 0  # one more try, which failed: the next wait doubles
    assert throttle.admit("1.2.3.4") == 2 * guard.FIRST_LOCKOUT_S
    for _ in range(30):  # keep failing: the wait stops growing at the cap
        clock.now += guard.MAX_LOCKOUT_S
        assert throttle.admit("1.2.3.4") == 0
    assert throttle.wait_s("1.2.3.4") == guard.MAX_LOCKOUT_S
    clock.now += guard.MAX_LOCKOUT_S
    assert throttle.admit("1.2.3.4") == 0
    throttle.succeeded("1.2.3.4")  # a success forgives everything
    assert throttle.wait_s("1.2.3.4") == 0 and len(throttle) == 1  # only 5.6.7.8 left
    clock.now += guard.FORGET_AFTER_S + 1
    assert throttle.wait_s("5.6.7.8") == 0 and len(throttle) == 0


def test_the_throttle_table_is_bounded():
    """Bug guard: one failure from each of many addresses must not grow the per-client table without end."""
    throttle = LoginThrottle(Clock())
    for i in range(guard.MAX_TRACKED_CLIENTS + 50):
        throttle.admit(f"client-{i}")
    assert len(throttle) == guard.MAX_TRACKED_CLIENTS
    assert throttle.wait_s("client-0") == 0  # the oldest went first


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("GET", "/", True), ("HEAD", "/", True), ("GET", "/assets/index-x.js", True), ("GET", "/theme.css", True),
    ("POST", "/login", True), ("GET", "/openapi.json", False), ("GET", "/gradio_api/heartbeat/abc", False),
    ("POST", "/gradio_api/cancel", False), ("POST", "/gradio_api/reset", False), ("GET", "/gradio_api/app_id", False),
    ("GET", "/config", False), ("GET", "/gradio_api/info", False), ("POST", "/gradio_api/queue/join", False),
    ("POST", "/gradio_api/upload", False), ("GET", "/gradio_api/file=/etc/passwd", False), ("POST", "/", False),
])
def test_anonymous_clients_reach_only_the_login_page(method, path, allowed):
    """Bug: /openapi.json, heartbeat, cancel, reset and app_id answered without a login."""
    assert anonymous_allowed(method, path) is allowed


@pytest.mark.parametrize(("headers", "own"), [
    ({"sec-fetch-site": "same-origin", "origin": "http://h:1"}, True),
    ({"sec-fetch-site": "cross-site", "origin": "http://evil"}, False),
    ({"sec-fetch-site": "same-site", "origin": "http://a.h:1"}, False),
    ({"origin": "http://h:1", "host": "h:1"}, True),  # a browser without Sec-Fetch-Site
    ({"origin": "http://evil", "host": "h:1"}, False),
    ({"host": "h:1"}, False),  # gradio_client, curl
])
def test_only_the_apps_own_page_counts_as_the_page(headers, own):
    assert from_own_page(Headers(headers)) is own


def test_internal_events_are_refused_to_anyone_but_the_page():
    """Bug: internal tab handlers (Grounding's `run`) were callable through /gradio_api/queue/join."""

    class Fn:
        def __init__(self, visibility):
            self.api_visibility = visibility

    assert event_refusal(Fn("public"), own_page=False) is None
    assert event_refusal(Fn("private"), own_page=True) is None
    assert "documented endpoints" in event_refusal(Fn("private"), own_page=False)
    assert "documented endpoints" in event_refusal(Fn("undocumented"), own_page=False)


# ---- the launched app, by raw HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def start(recording_backend, launch_app):  # launch_app: the app tier (this launches build_app, as qvl serve does)
    demos = []

    def start_app(answer: str = "fine", **launch_extra):
        backend = recording_backend("qwen2_5_vl", answer)
        config = ServeConfig(load=backend.inner.options, queue_size=2, concurrency=1)
        demo = build_app(config, backend)
        demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **LAUNCH_KWARGS, **launch_extra)
        demos.append(demo)
        return demo, backend

    yield start_app
    for demo in demos:
        demo.close()


@pytest.fixture(scope="module")
def app(start):
    return start()


def _fn(demo, api_name: str):
    return next((i, fn) for i, fn in demo.fns.items() if fn.api_name == api_name)


def _chat_body(demo, text: str) -> dict:
    index, fn = _fn(demo, "chat")
    data = [None if isinstance(c, gr.State) else {"text": text, "files": []} if c.label == "message" else c.value
            for c in fn.inputs]
    return {"data": data, "fn_index": index, "session_hash": uuid.uuid4().hex[:11], "event_data": None,
            "trigger_id": None}


def _parallel(calls) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def test_run_predict_refuses_every_gpu_event(app):
    """Bug: /gradio_api/run/predict ran the chat handler outside the GPU queue (8 accepted with --queue-size 2)."""
    demo, backend = app
    base, calls = demo.local_url.rstrip("/"), len(backend.records)
    gpu_events = [i for i, fn in demo.fns.items() if fn.concurrency_id == GPU_QUEUE]
    assert len(gpu_events) >= 8  # each tab's button and API endpoint, the chat's answer events
    for index in gpu_events:
        for headers in ({}, {"sec-fetch-site": "same-origin", "origin": base}):  # an API client; the page's look
            body = {**_chat_body(demo, "x"), "fn_index": index}
            r = httpx.post(base + "/gradio_api/run/predict", json=body, headers=headers, timeout=30)
            assert r.status_code in (403, 404), (demo.fns[index].api_name, r.status_code, r.text)
    for name in ("chat", "ground", "parse_document", "video_qa"):
        r = httpx.post(f"{base}/gradio_api/run/{name}", json={"data": []}, timeout=30)
        assert r.status_code == 404 and "join the queue" in r.text
    assert len(backend.records) == calls


def test_internal_events_are_refused_through_the_queue(app):
    """Bug: internal tab handlers (e.g. Grounding's `run`) were callable through /gradio_api/queue/join and
    /gradio_api/call/<name>; gradio_client reached them by fn_index."""
    demo, backend = app
    base, calls = demo.local_url.rstrip("/"), len(backend.records)
    internal = {i: fn for i, fn in demo.fns.items() if fn.fn is not None and fn.api_name not in DOCUMENTED}
    assert any(fn.api_name == "run_page" for fn in internal.values())
    assert all(fn.api_visibility != "public" for fn in internal.values())  # private, or gr.Examples' undocumented
    for index, fn in internal.items():
        body = {**_chat_body(demo, "x"), "fn_index": index}
        for headers in ({}, {"origin": "http://evil.example", "sec-fetch-site": "cross-site"}):
            r = httpx.post(base + "/gradio_api/queue/join", json=body, headers=headers, timeout=30)
            assert r.status_code == 403 and "documented endpoints" in r.text, (fn.api_name, r.text)
        r = httpx.post(f"{base}/gradio_api/call/{fn.api_name}", json={"data": body["data"]}, timeout=30)
        assert r.status_code == 403, (fn.api_name, r.status_code)
    run_index, _ = _fn(demo, "run_page")
    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises its own error types
        Client(demo.local_url, verbose=False).predict(None, "cat", fn_index=run_index)
    assert len(backend.records) == calls


def test_an_fn_index_written_another_way_is_read_as_gradio_reads_it(app):
    """Bug: an fn_index sent as "12", 12.0 or true was no int to the guard, which then let it through, and
    Gradio's body model turned it into the internal event 12 (or 1). Every form Gradio would read is checked as
    that event; an index that names no event is refused."""
    demo, backend = app
    base, calls = demo.local_url.rstrip("/"), len(backend.records)
    run_index, _ = _fn(demo, "run_page")
    first_internal = next(i for i, fn in sorted(demo.fns.items()) if fn.fn is not None and fn.api_name not in
                          DOCUMENTED)
    forms = [str(run_index), f" {run_index}", float(run_index), f"+{run_index}"]
    if first_internal == 1:
        forms.append(True)
    for form in [*forms, "twelve", [run_index], {"i": run_index}, 10**9]:
        body = {**_chat_body(demo, "x"), "fn_index": form}
        for route in ("/gradio_api/queue/join", "/gradio_api/run/predict"):
            r = httpx.post(base + route, json=body, timeout=30)
            assert r.status_code == 403, (form, route, r.status_code, r.text)
    assert len(backend.records) == calls


def test_the_page_still_runs_its_internal_events(app):
    """The guard must not break the app's own page: a same-origin queue/join of an internal event is accepted."""
    demo, _ = app
    base = demo.local_url.rstrip("/")
    index, _ = _fn(demo, "run_page")
    body = {**_chat_body(demo, "x"), "fn_index": index, "data": [None] * len(demo.fns[index].inputs)}
    r = httpx.post(base + "/gradio_api/queue/join", json=body, timeout=30,
                   headers={"origin": base, "sec-fetch-site": "same-origin"})
    assert r.status_code == 200 and "event_id" in r.json()


def test_documented_endpoints_work_through_the_queue(app):
    demo, _ = app
    client = Client(demo.local_url, verbose=False)
    assert client.predict(message={"text": "hi", "files": []}, api_name="/chat") == "fine"
    client.predict(api_name="/chat_reset")
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        f"/{name}" for name in DOCUMENTED}


def test_queue_size_holds_against_parallel_raw_calls(start):
    """Bug: with --queue-size 2, 8 parallel run/predict calls were all accepted. Now one runs, two wait, the
    other five joins are refused (503), and run/predict takes none."""
    demo, backend = start()
    base = demo.local_url.rstrip("/")
    arrived, release = backend.hold(HOLD)
    try:
        first = httpx.post(base + "/gradio_api/queue/join", json=_chat_body(demo, HOLD), timeout=30)
        assert first.status_code == 200
        assert arrived.wait(120)  # it holds the GPU now
        joins = _parallel([lambda: httpx.post(base + "/gradio_api/queue/join", json=_chat_body(demo, HOLD),
                                              timeout=30) for _ in range(7)])
        assert sorted(r.status_code for r in joins) == [200, 200, 503, 503, 503, 503, 503]
        direct = _parallel([lambda: httpx.post(base + "/gradio_api/run/predict", json=_chat_body(demo, HOLD),
                                               timeout=30) for _ in range(8)])
        assert {r.status_code for r in direct} == {404}
        assert len(backend.records) == 1
    finally:
        release.set()


# ---- login ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def locked(start):
    demo, _ = start(auth=USER)
    return demo


def _login(base: str, password: str, http: httpx.Client | None = None) -> httpx.Response:
    return (http or httpx).post(base + "/login", data={"username": USER[0], "password": password}, timeout=30)


def test_nothing_but_the_login_page_answers_a_stranger(locked):
    """Bug: /openapi.json, heartbeat, cancel, reset and app_id answered without a login."""
    base = locked.local_url.rstrip("/")
    home = httpx.get(base + "/", timeout=30)
    assert home.status_code == 200 and "auth_required" in home.text
    assert httpx.get(base + "/theme.css", timeout=30).status_code == 200
    probes = [("GET", "/openapi.json"), ("GET", "/gradio_api/heartbeat/abc"), ("POST", "/gradio_api/cancel"),
              ("POST", "/gradio_api/reset"), ("GET", "/gradio_api/app_id"), ("GET", "/gradio_api/info"),
              ("GET", "/config"), ("POST", "/gradio_api/queue/join"), ("POST", "/gradio_api/run/predict"),
              ("GET", "/gradio_api/queue/status"), ("POST", "/gradio_api/upload"), ("GET", "/gradio_api/token")]
    for method, path in probes:
        r = httpx.request(method, base + path, json={}, timeout=30)
        assert r.status_code == 401, (path, r.status_code, r.text[:200])
    with httpx.Client() as http:  # the same probes with the login cookie get past the guard
        guard_throttle = locked.login_throttle
        assert _login(base, USER[1], http).status_code == 200
        assert http.get(base + "/gradio_api/app_id").status_code == 200
        assert http.get(base + "/gradio_api/info").status_code == 200
        assert len(guard_throttle) == 0


def test_failed_logins_are_throttled_and_the_user_gets_in_after_the_wait(locked):
    """Bug: 30 wrong passwords in 0.06 s, then the right one accepted."""
    base = locked.local_url.rstrip("/")
    throttle = locked.login_throttle
    real_clock, offset = throttle.clock, [0.0]
    throttle.clock = lambda: real_clock() + offset[0]
    try:
        wrong = _parallel([lambda: _login(base, "guess") for _ in range(30)])
        codes = sorted(r.status_code for r in wrong)
        assert codes == [400] * guard.FREE_LOGIN_FAILURES + [429] * (30 - guard.FREE_LOGIN_FAILURES)
        blocked = _login(base, USER[1])  # even the right password waits its turn
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
        assert "try again" in blocked.json()["detail"]
        offset[0] += int(blocked.headers["Retry-After"])
        with httpx.Client() as http:
            assert _login(base, USER[1], http).status_code == 200
            assert http.get(base + "/gradio_api/app_id").status_code == 200
        assert _login(base, "guess").status_code == 400  # the success forgave the past failures
    finally:
        throttle.clock = real_clock
        throttle._clients.clear()


def test_the_login_page_still_logs_in(locked, page):
    """The lock-down must leave the login page working: log in in Chromium and reach the Chat tab."""
    page.goto(locked.local_url)
    page.fill("input[type=text]", USER[0])
    page.fill("input[type=password]", USER[1])
    page.keyboard.press("Enter")
    page.wait_for_selector("#qvl-header")
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_selector("#chat-input textarea", state="visible")
