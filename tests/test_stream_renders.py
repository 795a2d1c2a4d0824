"""Streaming tabs render O(tokens / batch) times, not once per token (the cost grew with the answer's square).

Time is scripted: `ui.common.stream_clock` advances STREAM_INTERVAL_S / BATCH per read, as if every BATCH
tokens took one throttle interval. No test here waits on or measures the real clock.
"""

from __future__ import annotations

import contextlib

import pytest
from PIL import Image

import ui.common
import ui.tabs.documents
import ui.tabs.video
from qvl_core.tasks.documents import MODES
from tests.test_docparse_task import REPORT_HTML, make_pdf
from tests.test_grounding_app import scripted_answer
from tests.test_video_app import CLOCK
from tests.test_video_app import SAMPLING as VIDEO_SAMPLING
from ui.common import STREAM_INTERVAL_S
from ui.tabs.documents import DocumentsTab
from ui.tabs.grounding import GroundingTab
from ui.tabs.video import VideoTab

BATCH = 8  # tokens per scripted throttle interval
# A scripted checkpoint's tokens grow by a character each (see qvl_core.testing.tiny.split_answer): an answer
# of L characters streams in about sqrt(2 L) tokens, so the answers here run to a few thousand characters.
SLACK = 3  # the first step, the final one, a held-back last step


class CountingBackend:
    """A backend that counts the chunks its inner backend streams (everything else is the inner one's)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.chunks = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def stream(self, request, **kwargs):
        with contextlib.closing(self.inner.stream(request, **kwargs)) as stream:
            for chunk in stream:
                self.chunks += 1
                yield chunk


@pytest.fixture
def scripted_clock(monkeypatch):
    """Every read of the throttle's clock is (just over) 1/BATCH of an interval later than the one before."""
    now = [0.0]

    def tick() -> float:
        now[0] += STREAM_INTERVAL_S / BATCH * 1.001  # just over, so BATCH reads pass an interval despite rounding
        return now[0]

    monkeypatch.setattr(ui.common, "stream_clock", tick, raising=False)


def counting(monkeypatch, module, name: str) -> list[int]:
    """Wrap module.name so that each call is counted; returns the one-item counter."""
    calls = [0]
    inner = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_grounding_renders_per_batch_not_per_token(make_session, scripted_clock, tmp_path):
    """Regression: the Grounding tab yielded (and Gradio re-rendered) on every token."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", (1000, 500), "white").save(photo)
    answer = scripted_answer("qwen2_5_vl") + "\nThe red box is left of the dot" + ", and so on" * 200 + "."
    backend = CountingBackend(make_session("qwen2_5_vl", answer))
    renders = list(GroundingTab(backend).run(str(photo), "Detect", "red box", "", 1280, 2048, 0.0, 1.0, 0, 1.05, -1))
    assert backend.chunks >= 5 * BATCH  # enough tokens for the count to mean something
    assert len(renders) <= backend.chunks // BATCH + SLACK, (len(renders), backend.chunks)
    assert renders[-1][0] is not None  # the drawing still comes at the end


def test_video_relinks_the_answer_per_batch_not_per_token(make_session, scripted_clock, monkeypatch):
    """Regression: the Video QA tab re-linked the whole answer (answer_html) on every token."""
    answer = "The ball turns blue at 4.0 seconds and moves right until 00:06.00, then it stops. " * 30
    backend = CountingBackend(make_session("qwen2_5_vl", answer))
    calls = counting(monkeypatch, ui.tabs.video, "answer_html")
    *_, final = VideoTab(backend).run(CLOCK, "Describe", "", "", 2.0, 64, 256, 16384, None, None, *VIDEO_SAMPLING)
    assert backend.chunks >= 5 * BATCH
    assert calls[0] <= backend.chunks // BATCH + SLACK, (calls[0], backend.chunks)
    assert 'class="qvl-chip"' in final[0]


def test_documents_stream_per_batch_and_render_each_finished_page_once(make_session, scripted_clock, monkeypatch,
                                                                       tmp_path):
    """Regression: the Documents tab yielded on every token and re-rendered every finished page's status line
    (format_stats per page) on each of those yields."""
    backend = CountingBackend(make_session("qwen2_5_vl", REPORT_HTML))
    stats_calls = counting(monkeypatch, ui.tabs.documents, "format_stats")
    pdf = make_pdf(tmp_path / "report.pdf", 3)
    renders = list(DocumentsTab(backend).run([str(pdf)], MODES[0], "", "", 150, 4096, 2000, 0.0, 1.0, 0, 1.05, -1,
                                             progress=lambda *a, **k: None))
    assert backend.chunks >= 3 * 3 * BATCH
    # Per page: its tokens in batches, the page starting, the page finishing; plus the job's start and end.
    assert len(renders) <= backend.chunks // BATCH + 3 * SLACK + 2, (len(renders), backend.chunks)
    assert stats_calls[0] == 3  # one status line per finished page, made once
    assert "Done: 3 of 3 pages" in renders[-1][-2]  # the status, before the downloads


def test_throttle_shows_the_last_step_it_held_back(scripted_clock):
    """A stream that ends between intervals still shows its last text (it is never held back for good)."""
    shown = list(ui.common.throttle(iter(range(BATCH + 3)), urgent=lambda _s: False))
    assert shown == [0, BATCH, BATCH + 2]


def test_closing_the_throttle_closes_its_source(scripted_clock):
    closed = []

    def source():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    steps = ui.common.throttle(source(), urgent=lambda _s: False)
    assert next(steps) == 0
    steps.close()
    assert closed == [True]
