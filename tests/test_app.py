"""Tier 3: the launched app through gradio_client, and the Chat tab's handlers on plain data."""

from __future__ import annotations

import functools
import threading
import time

import gradio as gr
import gradio.routes
import pytest
from gradio_client import Client, handle_file
from gradio_client.utils import Status

import ui.tabs.chat
from qvl_core.engine.local import ModelSession
from qvl_core.tasks.conversation import Conversation
from ui.common import throttled_thinking
from ui.tabs.chat import ChatSettings, ChatTab, render

SCRIPTED = "A red circle, a blue rectangle and a green triangle.\n\n$E = mc^2$"
# About 260 tokens: far more than a Stop after the third one lets through.
LONG_ANSWER = " ".join(f"word{i}" for i in range(4000))
GATE_PASS = 3  # the Stop test holds the model's third forward pass until Gradio has received the Stop


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
def session(make_session):
    return RecordingSession(make_session("qwen2_5_vl", SCRIPTED))


@pytest.fixture(scope="module")
def app(session, launch_app):
    return launch_app(session), session


@pytest.fixture(scope="module")
def long_app(recording_backend, launch_app):
    backend = recording_backend("qwen2_5_vl", LONG_ANSWER)
    return launch_app(backend), backend


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


@pytest.mark.timeout(300)
def test_stop_cuts_a_long_answer_and_frees_the_gpu(long_app, monkeypatch):
    """Regression: on random weights this test passed when the model reached EOS before the Stop, and only
    checked that the next reply was a string. Now the answer is long and scripted, and the model is held at
    its third pass until Gradio has the Stop: the reply must be cut, and the next request must run in full."""
    demo, backend = long_app
    model = backend.inner.loaded.model
    cancel_received, passes = threading.Event(), [0]
    real_cancel_tasks = gradio.routes.cancel_tasks

    async def noting_cancel_tasks(task_ids):
        cancel_received.set()
        return await real_cancel_tasks(task_ids)

    def gated(forward):
        def gated_forward(*args, **kwargs):
            passes[0] += 1
            if passes[0] == GATE_PASS:
                assert cancel_received.wait(timeout=120), "the Stop never reached the server"
            return forward(*args, **kwargs)
        return gated_forward

    monkeypatch.setattr(gradio.routes, "cancel_tasks", noting_cancel_tasks)
    # Every token goes to the client at once, so the app pulls nothing after the one the Stop releases.
    monkeypatch.setattr(ui.tabs.chat, "throttled_thinking", functools.partial(throttled_thinking, interval=0.0))
    # wraps() keeps forward's signature, which generate() inspects to validate its arguments.
    monkeypatch.setattr(model, "forward", functools.wraps(model.forward)(gated(model.forward)))

    job = Client(demo.local_url, verbose=False).submit(message={"text": "tell me everything", "files": []},
                                                       max_new_tokens=2000, api_name="/chat")
    deadline = time.monotonic() + 120  # hang guards, not timing checks
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.outputs(), "no partial output streamed"
    # Gradio's /cancel waits for the generator to come back from the held pass, so press Stop from a thread.
    stopper = threading.Thread(target=job.cancel)
    stopper.start()
    stopper.join(timeout=120)
    while backend.records[-1]["finish"] is None or backend.inner._gpu_lock.locked():
        assert time.monotonic() < deadline, "the stopped request never released the GPU"
        time.sleep(0.02)

    partial, record = job.outputs()[-1], backend.records[-1]
    assert job.status().code == Status.CANCELLED
    assert record["finish"] == "closed"  # the app closed the model stream before its last chunk
    for text in (partial, record["text"]):
        assert text and LONG_ANSWER.startswith(text) and len(text) < len(LONG_ANSWER)
    stopped_after = passes[0]
    reply = Client(demo.local_url, verbose=False).predict(message={"text": "again", "files": []},
                                                          max_new_tokens=2000, api_name="/chat")
    assert reply == LONG_ANSWER
    assert stopped_after < backend.records[-1]["tokens"], "the generation ran to the end of the answer"


def test_chat_reset_starts_a_new_conversation(app):
    demo, session = app
    client = Client(demo.local_url, verbose=False)
    client.predict(message={"text": "first ZEBRA", "files": []}, api_name="/chat")
    client.predict(api_name="/chat_reset")
    client.predict(message={"text": "second", "files": []}, api_name="/chat")
    assert ("second",) in session.seen


# ---- the Chat tab's handlers, on plain data ------------------------------------------------------------
def _settings_values(max_new_tokens: int = 200) -> list:
    return ["You are a helpful assistant.", max_new_tokens, 0.0, 1.0, 0, 1.05, -1, None, 1280, 2.0, 64, False]


def _run(gen):
    """Drain a generator handler and return what it yielded last."""
    *_, last = gen
    return last


def test_chat_handlers_send_stream_retry_undo_edit(session, media_dir):
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
    conv = tab.edit(conv, gr.EditData(None, {"index": 0, "value": "second try", "previous_value": "first try"}))
    assert [t.text for t in conv.turns] == ["second try"] and conv.awaiting_answer


def test_chat_handler_errors_are_messages(session):
    tab = ChatTab(session)
    with pytest.raises(gr.Error, match="Type a message"):
        tab.add_message({"text": "  ", "files": []}, Conversation())
    conv, _, _ = tab.add_message({"text": "hi", "files": []}, Conversation())
    bad = _settings_values()
    bad[1] = 0  # max new tokens
    with pytest.raises(gr.Error, match="max_new_tokens must be between 1"):
        _run(tab.answer(conv, *bad))


def test_stop_keeps_the_partial_answer(session):
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
