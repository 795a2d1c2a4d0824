"""Thinking in the UI (issue 13): Chat's collapsible thought above the answer, the parsed tabs' reasoning apart,
the switch's defaults, /chat and /chat_reasoning, and tiny Qwen3.5 dense and MoE answering through the handlers
and the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

import ui.tabs.documents
from qvl_core.engine.messages import build_messages
from qvl_core.engine.thinking import ThinkingSupport
from qvl_core.tasks.conversation import Conversation
from qvl_core.tasks.documents import MODES, JobOptions, run_job
from tests.browser import save_screenshot, send_chat
from ui.common import PARSED_TASK_THINKING, thinking_info
from ui.tabs.chat import THOUGHT_TITLE, ChatTab, render
from ui.tabs.documents import DocumentsTab
from ui.tabs.grounding import GroundingTab

FAMILIES = ("qwen3_5", "qwen3_5_moe")
CLOCK = str(Path(__file__).resolve().parent.parent / "assets" / "clock.mp4")  # the ball turns blue at 4 s
REASONING = "The user asks which side. Maybe **left**."
CHAT_SCRIPT = f"{REASONING}\n</think>\n\nLeft."
# Reasoning with a draft box (0-1000 over the image), then the final box.
DRAFT = 'A draft: {"bbox_2d": [0, 0, 100, 100], "label": "draft"}. Hmm.\n</think>\n\n'
FINAL = '```json\n[{"bbox_2d": [250, 250, 500, 750], "label": "red box"}]\n```'
# A page: reasoning with a draft heading (0-1000 over the page), then the final HTML.
DOC_DRAFT = 'Reasoning with a draft <h2 data-bbox="0 0 100 100">Draft title</h2>. Hmm.\n</think>\n\n'
DOC_FINAL = '```html\n<h1 data-bbox="250 250 500 750">Final title</h1>\n```'
DOC_SAMPLING = [256, 0.0, 1.0, 0, 1.0, -1, None]  # max new tokens, temperature, top p, top k, penalty, seed, presence
# system, 7 sampling values, max image tokens, fps, max frames, label media
SETTINGS = ["", 200, None, None, None, None, -1, None, 1280, 2.0, 64, False]


def _answer(tab: ChatTab, conv: Conversation, *extra) -> list[tuple[Conversation, list[dict]]]:
    return list(tab.answer(conv, *SETTINGS, *extra))


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("think") / "photo.png"
    Image.new("RGB", (640, 480), (240, 240, 240)).save(path)
    return str(path)


def test_chat_handler_streams_a_thought_then_the_answer_and_history_keeps_reasoning_apart(make_session):
    """Bugs guarded: reasoning shown as (or mixed into) the answer; the displayed thought (its Markdown, title,
    duration) going back into what the model sees instead of the turn's reasoning_content."""
    tab = ChatTab(make_session("qwen3_5", CHAT_SCRIPT))
    conv, _, _ = tab.add_message({"text": "Which side?", "files": []}, Conversation())
    steps = _answer(tab, conv)
    conv, shown = steps[-1]
    thought, answer = shown[1], shown[2]
    assert len(shown) == 3 and thought["metadata"]["title"] == THOUGHT_TITLE
    assert thought["metadata"]["status"] == "done" and thought["metadata"]["duration"] >= 0
    assert "<strong>left</strong>" in thought["content"] or "**left**" in thought["content"]
    assert answer["content"].startswith("Left.") and "metadata" not in answer
    assert "of them reasoning" in answer["content"]  # the stats footer counts the reasoning tokens
    # While reasoning streamed, the thought was open (pending) and no answer bubble stood below it yet.
    first = steps[0][1]
    assert first[-1].get("metadata", {}).get("status") == "pending" and len(first) == 2
    # The model's history: the answer as text, the reasoning as reasoning_content, no display.
    assert (conv.turns[-1].text, conv.turns[-1].reasoning) == ("Left.", REASONING)
    messages = build_messages(conv.send("And now?").turns).messages
    assert messages[1]["content"] == [{"type": "text", "text": "Left."}]
    assert messages[1]["reasoning_content"] == REASONING
    # Retry and undo keep the thought with its turn; edit maps the displayed index past the thought.
    assert render(tab.retry(conv)[0]) == shown[:1]
    edited = tab.edit(conv.send("Why?").with_answer("Because.", reasoning="r"),
                      type("E", (), {"index": 3, "value": "How?"})())
    assert edited.turns[-1].text == "How?" and edited.turns[1].reasoning == REASONING


