"""Agent tab (issue 17): the Screenshots and zoom handlers on tiny checkpoints, /agent_step and /agent_zoom through
gradio_client, and the live browser: a scripted model clicks a local page's button, and the page's own server
counts the clicks, so each one landed where the model said."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.errors import UserError
from qvl_core.tasks.agent import Trajectory
from qvl_core.tasks.live_browser import (
    VIEWPORTS,
    check_url,
    drive,
    host_allowed,
    key_chord,
    parse_hosts,
)
from tests.conftest import as_model_writes
from tests.test_agent import ORIGINAL, TARGET, call, click_answer, model_point
from ui.tabs.agent import AgentTab, AgentView

# The local page: a button whose click the page's server counts, a text box, a remote image, a popup link.
BUTTON = (600, 300, 200, 80)  # left, top, width, height in CSS pixels of the 1280x800 computer viewport
BUTTON_CENTRE = (BUTTON[0] + BUTTON[2] / 2, BUTTON[1] + BUTTON[3] / 2)
PAGE = f"""<!doctype html><html><body style="margin:0;background:#fff">
<button id="b" style="position:absolute;left:{BUTTON[0]}px;top:{BUTTON[1]}px;width:{BUTTON[2]}px;
height:{BUTTON[3]}px;font-size:24px" onclick="fetch('/clicked',{{method:'POST'}})">Press me</button>
<img src="http://remote.invalid/pixel.png" alt="">
<a id="away" href="http://remote.invalid/" style="position:absolute;left:20px;top:20px">away</a>
<a id="pop" href="/popup" target="_blank" style="position:absolute;left:20px;top:60px">pop</a>
</body></html>"""


class LocalSite:
    """A page on loopback that counts the POSTs its button sends."""

    def __init__(self) -> None:
        self.clicks = 0
        self.paths: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                site.paths.append(self.path)
                body = PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                site.clicks += self.path == "/clicked"
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def live_click_answer(family: str) -> str:
    """The scripted model's answer: click the button's centre, in `family`'s units for the computer viewport."""
    from qvl_core.families import family_for
    from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
    from qvl_core.tasks.agent import stated_resolution
    from qvl_core.tasks.grounding import planned_input_size

    spec = family_for(family)
    size = VIEWPORTS["computer"]
    sw, sh = stated_resolution(spec, "computer", planned_input_size(size, spec, DEFAULT_MAX_IMAGE_TOKENS)[0])
    point = [round(BUTTON_CENTRE[0] * sw / size[0]), round(BUTTON_CENTRE[1] * sh / size[1])]
    return as_model_writes(family, "Thought: press it.\nAction: Click the button.\n" + call(
        {"action": "left_click", "coordinate": point}))


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("agent-app") / "screen.png"
    img = Image.new("RGB", ORIGINAL, (235, 235, 235))
    img.paste((30, 90, 200), (650, 220, 750, 280))
    img.save(path)
    return str(path)


def _last(gen):
    return list(gen)[-1]


# ---- pure: what the live page may reach and press ----------------------------------------------------------------

@pytest.mark.parametrize("url, allowed", [
    ("http://127.0.0.1:8000/", True), ("http://localhost/x", True), ("http://[::1]:9/", True),
    ("http://127.9.9.9/", True), ("https://example.com/", False), ("http://shop.test/", True),
    ("http://evil.shop.test/", False), ("file:///etc/passwd", False), ("chrome://settings", False),
    ("data:text/html,hi", True), ("ws://127.0.0.1:1/", True), ("wss://example.com/", False),
    ("http://127.0.0.1.example.com/", False), ("javascript:alert(1)", False),
])
def test_host_allowlist(url, allowed):
    assert host_allowed(url, ("shop.test",)) is allowed


def test_urls_and_hosts_refused_by_name():
    assert check_url("127.0.0.1:8000", ()) == "http://127.0.0.1:8000"
    with pytest.raises(UserError, match="may not open 'example.com'.*--agent-browser-hosts"):
        check_url("https://example.com/", ())
    with pytest.raises(UserError, match="http\\(s\\) pages only"):
        check_url("file:///etc/passwd", ())
    with pytest.raises(UserError, match="over the limit of 2048"):
        check_url("http://127.0.0.1/" + "a" * 3000, ())
    with pytest.raises(UserError, match="URL first"):
        check_url("  ", ())
    assert parse_hosts(" Shop.Test, a.example ,") == ("shop.test", "a.example")
    with pytest.raises(UserError, match="host names"):
        parse_hosts("*.example.com")


@pytest.mark.parametrize("keys, chord", [
    (["ctrl", "a"], "Control+a"), (["Enter"], "Enter"), (["cmd", "shift", "t"], "Meta+Shift+t"), (["F5"], "F5"),
    (["page_down"], "PageDown"),
])
def test_key_chords(keys, chord):
    assert key_chord(keys) == chord


@pytest.mark.parametrize("keys", [["rm -rf /"], ["Control+Alt+Delete"], []])
def test_unknown_keys_are_refused(keys):
    with pytest.raises(UserError):
        key_chord(keys)


