"""Tier 3, real browser: the Chat tab's main flow (upload, send, streamed answer, Stop) in Chromium."""

from __future__ import annotations

import time

import pytest

from qvl_core.engine.local import ModelSession
from tests.browser import send_chat

# Long enough to stream visibly; Markdown and LaTeX to check rendering.
ANSWER = "The picture shows **four shapes**: a red circle, a blue rectangle, a green triangle and a yellow " \
         "circle.\n\n- Area of a circle: $\\pi r^2$\n- " + " ".join(f"word{i}" for i in range(60))


class SlowSession(ModelSession):
    """The real session with a pause between chunks, so a person (or a test) can watch it stream."""

    def __init__(self, inner: ModelSession, delay: float) -> None:
        super().__init__(inner.options, loaded=inner.loaded)
        self.delay = delay

    def stream(self, request):
        for chunk in super().stream(request):
            time.sleep(self.delay)
            yield chunk


@pytest.fixture(scope="module")
def url(make_session, launch_app):
    return launch_app(SlowSession(make_session("qwen2_5_vl", ANSWER), delay=0.03)).local_url


RECORD_LENGTHS = """
() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    if (bots.length) window.__lengths.push(bots[bots.length - 1].innerText.length);
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


def test_upload_send_stream_and_render(url, artifacts, page):
    from pathlib import Path

    shapes = str(Path(__file__).resolve().parent.parent / "assets" / "shapes.png")
    page.goto(url)
    page.evaluate(RECORD_LENGTHS)
    send_chat(page, "What shapes do you see?", [shapes])
    page.wait_for_selector('[data-testid="bot"] >> text=word59', timeout=120_000)
    page.wait_for_selector('[data-testid="bot"] >> text=tokens')  # the stats footer came with the end
    bot = page.locator('[data-testid="bot"]').last
    assert "four shapes" in bot.inner_text()
    assert bot.locator("strong").first.inner_text() == "four shapes"  # Markdown rendered
    assert bot.locator(".katex").count() >= 1  # LaTeX rendered
    assert page.locator('[data-testid="user"] img').count() == 1  # the uploaded image is in history
    lengths = page.evaluate("window.__lengths")
    final = max(lengths)
    assert len({n for n in lengths if 0 < n < final}) >= 3, "the answer did not stream"
    page.screenshot(path=str(artifacts / "chat-stream.png"))


def test_stop_ends_the_answer_and_unlocks_the_box(url, artifacts, page):
    page.goto(url)
    send_chat(page, "Tell me everything", [])
    page.wait_for_selector('[data-testid="bot"] >> text=circle')
    page.locator("#chat-input button.stop-button, #chat-input button[aria-label*=Stop i]").first.click()
    page.wait_for_selector("#chat-input textarea:not([disabled])")
    time.sleep(1.0)  # anything still streaming would land now
    text = page.locator('[data-testid="bot"]').last.inner_text()
    assert "word59" not in text and "circle" in text
    # The next message goes through at once.
    send_chat(page, "Again", [])
    page.wait_for_selector('[data-testid="bot"] >> nth=1 >> text=word59', timeout=120_000)
