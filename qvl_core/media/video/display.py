"""A copy of a video that the browser can play, for the player only; the model always reads the original file."""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

from qvl_core.errors import UserError
from qvl_core.media.video.readers import _Failed
from qvl_core.media.video.workers import _call

# What Chromium's <video> plays (no proprietary codecs beyond H.264): codec per container, by file extension.
# MPEG-4 Part 2 ("mp4v"), HEVC, MJPEG, ProRes and anything in MOV, MKV or AVI show an empty player instead.
BROWSER_CODECS = {
    "mp4": frozenset({"h264", "vp9", "av1"}),
    "webm": frozenset({"vp8", "vp9", "av1"}),
}
CONTAINER_OF_SUFFIX = {".mp4": "mp4", ".m4v": "mp4", ".webm": "webm"}
# H.264 plays in Chromium only as 8-bit 4:2:0; High 4:4:4 or 10-bit H.264 shows an empty player too.
BROWSER_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})
# Above these a display copy is not made (the upload would wait minutes for a preview): the page says so.
MAX_DISPLAY_CONVERT_SECONDS = 600.0
MAX_DISPLAY_CONVERT_BYTES = 1 << 30
# The copy is for a player a few hundred pixels tall: its longer side is at most this (encoding stays fast).
DISPLAY_MAX_SIDE = 1280
# How the page names a codec FFmpeg calls otherwise (a camera's "mp4v" is FFmpeg's "mpeg4").
CODEC_NAMES = {"mpeg4": "MPEG-4 Part 2 / mp4v", "hevc": "HEVC / H.265", "mjpeg": "Motion JPEG", "prores": "ProRes"}
DISPLAY_PREFIX = "qvl-display-"  # the copy's name: prefix + content hash + ".mp4"
PROGRESS_EVERY_FRAMES = 50  # the worker reports this often, so its watchdog knows a long encode is alive
HASH_CHUNK_BYTES = 1 << 20

Action = Literal["as_is", "convert", "too_big"]


@dataclass(frozen=True)
class StreamInfo:
    """What decides whether the browser plays a file: its container (by suffix), codec, pixel format, length."""

    container: str  # "mp4", "webm" or the suffix without its dot ("mov", "mkv", "avi", ...)
    codec: str  # FFmpeg's decoder name: "h264", "mpeg4" (mp4v), "hevc", "vp9", ...
    pix_fmt: str | None
    duration: float  # seconds
    size_bytes: int


@dataclass(frozen=True)
class DisplayVideo:
    """What the player shows for one upload: the file itself, a converted copy, or nothing (with why)."""

    path: str | None  # None: the browser cannot show it and no copy was made
    converted: bool
    note: str  # for the page: "" when the file plays as it is


def container_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    return CONTAINER_OF_SUFFIX.get(suffix, suffix.lstrip("."))


def display_action(info: StreamInfo) -> Action:
    """Pure: play the file as it is, make a display copy, or say it is too big to convert."""
    if info.codec in BROWSER_CODECS.get(info.container, ()) and (
            info.codec != "h264" or info.pix_fmt in BROWSER_PIX_FMTS):
        return "as_is"
    if info.duration > MAX_DISPLAY_CONVERT_SECONDS or info.size_bytes > MAX_DISPLAY_CONVERT_BYTES:
        return "too_big"
    return "convert"