def test_chat_switch_off_sends_thinking_off(recording_backend):
    """Bug guarded: the Thinking switch not reaching the request (the model thought anyway)."""
    backend = recording_backend("qwen3_5", "Plain.")
    tab = ChatTab(backend)
    conv, _, _ = tab.add_message({"text": "Hi", "files": []}, Conversation())
    _answer(tab, conv, False, 512)
    assert backend.records[-1]["prompt"].rstrip().endswith("</think>")  # the template closed an empty block


def test_thinking_info_says_why_the_switch_is_fixed():
    assert "does not think" in thinking_info(ThinkingSupport())
    assert "always thinks" in thinking_info(ThinkingSupport(can_think=True, default_on=True))
    assert "Off by default" in thinking_info(ThinkingSupport(True, True, True), parsed=True)
    assert PARSED_TASK_THINKING is False


@pytest.mark.parametrize("family", FAMILIES)
def test_grounding_handler_draws_only_the_final_box(make_session, photo, family):
    """The issue's acceptance check through the Grounding tab handler: reasoning with a draft box, `</think>`,
    then the final box -> only the final box, at the right original pixels; the reasoning shown apart."""
    tab = GroundingTab(make_session(family, DRAFT + FINAL))
    *_, last = tab.run(photo, "Custom", "", "Find the red box.", 1280, 2048, None, None, None, None, -1,
                       thinking=True)
    *_, rows, _summary, _json, raw, _prompt, reasoning = last
    assert rows == [["red box", "", 160.0, 120.0, 320.0, 360.0, None, None]]
    assert raw == FINAL and reasoning.startswith("A draft:") and "draft" not in raw


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_qwen3_5_answers_chat_grounding_and_video_through_the_api(make_session, launch_app, photo, family):
    """/chat returns the answer alone and /chat_reasoning its reasoning; /ground and /video_qa answer with
    thinking off (their default), as such a model writes then: the answer only."""
    chat = launch_app(make_session(family, CHAT_SCRIPT))
    client = Client(chat.local_url, verbose=False)
    sampling = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
    assert client.predict(message={"text": "Which side?", "files": []}, **sampling, api_name="/chat") == "Left."
    assert client.predict(api_name="/chat_reasoning") == REASONING
    ground = launch_app(make_session(family, FINAL))
    _drawn, detections = Client(ground.local_url, verbose=False).predict(
        image=handle_file(photo), text="red box", api_name="/ground")
    assert [d["bbox_2d"] for d in detections] == [[160.0, 120.0, 320.0, 360.0]]
    video = launch_app(make_session(family, "It turns blue at 4.0 seconds."))
    answer, spans = Client(video.local_url, verbose=False).predict(
        video=handle_file(CLOCK), question="When?", api_name="/video_qa")
    assert answer == "It turns blue at 4.0 seconds." and spans[0]["start"] == pytest.approx(4.0)


