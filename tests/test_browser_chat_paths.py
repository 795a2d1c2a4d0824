"""Tier 3, real browser: the Chat tab's paths around the main flow (refusals, editing a message with an image,
Stop before the first token) as a person sees them, on a desktop, a phone and in dark mode."""

from __future__ import annotations

import hashlib

import pytest
from PIL import Image

from qvl_core.settings import MAX_MESSAGE_CHARS
from qvl_core.tasks.conversation import MAX_MEDIA_PER_CONVERSATION, MAX_MEDIA_PER_MESSAGE
from tests.browser import BADGES, open_tab, save_screenshot
from tests.conftest import ROOT

SHAPES = ROOT / "assets" / "shapes.png"
CLOCK = ROOT / "assets" / "clock.mp4"
ANSWER = "Four shapes: a red circle, a blue rectangle, a green triangle and a yellow circle."
HELD = "Stop"  # a message carrying this waits (a long prefill) until the test lets it go


@pytest.fixture(scope="module")
def app(recording_backend, launch_app):
    backend = recording_backend("qwen2_5_vl", ANSWER)
    return launch_app(backend).local_url, backend


@pytest.fixture(scope="module")
def small_images(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("small")
    paths = []
    # All different: a file input given the same files again fires no change, and nothing would upload.
    for i in range(MAX_MEDIA_PER_CONVERSATION + 1):
        Image.new("RGB", (56, 56), (7 * i, 100, 200)).save(folder / f"pic{i}.png")
        paths.append(str(folder / f"pic{i}.png"))
    return paths


def send_chat(page, text: str, files: list[str]) -> None:
    """Type a message, attach `files` and press Enter until the box takes it (it ignores Enter while an upload is
    still running, even with every thumbnail shown): taken is the box emptied, or a refusal's toast."""
    page.wait_for_selector("#chat-input textarea:not([disabled])")
    if files:
        page.set_input_files("#chat-input input[type=file]", files)
        page.wait_for_function("n => document.querySelectorAll('#chat-input .thumbnail-item').length >= n",
                               arg=len(files))
    page.fill("#chat-input textarea", text)
    toasts = page.locator("[data-testid='toast-body']").count()
    for _ in range(30):
        page.keyboard.press("Enter")
        try:
            page.wait_for_function("([t, n]) => document.querySelector('#chat-input textarea').value !== t || "
                                   "document.querySelectorAll('[data-testid=toast-body]').length > n",
                                   arg=[text, toasts], timeout=2000)
            return
        except Exception:  # noqa: BLE001 - not taken yet (Playwright's TimeoutError): press again
            page.locator("#chat-input textarea").focus()
    raise AssertionError("the chat box never took the message")


def _toast(page, pattern: str) -> str:
    toast = page.locator("[data-testid='toast-body']").filter(has_text=pattern).first
    toast.wait_for(state="visible")
    return toast.text_content() or ""


def _answered(page, n: int) -> None:
    """Wait until the n-th answer has finished (its stats footer is shown)."""
    page.wait_for_function("n => [...document.querySelectorAll('[data-testid=bot]')]"
                           ".filter(b => b.innerText.includes('tokens')).length >= n", arg=n, timeout=120_000)


def _wait_for_call(page, backend, n: int) -> None:
    """Wait until the model has been asked `n` times in all (the page alone cannot tell a new answer from the old
    one still shown)."""
    for _ in range(600):
        if len(backend.records) >= n and backend.records[n - 1]["finish"] is not None:
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the model was asked {len(backend.records)} times, not {n}")


def _box_state(page) -> tuple[str, int]:
    """(text, number of attached files) of the chat box."""
    text = page.evaluate("document.querySelector('#chat-input textarea').value")
    return text, page.locator("#chat-input .thumbnail-item").count()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_refusals_show_their_message_and_keep_the_conversation_and_the_box(app, open_page, small_images, viewport):
    """Bug: 11 files in one message, 100,001 characters or the 33rd file of a conversation answered HTTP 500: no
    toast, two bare red "Error" badges over the conversation and the input."""
    url, _ = app
    page = open_page(viewport, dark=viewport == "phone")
    open_tab(page, url, "Chat", "#chat-input")
    send_chat(page, "First question", [small_images[0]])
    _answered(page, 1)

    # 11 files in one message: the limit is named, nothing is sent, the box keeps its text and its files.
    send_chat(page, "Eleven pictures", small_images[1:MAX_MEDIA_PER_MESSAGE + 2])
    assert f"limit of {MAX_MEDIA_PER_MESSAGE} per message" in _toast(page, "per message")
    page.wait_for_timeout(1000)  # anything the refusal would change lands by now
    assert _box_state(page) == ("Eleven pictures", MAX_MEDIA_PER_MESSAGE + 1)
    assert page.locator("[data-testid=user]").count() == 2  # the first message: its picture and its text
    assert page.evaluate(BADGES) == 0
    save_screenshot(page, f"chat-refusal-files-{viewport}")

    # One character over the message limit.
    page.reload()
    open_tab(page, url, "Chat", "#chat-input")
    send_chat(page, "x" * (MAX_MESSAGE_CHARS + 1), [])
    assert f"over the limit of {MAX_MESSAGE_CHARS}" in _toast(page, "characters")
    page.wait_for_timeout(1000)
    assert _box_state(page) == ("x" * (MAX_MESSAGE_CHARS + 1), 0)
    assert page.locator("[data-testid=user]").count() == 0 and page.evaluate(BADGES) == 0
    assert not page.errors
    save_screenshot(page, f"chat-refusal-long-{viewport}")


def test_the_file_over_the_conversation_limit_is_refused_with_its_message(app, open_page, small_images):
    """Bug: the 33rd file of a conversation answered HTTP 500 with bare "Error" badges and no message."""
    url, _ = app
    page = open_page("desktop")
    open_tab(page, url, "Chat", "#chat-input")
    sent = 0
    while sent < MAX_MEDIA_PER_CONVERSATION:
        n = min(MAX_MEDIA_PER_MESSAGE, MAX_MEDIA_PER_CONVERSATION - sent)
        send_chat(page, f"Pictures {sent}", small_images[sent:sent + n])
        sent += n
        _answered(page, -(-sent // MAX_MEDIA_PER_MESSAGE))
    users = page.locator("[data-testid=user]").count()
    send_chat(page, "One more", [small_images[MAX_MEDIA_PER_CONVERSATION]])
    assert f"limit of {MAX_MEDIA_PER_CONVERSATION}" in _toast(page, "Clear the chat")
    page.wait_for_timeout(1000)
    assert _box_state(page) == ("One more", 1)
    assert page.locator("[data-testid=user]").count() == users and page.evaluate(BADGES) == 0


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_editing_a_message_with_an_image_keeps_the_image_and_answers_again(app, open_page, viewport):
    """Bug: editing a message that has an image threw `C(...)[e].slice is not a function` in the page, sent no
    request and put the old text back."""
    url, backend = app
    page = open_page(viewport)
    open_tab(page, url, "Chat", "#chat-input")
    send_chat(page, "What is it?", [str(SHAPES)])
    _answered(page, 1)
    calls = len(backend.records)
    user_text = page.locator("[data-testid=user]").filter(has_text="What is it?").first
    user_text.hover()
    page.locator("button[aria-label='Edit'], button[title='Edit']").first.click()
    page.locator("textarea.edit-textarea").fill("Which colours are there?")
    page.locator("button[title='Submit'], button[aria-label='Submit']").filter(
        has_not=page.locator("#chat-input")).first.click()
    _wait_for_call(page, backend, calls + 1)
    _answered(page, 1)
    assert not page.errors, page.errors
    assert len(backend.records) == calls + 1
    record = backend.records[-1]
    assert record["last_user"] == "Which colours are there?"
    assert record["media"] == [hashlib.sha256(SHAPES.read_bytes()).hexdigest()]  # the image went with the edit
    assert page.locator("[data-testid=user] img").count() == 1
    assert "What is it?" not in " ".join(page.locator("[data-testid=user]").all_inner_texts())
    save_screenshot(page, f"chat-edit-image-{viewport}")


def test_stop_during_the_prefill_keeps_the_turn_and_its_video(app, open_page):
    """Bug: Stop before the first token (a video's prefill) took the turn out of the conversation and dropped the
    video, which had to be attached again."""
    url, backend = app
    arrived, release = backend.hold(HELD)
    page = open_page("desktop")
    open_tab(page, url, "Chat", "#chat-input")
    try:
        send_chat(page, f"{HELD} me while you read the video", [str(CLOCK)])
        assert arrived.wait(120)
        page.locator("#chat-input button.stop-button, #chat-input button[aria-label*=Stop i]").first.click()
        page.wait_for_selector("#chat-input textarea:not([disabled])")
        page.wait_for_selector("[data-testid=bot] >> text=stopped by you")
    finally:
        release.set()
    page.wait_for_timeout(1000)  # a failure handler that would take the turn back lands by now
    assert page.locator("[data-testid=user] video").count() == 1
    assert "read the video" in " ".join(page.locator("[data-testid=user]").all_inner_texts())
    assert page.evaluate(BADGES) == 0
    save_screenshot(page, "chat-stop-prefill")
    calls = len(backend.records)
    page.get_by_role("button", name="Retry").last.click()
    _wait_for_call(page, backend, calls + 1)
    _answered(page, 1)
    assert len(backend.records) == calls + 1 and "<|video_pad|>" in backend.records[-1]["prompt"]
    assert not page.errors, page.errors
