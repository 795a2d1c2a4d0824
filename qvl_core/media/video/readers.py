"""The reader contract every decoder module implements, and what they share; no decoder of its own."""
from __future__ import annotations

from pathlib import Path

# Each reader opens a file and exposes: name, frames, fps, duration, width/height (upright), rotation
# (clockwise degrees applied), frame_times (seconds of every frame in display order, first = 0; nominal
# for OpenCV), and read(targets, size) yielding (target position, frame index, real time, RGB frame) for
# targets = [(frame index, target time)] sorted by index, each frame resized to size = (h, w) or kept
# full size when size is None. A UserError is the file's fault (no decoder will do better); anything
# else makes the caller try the next decoder.


class _Failed(Exception):
    """This decoder could not do the job; the next one may. The message is written for people."""


def _not_a_video(path: str, detail: str) -> _Failed:
    name = Path(path).name
    with open(path, "rb") as f:
        head = f.read(12)
    looks = ("MP4/MOV" if head[4:8] == b"ftyp" else "AVI" if head[:4] == b"RIFF"
             else "Matroska/WebM" if head[:4] == b"\x1a\x45\xdf\xa3" else None)
    if looks:
        return _Failed(f"file {name!r} is not a video this app can read: it starts like {looks} "
                       f"but is damaged or truncated ({detail})")
    return _Failed(f"file {name!r} is not a video this app can read ({detail})")


def _opencv_rotation(path: str) -> int:
    """The clockwise turn the container asks for, as OpenCV reads it (decord does not report it)."""
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360 if cap.isOpened() else 0
    finally:
        cap.release()