def display_size(width: int, height: int, rotation: int = 0) -> tuple[int, int]:
    """Pure: the copy's upright (width, height): at most DISPLAY_MAX_SIDE, even (4:2:0 needs both even)."""
    if rotation in (90, 270):
        width, height = height, width
    scale = min(1.0, DISPLAY_MAX_SIDE / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def content_hash(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()[:24]


def stream_info(path: str | Path) -> StreamInfo:
    """Container, codec and length of a video, read in a watched worker (a hostile file cannot hang the app)."""
    return _call(_info_job, (None, str(path)), lambda msg: None)


def display_video(path: str | Path, cache_dir: str | Path) -> DisplayVideo:
    """The file the player should show for `path`: itself when Chromium plays it, else an H.264 copy made once
    per content in `cache_dir` (same frame times, so a chip's seconds land on the same frame), or None above the
    limits. Raises UserError only for a file no decoder reads (the model would refuse it as well)."""
    name = Path(path).name
    try:
        info = stream_info(path)
    except _Failed as exc:
        return DisplayVideo(None, False, f"This video cannot be previewed in the browser ({exc}).")
    action = display_action(info)
    if action == "as_is":
        return DisplayVideo(str(path), False, "")
    what = f"{name!r} ({CODEC_NAMES.get(info.codec, info.codec)} in {info.container.upper()})"
    if action == "too_big":
        return DisplayVideo(None, False, (
            f"{what}: this video cannot be previewed in the browser; the model still reads it. (Previews are "
            f"converted up to {MAX_DISPLAY_CONVERT_SECONDS / 60:.0f} min and "
            f"{MAX_DISPLAY_CONVERT_BYTES >> 20} MiB; it has {info.duration:.0f} s and "
            f"{info.size_bytes / 2**20:.0f} MiB.)"))
    out = Path(cache_dir) / f"{DISPLAY_PREFIX}{content_hash(path)}.mp4"
    if not out.is_file():
        tmp = out.with_name(f".{out.name}.{os.getpid()}.part")
        try:
            _call(_convert_job, (None, str(path), str(tmp)), lambda msg: None)
            os.replace(tmp, out)  # whole or absent: a second upload of the same file never sees half a copy
        except (_Failed, UserError) as exc:
            tmp.unlink(missing_ok=True)
            return DisplayVideo(None, False, f"{what}: this video cannot be previewed in the browser ({exc}); "
                                             "the model still reads it.")
    return DisplayVideo(str(out), True, f"{what} is shown as a converted copy (H.264, no sound) because the "
                                        "browser cannot play it; the model reads the original file.")


def _info_job(_reader: None, path: str, *, emit: Callable[[tuple], None]) -> StreamInfo:
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            if not container.streams.video:
                raise UserError(f"File {Path(path).name!r} has no video stream.")
            stream = container.streams.video[0]
            cc = stream.codec_context
            duration = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                        else container.duration / 1e6 if container.duration else 0.0)
            return StreamInfo(container_of(path), getattr(cc, "name", "") or "", getattr(cc, "format", None)
                              and cc.format.name, duration, os.path.getsize(path))
    except av.error.FFmpegError as exc:
        raise _Failed(exc.strerror or type(exc).__name__) from None


def _convert_job(_reader: None, path: str, out: str, *, emit: Callable[[tuple], None]) -> None:
    """H.264 High, yuv420p, +faststart, no audio; each frame keeps its presentation time (minus the first one's,
    which the app's frame times also count from), so the copy's clock is the original's."""
    import av
    import numpy as np

    with av.open(path, metadata_errors="ignore") as src, av.open(out, "w", format="mp4",
                                                                   options={"movflags": "+faststart"}) as dst:
        stream = src.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base or Fraction(1, 90000)
        rate = stream.average_rate or stream.guessed_rate or 25
        enc = None
        first_pts = None
        for n, frame in enumerate(src.decode(stream)):
            if frame.pts is None:
                continue
            rotation = (-int(getattr(frame, "rotation", 0) or 0)) % 360
            if enc is None:
                width, height = display_size(frame.width, frame.height, rotation)
                enc = dst.add_stream("libx264", rate=rate)
                enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
                enc.time_base = tb
                enc.codec_context.time_base = tb
                enc.options = {"preset": "veryfast", "crf": "23"}
                first_pts = frame.pts
            if rotation:  # the display matrix is not carried over: turn the pixels upright instead
                turned = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), k=-rotation // 90))
                shown = av.VideoFrame.from_ndarray(turned, format="rgb24").reformat(width, height, "yuv420p")
            else:
                shown = frame.reformat(width, height, "yuv420p")
            shown.pts, shown.time_base = frame.pts - first_pts, tb
            dst.mux(enc.encode(shown))
            if n % PROGRESS_EVERY_FRAMES == 0:
                emit(("progress", n))
        if enc is None:
            raise UserError(f"Video {Path(path).name!r} has no frames.")
        dst.mux(enc.encode(None))
