"""Video QA's player copy (issue 15 item 9) and its spans shown once per view: the codec decision table, the
converted copy's codec, clock and cache, and the page's helpers that keep the model on the original file."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from qvl_core.media.video.display import (
    DISPLAY_PREFIX,
    MAX_DISPLAY_CONVERT_BYTES,
    MAX_DISPLAY_CONVERT_SECONDS,
    StreamInfo,
    display_action,
    display_size,
    display_video,
    stream_info,
)
from qvl_core.parse.timespans import TimeSpan, parse_time_spans
from ui.tabs.video import model_video, view_spans

ROOT = Path(__file__).resolve().parent.parent
CLOCK = ROOT / "assets" / "clock.mp4"


def write_video(path: Path, codec: str = "mpeg4", *, frames: int = 30, rate: int = 10, size=(160, 120),
                first_pts: int = 0) -> Path:
    """A small test clip whose frame i has red level 3*i mod 256 (so a frame can be told by its colour)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for i in range(frames):
            a = np.zeros((size[1], size[0], 3), np.uint8)
            a[..., 0] = (3 * i) % 256
            frame = av.VideoFrame.from_ndarray(a, format="rgb24")
            frame.pts = first_pts + i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def frame_times(path: str | Path) -> list[float]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        times = sorted(float(f.pts * s.time_base) for f in c.decode(s))
    return [round(t - times[0], 6) for t in times]


def info(container: str, codec: str, pix_fmt: str | None = "yuv420p", duration: float = 10.0,
         size: int = 1 << 20) -> StreamInfo:
    return StreamInfo(container, codec, pix_fmt, duration, size)


@pytest.mark.parametrize(("stream", "action"), [
    (info("mp4", "h264"), "as_is"),
    (info("mp4", "vp9"), "as_is"),
    (info("mp4", "av1"), "as_is"),
    (info("webm", "vp8"), "as_is"),
    (info("webm", "vp9"), "as_is"),
    (info("webm", "av1"), "as_is"),
    (info("mp4", "mpeg4"), "convert"),  # a camera's "mp4v": the empty player of the issue
    (info("mp4", "hevc"), "convert"),
    (info("mp4", "h264", "yuv444p"), "convert"),  # High 4:4:4 H.264: Chromium shows nothing either
    (info("mp4", "h264", "yuv420p10le"), "convert"),
    (info("mov", "h264"), "convert"),
    (info("mkv", "h264"), "convert"),
    (info("avi", "mjpeg"), "convert"),
    (info("webm", "h264"), "convert"),
    (info("mp4", "mpeg4", duration=MAX_DISPLAY_CONVERT_SECONDS + 1), "too_big"),
    (info("avi", "mjpeg", size=MAX_DISPLAY_CONVERT_BYTES + 1), "too_big"),
    (info("mp4", "h264", duration=10 * MAX_DISPLAY_CONVERT_SECONDS), "as_is"),  # playable: never converted
])
def test_display_action_table(stream, action):
    """Regression: an mp4v MP4 showed an empty player ("Video not playable") though the model read it."""
    assert display_action(stream) == action


def test_display_size_is_even_bounded_and_upright():
    assert display_size(160, 120) == (160, 120)
    assert display_size(3840, 2160) == (1280, 720)
    assert display_size(1920, 1080, rotation=90) == (720, 1280)
    assert display_size(101, 51) == (100, 52)


def test_mp4v_gets_an_h264_copy_with_the_same_frame_times_cached_by_content(tmp_path):
    """Regression: an mp4v upload had no playable copy; the copy must keep each frame's time (chips seek it)."""
    src = write_video(tmp_path / "camera.mp4", "mpeg4", frames=30, rate=10, first_pts=5)
    assert stream_info(src).codec == "mpeg4"
    cache = tmp_path / "out"
    cache.mkdir()
    shown = display_video(src, cache)
    assert shown.converted and shown.path is not None
    assert Path(shown.path).parent == cache and Path(shown.path).name.startswith(DISPLAY_PREFIX)
    assert "MPEG-4 Part 2" in shown.note and "reads the original" in shown.note
    copy = stream_info(shown.path)
    assert (copy.codec, copy.pix_fmt, copy.container) == ("h264", "yuv420p", "mp4")
    assert display_action(copy) == "as_is"
    assert copy.duration == pytest.approx(stream_info(src).duration, abs=0.11)
    assert frame_times(shown.path) == frame_times(src) == [round(i / 10, 6) for i in range(30)]
    # The same content uploaded again (another name): the copy is reused, not made again.
    again = write_video(tmp_path / "again.mp4", "mpeg4", frames=30, rate=10, first_pts=5)
    mtime = Path(shown.path).stat().st_mtime_ns
    assert display_video(again, cache).path == shown.path
    assert Path(shown.path).stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [Path(shown.path).name]  # no half-written parts left


def test_a_playable_video_is_shown_as_it_is(tmp_path):
    shown = display_video(CLOCK, tmp_path)
    assert (shown.path, shown.converted, shown.note) == (str(CLOCK), False, "")
    assert list(tmp_path.iterdir()) == []


def test_model_reads_the_upload_behind_its_display_copy():
    """The model keeps reading the ORIGINAL file; the player's copy comes back from Gradio's cache by name."""
    original = {"shown": "qvl-display-abc.mp4", "path": "/uploads/camera.mp4"}
    assert model_video("/tmp/gradio/123/qvl-display-abc.mp4", original) == "/uploads/camera.mp4"
    assert model_video("/tmp/gradio/456/clock.mp4", original) == "/tmp/gradio/456/clock.mp4"  # an example since
    assert model_video("/tmp/gradio/456/clock.mp4", None) == "/tmp/gradio/456/clock.mp4"
    assert model_video(None, original) is None


def test_chapters_spans_once_per_view():
    """Regression: a Chapters answer whose prose repeats its JSON ("turns blue at 00:04") gave the table an
    extra row (and the gallery an extra frame) for a span already shown."""
    answer = ('```json\n[{"start_time": "00:00.00", "end_time": "00:04.00", "description": "the ball is red"},\n'
              '{"start_time": "00:04.00", "end_time": "00:08.00", "description": "the ball turns blue"}]\n```\n'
              "The ball is red from 00:00 to 00:04.0 and turns blue at 00:04. At 00:06 it bounces.")
    spans = parse_time_spans(answer, duration=8.0)
    assert [(s.start, s.end) for s in view_spans(spans)] == [(0.0, 4.0), (4.0, 8.0), (6.0, None)]
    assert view_spans(spans)[1].text == "the ball turns blue"
    same = [TimeSpan(1.0, 2.0, ""), TimeSpan(1.04, 2.0, "words"), TimeSpan(3.0, None, "x"), TimeSpan(3.0, None, "y")]
    assert view_spans(same) == [TimeSpan(1.04, 2.0, "words"), TimeSpan(3.0, None, "x")]