# ---- the tab's handlers on tiny checkpoints ----------------------------------------------------------------------

def test_screenshot_steps_continue_the_task_and_a_new_task_starts_over(make_session, screenshot):
    tab = AgentTab(make_session("qwen3_vl", click_answer("qwen3_vl")))
    first = _last(tab.step(AgentView(), screenshot, "Press the blue button", "computer", 1280, *[None] * 7))
    drawn, summary, step_json, rows, gallery, download, raw, _reasoning, view = first
    assert step_json["action"] == "left_click" and step_json["coordinate"] == pytest.approx(list(TARGET), abs=1.0)
    assert step_json["model_coordinate"] == [700, 500] and step_json["step"] == 1
    assert drawn.size == ORIGINAL and "Step 1" in summary and "(700, 500) on its 1000×1000 screen" in summary
    x, y = step_json["coordinate"]
    assert rows[0][:5] == [1, "left_click", f"({x:g}, {y:g})", "", "700, 500"]
    assert len(gallery) == 1 and "<tool_call>" in raw
    assert json.loads(open(download).read())["steps"][0]["result"]["action"] == "left_click"
    second = _last(tab.step(view, screenshot, "Press the blue button", "computer", 1280, *[None] * 7))
    assert second[2]["step"] == 2 and len(second[3]) == 2 and len(second[-1].trajectory.steps) == 2
    # The history went back to the model (Qwen3-VL's form: what it said it did).
    other = _last(tab.step(second[-1], screenshot, "Another task", "computer", 1280, *[None] * 7))
    assert other[2]["step"] == 1 and len(other[-1].trajectory.steps) == 1


def test_a_finished_task_refuses_more_steps_and_bad_inputs_name_the_problem(make_session, screenshot, tmp_path):
    done = as_model_writes("qwen3_vl", call({"action": "terminate", "status": "success"}))
    tab = AgentTab(make_session("qwen3_vl", done))
    out = _last(tab.step(AgentView(), screenshot, "Finish", "computer", 1280, *[None] * 7))
    assert out[2]["action"] == "terminate" and "task is finished" in out[1]
    with pytest.raises(UserError, match="task has ended"):
        _last(tab.step(out[-1], screenshot, "Finish", "computer", 1280, *[None] * 7))
    with pytest.raises(UserError, match="screenshot first"):
        _last(tab.step(AgentView(), None, "Finish", "computer", 1280, *[None] * 7))
    with pytest.raises(UserError, match="task is empty"):
        _last(tab.step(AgentView(), screenshot, "  ", "computer", 1280, *[None] * 7))
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        _last(tab.step(AgentView(), str(fake), "Finish", "computer", 1280, *[None] * 7))


def test_no_tool_call_is_a_problem_shown_not_an_error(make_session, screenshot):
    tab = AgentTab(make_session("qwen2_5_vl", "I would click the button."))
    out = _last(tab.step(AgentView(), screenshot, "Press it", "phone", 1280, *[None] * 7))
    assert out[2]["action"] is None and out[2]["problem"]["kind"] == "no_call"
    assert "no action" in out[1] and out[3][0][1] == "(none)"


def test_model_text_in_the_summary_is_shown_as_text(make_session, screenshot):
    hostile = as_model_writes("qwen3_vl", "Thought: <img src=http://remote.invalid/x.png> ![k](http://r.invalid/)\n"
                              + call({"action": "type", "text": "<script>alert(1)</script>"}))
    tab = AgentTab(make_session("qwen3_vl", hostile))
    summary = _last(tab.step(AgentView(), screenshot, "Type", "computer", 1280, *[None] * 7))[1]
    from markdown_it import MarkdownIt

    rendered = MarkdownIt("commonmark").render(summary)  # what a CommonMark renderer makes of it
    assert "<img" not in rendered and "<script" not in rendered and "href=" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered  # the typed text, shown as written


def test_zoom_handler_shows_boxes_crops_and_answer(make_session, screenshot):
    box = [200, 200, 400, 600]  # 0-1000 over the 1000x500 original: (200, 100)-(400, 300) px
    tab = AgentTab(make_session("qwen3_vl", call({"bbox_2d": box, "label": "sign", "img_idx": 0},
                                                 "image_zoom_in_tool")))
    boxes, crops, answer, download, _raw, _reasoning = _last(tab.zoom(screenshot, "What is on the sign?", 1, 1280,
                                                                    *[None] * 7))
    assert boxes.size == ORIGINAL and len(crops) == 1
    crop, caption = crops[0]
    assert crop.size == (200, 200) and caption.startswith("zoom 1: sign (200, 100)")
    assert "limit" in answer and json.loads(open(download).read())["zooms"][0]["box"] == [200, 100, 400, 300]


# ---- the API ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def agent_api(make_session, launch_app):
    demo = launch_app(make_session("qwen3_vl", click_answer("qwen3_vl")))
    client = Client(demo.local_url, verbose=False)
    yield client
    client.close()