def test_browser_shows_the_collapsible_thought_above_the_answer(make_session, launch_app, page):
    """The thought is a collapsed "Thinking" block above the answer once it is done; a click opens and closes
    it. Desktop and a 390 px phone."""
    url = launch_app(make_session("qwen3_5", CHAT_SCRIPT)).local_url
    for width, name in ((1280, "thinking-desktop"), (390, "thinking-phone")):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        send_chat(page, "Which side?", [])
        page.wait_for_selector('[data-testid="bot"] >> text=tokens', timeout=120_000)
        bot_text = page.locator('[data-testid="bot"]').all_inner_texts()
        assert any(THOUGHT_TITLE in t for t in bot_text)
        title = page.get_by_text(THOUGHT_TITLE, exact=False).first
        answer_box = page.get_by_text("Left.", exact=True).first.bounding_box()
        assert title.bounding_box()["y"] < answer_box["y"]  # above the answer
        thought = page.locator('[data-testid="bot"]').filter(has_text=THOUGHT_TITLE).first
        assert "The user asks" not in thought.inner_text()
        title.click()
        page.wait_for_function("(el) => el.innerText.includes('The user asks')", arg=thought.element_handle())
        page.wait_for_timeout(600)  # the opening animation
        save_screenshot(page, name)
        title.click()
        page.wait_for_function("(el) => !el.innerText.includes('The user asks')", arg=thought.element_handle())



@pytest.mark.parametrize("family", FAMILIES)
def test_documents_task_and_handler_lay_out_only_the_final_answer(make_session, photo, family, monkeypatch):
    """Bug guarded: the Documents tab had no Thinking switch, and its job dropped the page's reasoning; a draft
    block inside the reasoning must never become layout, HTML or Markdown. Task and tab handler."""
    session = make_session(family, DOC_DRAFT + DOC_FINAL)
    *_, last = run_job(session, [photo], JobOptions(thinking=True))
    (page,) = last.done
    assert page.raw == DOC_FINAL and page.reasoning.startswith("Reasoning with a draft")
    assert [(b.text, b.box) for b in page.blocks] == [("Final title", (160.0, 120.0, 320.0, 360.0))]
    assert "Draft" not in page.markdown and page.to_json()["reasoning"] == page.reasoning
    monkeypatch.setattr(ui.tabs.documents, "throttle", lambda steps, **_: steps)  # every step shown: no clock
    outputs = list(DocumentsTab(session).run_page(True, 2048, [photo], MODES[0], "", "", 150, 1280, *DOC_SAMPLING,
                                                  progress=lambda *a, **k: None))
    state, _pick, _preview, _layout, raw_html, markdown, _rows, _note, reasoning, *_ = outputs[-1]
    assert reasoning == page.reasoning and "Draft" not in raw_html + markdown and "Final title" in raw_html
    assert state.done[0].reasoning == page.reasoning
    # While the page streamed, the reasoning box showed its reasoning so far (the view before the live text).
    streamed = [(o[8], o[9]) for o in outputs[:-1]]
    assert any(r.startswith("Reasoning with a draft <h2") and live == "" for r, live in streamed), streamed


@pytest.mark.parametrize("family", FAMILIES)
def test_parse_document_api_takes_thinking_last(make_session, launch_app, photo, family):
    """/parse_document with thinking on: the HTML and layout come from the answer alone, the page's reasoning is in
    its layout entry; `thinking` comes last, so the positional call of before still works (thinking off)."""
    app = launch_app(make_session(family, DOC_DRAFT + DOC_FINAL))
    client = Client(app.local_url, verbose=False)
    html, markdown, layout = client.predict(file=handle_file(photo), mode=MODES[0], pages="all", dpi=150,
                                            fields="", thinking=True, api_name="/parse_document")
    assert "Final title" in html and "Draft" not in html + markdown
    assert [b["text"] for b in layout[0]["blocks"]] == ["Final title"]
    assert layout[0]["reasoning"].startswith("Reasoning with a draft")
    plain = launch_app(make_session(family, DOC_FINAL))
    html, _markdown, layout = Client(plain.local_url, verbose=False).predict(
        handle_file(photo), MODES[0], "all", 150, "", api_name="/parse_document")
    assert "Final title" in html and "reasoning" not in layout[0]


