"""Tier 3: the launched app through gradio_client, and the Chat tab's handlers on plain data."""

from __future__ import annotations

import threading
import time

import gradio as gr
import pytest
from gradio_client import Client, handle_file

from qvl_core.engine.local import ModelSession
from qvl_core.tasks.conversation import Conversation
from ui.tabs.chat import ChatSettings, ChatTab, render

SCRIPTED = "A red circle, a blue rectangle and a green triangle.\n\n$E = mc^2$"


class RecordingSession(ModelSession):
    """The real session, noting the conversation each request carried (to prove nothing crosses)."""

    def __init__(self, inner: ModelSession) -> None:
        super().__init__(inner.options, loaded=inner.loaded)
        self.seen: list[tuple[str, ...]] = []
        self.lock = threading.Lock()

    def stream(self, request):
        with self.lock:
            self.seen.append(tuple(t.text for t in request.turns))
        return super().stream(request)


@pytest.fixture(scope="module")
def app(make_session, launch_app):
    session = RecordingSession(make_session("qwen2_5_vl", SCRIPTED))
    return launch_app(session), session


@pytest.fixture(scope="module")
def random_app(make_session, launch_app):
    session = make_session("qwen2_5_vl")
    return launch_app(session), session


def test_chat_api_answers_with_an_image(app, media_dir):
    demo, _ = app
    client = Client(demo.local_url, verbose=False)
    reply = client.predict(message={"text": "What do you see?", "files": [handle_file(str(media_dir / "red.jpg"))]},
                           api_name="/chat")
    assert reply == SCRIPTED


def test_chat_api_bad_file_is_a_clear_error_and_the_app_keeps_serving(app, media_dir):
    demo, _ = app
    client = Client(demo.local_url, verbose=False)
    with pytest.raises(Exception, match="'fake.png' is not an image"):
        client.predict(message={"text": "look", "files": [handle_file(str(media_dir / "fake.png"))]},
                       api_name="/chat")
    with pytest.raises(Exception, match="temperature must be between 0.0 and 2.0"):
        client.predict(message={"text": "hi", "files": []}, temperature=5.0, api_name="/chat")
    fresh = Client(demo.local_url, verbose=False)
    assert fresh.predict(message={"text": "hello", "files": []}, api_name="/chat") == SCRIPTED


def test_two_concurrent_sessions_never_see_each_others_history(app):
    demo, session = app
    secrets = {"alpha": "PAPAYA-17", "beta": "QUOKKA-42"}
    errors: list[BaseException] = []

    def converse(name: str) -> None:
        try:
            client = Client(demo.local_url, verbose=False)
            for turn in range(3):
                reply = client.predict(message={"text": f"{name} turn {turn}: my word is {secrets[name]}",
                                                "files": []}, api_name="/chat")
                assert reply == SCRIPTED
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(n,)) for n in secrets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    mine = {n: [c for c in session.seen if any(secrets[n] in text for text in c)] for n in secrets}
    for name, convs in mine.items():
        other = next(s for n, s in secrets.items() if n != name)
        assert len(convs) == 3
        assert all(other not in text for conv in convs for text in conv), f"{name} saw the other's words"
        # Each follow-up carries that session's own earlier turns: user, answer, user, answer, user.
        assert sorted(len(c) for c in convs) == [1, 3, 5]


def test_stop_cancels_the_generation_and_frees_the_gpu(random_app):
    demo, session = random_app
    client = Client(demo.local_url, verbose=False)
    job = client.submit(message={"text": "never stop", "files": []}, max_new_tokens=30000, api_name="/chat")
    deadline = time.monotonic() + 120
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.outputs(), "no partial output streamed"
    job.cancel()
    while session._gpu_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not session._gpu_lock.locked()
    reply = Client(demo.local_url, verbose=False).predict(message={"text": "short", "files": []},
                                                          max_new_tokens=4, api_name="/chat")
    assert isinstance(reply, str)


def test_chat_reset_starts_a_new_conversation(app):
    demo, session = app
    client = Client(demo.local_url, verbose=False)
    client.predict(message={"text": "first ZEBRA", "files": []}, api_name="/chat")
    client.predict(api_name="/chat_reset")
    client.predict(message={"text": "second", "files": []}, api_name="/chat")
    assert ("second",) in session.seen


# ---- the Chat tab's handlers, on plain data ------------------------------------------------------------
def _settings_values(max_new_tokens: int = 200) -> list:
    return ["You are a helpful assistant.", max_new_tokens, 0.0, 1.0, 0, 1.05, -1, 1280, 2.0, 64, False]


def _run(gen):
    """Drain a generator handler and return what it yielded last."""
    *_, last = gen
    return last


def test_chat_handlers_send_stream_retry_undo_edit(app, media_dir):
    _, session = app
    tab = ChatTab(session)
    conv, shown, box = tab.add_message({"text": "Describe", "files": [str(media_dir / "red.jpg")]}, Conversation())
    assert shown[0]["content"][0] == {"path": str(media_dir / "red.jpg")} and not box.interactive
    conv, shown = _run(tab.answer(conv, *_settings_values()))
    # The model's raw text is kept; the stats footer is display-only.
    assert conv.turns[-1].text == SCRIPTED
    assert shown[-1]["content"].startswith(SCRIPTED) and "tokens" in shown[-1]["content"]
    assert "tokens" not in conv.turns[-1].text
    conv, shown = tab.retry(conv)
    assert conv.awaiting_answer and len(shown) == 1
    conv, shown = _run(tab.answer(conv, *_settings_values()))
    conv, shown, box = tab.undo(conv)
    assert conv.turns == () and box == {"text": "Describe", "files": [str(media_dir / "red.jpg")]}
    conv, _, _ = tab.add_message({"text": "first try", "files": []}, Conversation())
    conv, _ = _run(tab.answer(conv, *_settings_values()))
    conv, shown = tab.edit(conv, gr.EditData(None, {"index": 0, "value": "second try", "previous_value": "first try"}))
    assert [t.text for t in conv.turns] == ["second try"] and conv.awaiting_answer


def test_chat_handler_errors_are_messages(app):
    _, session = app
    tab = ChatTab(session)
    with pytest.raises(gr.Error, match="Type a message"):
        tab.add_message({"text": "  ", "files": []}, Conversation())
    conv, _, _ = tab.add_message({"text": "hi", "files": []}, Conversation())
    bad = _settings_values()
    bad[1] = 0  # max new tokens
    with pytest.raises(gr.Error, match="max_new_tokens must be between 1"):
        _run(tab.answer(conv, *bad))


def test_stop_keeps_the_partial_answer(app):
    _, session = app
    conv = Conversation().send("go")
    from ui.tabs.chat import stream_answer

    settings = ChatSettings("", (200, 0.0, 1.0, 0, 1.05, -1), 1280, 2.0, 64, False)
    steps = stream_answer(session, conv, settings)
    first_conv, pending = next(steps)
    steps.close()
    assert pending is not None and SCRIPTED.startswith(first_conv.turns[-1].text)
    assert first_conv.notes[-1] == "stopped before the end"
    assert not session._gpu_lock.locked()
    assert "stopped before the end" in render(first_conv)[-1]["content"]