def test_agent_step_api_returns_original_pixels_and_continues_from_history(agent_api, screenshot):
    drawn, step = agent_api.predict(handle_file(screenshot), "Press the blue button", "computer", "", 1024, False,
                                    api_name="/agent_step")
    assert step["action"] == "left_click" and step["coordinate"] == pytest.approx(list(TARGET), abs=1.0)
    assert step["model_coordinate"] == model_point("qwen3_vl", "computer", TARGET)
    assert step["image_size"] == list(ORIGINAL) and step["input_size"] and "<tool_call>" in step["raw"]
    assert Image.open(drawn).size == ORIGINAL
    _, again = agent_api.predict(handle_file(screenshot), "Press the blue button", "computer", json.dumps(step),
                                 1024, False, api_name="/agent_step")
    assert len(again["trajectory"]["steps"]) == 2


@pytest.mark.parametrize("args, message", [
    (("", "computer", ""), "task is empty"),
    (("Press", "tablet", ""), "tablet is not in the list of choices"),
    (("Press", "computer", "{not json"), "history is not JSON"),
    (("Press", "computer", "[1, 2]"), "not a trajectory"),
    (("Press", "computer", "[" * 100_000), "nests too deep"),  # was "Something went wrong (RecursionError)"
    (("Press", "computer", "x" * 2_000_001), "over the limit of 2000000"),
])
def test_agent_step_api_refuses_bad_inputs_by_name(agent_api, screenshot, args, message):
    with pytest.raises(Exception, match=message):
        agent_api.predict(handle_file(screenshot), *args, 1024, False, api_name="/agent_step")


def test_agent_step_api_refuses_a_file_that_is_not_an_image(agent_api, tmp_path):
    fake = tmp_path / "screen.png"
    fake.write_bytes(b"%PDF-1.4 not a png")
    with pytest.raises(Exception, match="not an image"):
        agent_api.predict(handle_file(str(fake)), "Press", "computer", "", 1024, False, api_name="/agent_step")


# ---- the live browser ------------------------------------------------------------------------------------------

@pytest.fixture
def site():
    s = LocalSite()
    yield s
    s.close()


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"])
def test_live_loop_clicks_where_the_model_said(make_session, site, tmp_path, live_browser, family):
    session = make_session(family, live_click_answer(family))
    browser = live_browser
    steps = list(drive(session, browser, "owner-1", site.url, "Press the button three times", folder=tmp_path,
                       max_steps=3))
    assert site.clicks == 3  # the page's server counted one POST per click on the button
    final = steps[-1]
    assert final.phase == "done" and "step limit" in final.note and len(final.steps) == 3
    for step in final.steps:
        assert step.result.action.coordinate == pytest.approx(BUTTON_CENTRE, abs=2.0)
        assert step.outcome.problem is None and step.outcome.done.startswith("left_click at (700, 340)")
    with Image.open(final.steps[0].screenshot) as shot:
        assert shot.size == VIEWPORTS["computer"]  # CSS pixels: the model's coordinates are the mouse's
    # "acting" (before) and "acted" (after) for every step, in order.
    phases = [p.phase for p in steps if p.phase in ("acting", "acted")]
    assert phases == ["acting", "acted"] * 3
    assert Trajectory.from_json(final.trajectory.to_json()).steps[2].result["action"] == "left_click"


def test_live_page_stays_on_allowed_hosts_and_closes_popups(site, tmp_path, live_browser):
    from qvl_core.parse.toolcall import AgentAction

    browser = live_browser
    browser.open("o", site.url)
    assert "http://remote.invalid/pixel.png" in browser.refused("o")  # the page's remote image
    with pytest.raises(UserError, match="may not open 'remote.invalid'"):
        browser.open("o", "http://remote.invalid/")
    # A click on a link to another host goes nowhere; a link opening a new tab has the tab closed.
    browser.perform("o", AgentAction("computer_use", "left_click", {}, coordinate=(30.0, 28.0)))
    deadline = time.monotonic() + 30  # the navigation starts a moment after the click, on a busy machine later
    while "http://remote.invalid/" not in browser.refused("o") and time.monotonic() < deadline:
        browser.perform("o", AgentAction("computer_use", "wait", {}, time=0.2))
    assert "http://remote.invalid/" in browser.refused("o")
    while not browser.url("o").startswith(site.url) and time.monotonic() < deadline:
        browser.perform("o", AgentAction("computer_use", "wait", {}, time=0.2))
    assert browser.url("o").startswith(site.url)
    popup = browser.perform("o", AgentAction("computer_use", "left_click", {}, coordinate=(25.0, 68.0)))
    assert popup.problem is None
    assert browser._call(lambda: len(browser._pages["o"].context.pages)) == 1
    refused = browser.perform("o", AgentAction("computer_use", "key", {}, keys=("rm -rf",)))
    assert refused.problem and "not one the live page can press" in refused.problem
    browser.close_page("o")
    assert not browser.has_page("o")
    with pytest.raises(UserError, match="No live page"):
        browser.screenshot("o", tmp_path / "x.png")
