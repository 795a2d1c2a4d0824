"""Tier 3, real browser: each tab's main flow ending in the README screenshot of that tab, and an error in each tab
reaching the person as a visible message (then the next request works).

Screenshots go to tests/artifacts; `QVL_UPDATE_SCREENSHOTS=1 make test` also writes small copies to docs/.
Stop mid-stream in Chat is covered by test_browser_chat.py; the Grounding flow and its screenshot by
test_browser_grounding.py.
"""

from __future__ import annotations

import pytest

from tests.browser import open_tab, save_screenshot, send_chat
from tests.conftest import ROOT
from tests.test_docparse_task import REPORT_HTML, make_pdf
from tests.test_grounding_app import scripted_answer

SHAPES = str(ROOT / "assets" / "shapes.png")
CLOCK = str(ROOT / "assets" / "clock.mp4")
CHAT_ANSWER = ("The picture shows **four shapes**: a red circle, a blue rectangle, a green triangle and a yellow "
               "circle.\n\n| shape | colour |\n|---|---|\n| circle | red |\n| rectangle | blue |\n\n"
               "The area of a circle is $\\pi r^2$.")
VIDEO_ANSWER = ('```json\n[{"start_time": "00:00.00", "end_time": "00:04.00", "description": "the ball is red"},\n'
                '{"start_time": "00:04.00", "end_time": "00:08.00", "description": "the ball turns blue"}]\n```')


def _toast(page, pattern: str) -> str:
    """The text of the error toast that names the problem (visible on the page, not only in a log)."""
    toast = page.locator("[data-testid='toast-body']").filter(has_text=pattern).first
    toast.wait_for(state="visible")
    text = toast.text_content() or ""
    assert "Traceback" not in text
    return text


@pytest.fixture
def fake_png(tmp_path) -> str:
    path = tmp_path / "holiday.png"
    path.write_text("this is not a picture")
    return str(path)


# ---- Chat ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chat_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", CHAT_ANSWER)).local_url


def test_chat_tab(chat_url, page):
    open_tab(page, chat_url, "Chat", "#chat-input")
    send_chat(page, "What shapes do you see, and what colour are they?", [SHAPES])
    page.wait_for_selector('[data-testid="bot"] >> text=tokens', timeout=120_000)
    bot = page.locator('[data-testid="bot"]').last
    assert bot.locator("table").count() == 1 and bot.locator(".katex").count() >= 1
    save_screenshot(page, "chat")


def test_chat_error_is_shown_and_the_next_message_works(chat_url, fake_png, page):
    open_tab(page, chat_url, "Chat", "#chat-input")
    send_chat(page, "What is this?", [fake_png])
    assert "'holiday.png' is not an image" in _toast(page, "holiday.png")
    # The failed message leaves the conversation; its text and its file come back to the box, unlocked.
    page.wait_for_function("document.querySelector('#chat-input textarea').value === 'What is this?'")
    page.wait_for_selector("#chat-input textarea:not([disabled])")
    assert page.locator('[data-testid="user"]').count() == 0
    assert page.locator("#chat-input [aria-label='File thumbnail']").count() == 1
    page.locator("#chat-input button[aria-label='Remove file']").click()  # the person takes the bad file out
    page.wait_for_selector("#chat-input [aria-label='File thumbnail']", state="detached")
    send_chat(page, "And this?", [SHAPES])
    page.wait_for_selector('[data-testid="bot"] >> text=four shapes', timeout=120_000)
    users = " ".join(page.locator('[data-testid="user"]').all_inner_texts())
    assert "And this?" in users and "What is this?" not in users  # the failed turn is gone from the history


# ---- Grounding -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ground_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", scripted_answer("qwen2_5_vl"))).local_url


def test_grounding_error_is_shown(ground_url, fake_png, page):
    open_tab(page, ground_url, "Grounding", "#ground-image")
    page.set_input_files("#ground-image input[type=file]", fake_png)
    page.fill("#ground-text textarea", "red box")
    page.click("#ground-run")
    assert "is not an image" in _toast(page, "holiday.png")


# ---- Documents -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def doc_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", REPORT_HTML)).local_url


def test_documents_tab(doc_url, tmp_path, page):
    pdf = make_pdf(tmp_path / "report.pdf", 2, text="Quarterly report")
    open_tab(page, doc_url, "Documents", "#doc-files")
    page.set_input_files("#doc-files input[type=file]", str(pdf))
    page.wait_for_selector("#doc-files >> text=report.pdf")
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=Done: 2 of 2 pages", timeout=180_000)
    assert "Quarterly report" in page.frame_locator("#doc-preview iframe").locator("body").inner_text()
    page.wait_for_selector("#doc-downloads td[aria-label='report.md']")
    save_screenshot(page, "documents", full_page=True)


def test_documents_error_is_shown(doc_url, tmp_path, page):
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 garbage")
    open_tab(page, doc_url, "Documents", "#doc-files")
    page.set_input_files("#doc-files input[type=file]", str(broken))
    page.wait_for_selector("#doc-files >> text=broken.pdf")
    page.click("#doc-run")
    assert "broken.pdf" in _toast(page, "Nothing could be parsed")


# ---- Video QA ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", VIDEO_ANSWER)).local_url


def test_video_tab(video_url, page):
    open_tab(page, video_url, "Video QA", "#video-player")
    page.get_by_label("Chapters").check()
    page.set_input_files("#video-player input[type=file]", CLOCK)
    page.wait_for_selector("#video-player video")
    page.wait_for_selector("#video-estimate >> text=16 frames")
    page.click("#video-run")
    page.wait_for_selector("#video-summary >> text=2 time span")
    assert page.locator("#video-timeline .qvl-seg").count() == 2
    save_screenshot(page, "video", full_page=True)


def test_video_error_is_shown(video_url, tmp_path, page):
    fake = tmp_path / "holiday.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    open_tab(page, video_url, "Video QA", "#video-player")
    page.set_input_files("#video-player input[type=file]", str(fake))
    page.wait_for_timeout(500)
    page.click("#video-run")
    assert "holiday.mp4" in _toast(page, "holiday.mp4")