def test_qvl_parse_takes_thinking_off_by_default(make_session, photo, tmp_path, monkeypatch):
    """`qvl parse` had no way to turn thinking on (JobOptions.thinking was unreachable from the command line);
    with --thinking each page's reasoning goes into the JSON and its layout comes from the answer alone."""
    import qvl_core.cli as cli

    assert cli.build_parser().parse_args(["parse", photo, "--out", "o"]).thinking is False
    monkeypatch.setattr(cli, "_open", lambda _ns: make_session("qwen3_5", DOC_DRAFT + DOC_FINAL))
    assert cli.main(["parse", photo, "--out", str(tmp_path), "--format", "json", "--thinking", "--quiet"]) == 0
    (page,) = json.loads((tmp_path / "photo.json").read_text())
    assert [b["text"] for b in page["blocks"]] == ["Final title"] and page["reasoning"].startswith("Reasoning")


VIDEO_DRAFT = "A draft: maybe at 1.0 seconds. Hmm.\n</think>\n\n"
VIDEO_FINAL = "It turns blue at 4.0 seconds."


@pytest.mark.parametrize("family", FAMILIES)
def test_video_handler_with_thinking_on_times_only_the_answer(make_session, family):
    """Video QA with its switch on: the reasoning (with a draft time) is shown apart and never becomes a chip or
    a span; the answer's time does."""
    from ui.tabs.video import VideoTab

    tab = VideoTab(make_session(family, VIDEO_DRAFT + VIDEO_FINAL))
    *_, last = tab.run(CLOCK, "Custom", "", "When does it turn blue?", 2.0, 16, 256, 16384, None, None,
                       64, 0.0, 1.0, 0, 1.0, -1, None, thinking=True)
    html, _frames, _timeline, rows, _json, _summary, raw, _prompt, reasoning = last
    assert raw == VIDEO_FINAL and reasoning.startswith("A draft: maybe at 1.0 seconds")
    assert [r[0] for r in rows] == ["00:04.0"] and "1.0 seconds" not in html


def _switches(tab) -> list:
    import gradio as gr

    with gr.Blocks() as blocks:
        tab.render()
    return [b for b in blocks.blocks.values() if isinstance(b, gr.Checkbox) and b.label == "Thinking"]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_tab_renders_its_thinking_switch_at_its_default(make_session, family):
    """Chat's switch starts at the model's default (on for these checkpoints); the parsed tabs' at
    PARSED_TASK_THINKING (off), with the reason in the info line."""
    from ui.tabs.agent import AgentTab
    from ui.tabs.video import VideoTab

    session = make_session(family)
    assert session.status().thinking.default_on
    (chat,) = _switches(ChatTab(session))
    assert chat.value is True and chat.interactive is not False
    for tab in (GroundingTab(session), DocumentsTab(session), VideoTab(session), AgentTab(session)):
        switches = _switches(tab)
        assert switches and all(s.value is PARSED_TASK_THINKING for s in switches), type(tab).__name__
        assert all("Off by default here" in s.info for s in switches)


def test_cli_parsed_tasks_think_only_when_asked(ckpt_dir, capsys):
    """Bug guarded: qvl ground and qvl video thought by default (the model's), unlike their tabs and qvl parse,
    and threw the reasoning away. Now off by default; with --thinking the reasoning goes to stderr."""
    from qvl_core.cli import build_parser, main

    for argv in (["ground", "x.png", "box"], ["video", "v.mp4", "When?"], ["agent", "s.png", "Press"],
                 ["parse", "d.pdf", "--out", "o"]):
        assert build_parser().parse_args(argv).thinking is PARSED_TASK_THINKING, argv[0]
    model = str(ckpt_dir("qwen3_5", VIDEO_DRAFT + VIDEO_FINAL))
    assert main(["video", CLOCK, "When?", "--model", model, "--device", "cpu", "--max-frames", "8",
                 "--thinking"]) == 0
    out, err = capsys.readouterr()
    assert out == VIDEO_FINAL + "\n" and "A draft: maybe at 1.0 seconds" in err and "spans: 00:04.0" in err
