"""The OpenCV reader: decodes forward (seeking over long gaps), reading each frame's time as it goes."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from qvl_core.errors import UserError
from qvl_core.media.video.readers import _Failed, _not_a_video

# OpenCV: seek (instead of decoding through) when the next frame is this far ahead.
OPENCV_SEEK_GAP_S = 8.0


class _OpenCVReader:
    """OpenCV's FFmpeg: decodes forward (seeking over long gaps), frame times from CAP_PROP_POS_MSEC.

    OpenCV has no frame index, so frame_times assume a constant rate and each target is the last frame
    shown by its time, found while decoding forward; its real time is what gets reported.
    """

    name = "opencv"
    module = "cv2"

    def __init__(self, path: str, *, emit: Callable[[tuple], None], index: bool = True,
                 max_duration: float | None = None) -> None:
        import cv2

        self.path = path
        name = Path(path).name
        self.cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            raise _not_a_video(path, "OpenCV cannot open it")
        self.frames = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if self.frames < 1 or not math.isfinite(self.fps) or self.fps <= 0:
            raise _Failed(f"video {name!r} has no readable frames (frame count {self.frames}, fps {self.fps:g})")
        self.duration = self.frames / self.fps
        if max_duration is not None and self.duration > max_duration:
            raise UserError(f"Video {name!r} lasts {self.duration:.0f} s, over the limit of {max_duration:.0f} s "
                            f"(QVL_MAX_VIDEO_SECONDS); choose a shorter clip with start/end.")
        self.rotation = int(self.cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360
        if not self.cap.grab():
            raise _Failed(f"video {name!r} has no readable frames")
        self.first_ms = self.cap.get(cv2.CAP_PROP_POS_MSEC)
        frame = self.cap.retrieve()[1]
        self.height, self.width = frame.shape[:2]  # upright: OpenCV applies the rotation itself
        self.pos = 0  # frame 0 is grabbed and current
        self.frame_times = np.arange(self.frames) / self.fps

    def _now(self) -> float:
        import cv2

        return (self.cap.get(cv2.CAP_PROP_POS_MSEC) - self.first_ms) / 1000

    def _rgb(self, size: tuple[int, int] | None) -> np.ndarray:
        import cv2

        ok, frame = self.cap.retrieve()
        if not ok:
            raise _Failed("OpenCV could not convert a decoded frame")
        if size is not None and frame.shape[:2] != size:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def read(self, targets: list[tuple[int, float]], size: tuple[int, int] | None):
        import cv2

        eps = 1e-3
        window = 1.5 / self.fps  # frames this close before a target are converted: one of them is it
        kept: tuple[int, float, np.ndarray] | None = None
        can_seek = True
        now = self._now()
        j = 0
        while j < len(targets):
            t = targets[j][1]
            if t - now > OPENCV_SEEK_GAP_S and can_seek:
                self.cap.set(cv2.CAP_PROP_POS_MSEC, (t - 2.0) * 1000)
                if not self.cap.grab() or self._now() > t + eps:  # no exact seek here: decode from the top
                    can_seek = False
                    self.cap.release()
                    self.cap = cv2.VideoCapture(self.path, cv2.CAP_FFMPEG)
                    if not self.cap.grab():
                        break
                self.pos = int(self.cap.get(cv2.CAP_PROP_POS_FRAMES)) - 1
                now, kept = self._now(), None
            while j < len(targets) and now > targets[j][1] + eps:  # passed target j: it was the last kept frame
                yield (j, *kept) if kept else (j, self.pos, now, self._rgb(size))
                j += 1
            if j < len(targets):
                if now >= targets[j][1] - window:
                    kept = (self.pos, now, self._rgb(size))
                else:
                    kept = None
                if not self.cap.grab():
                    break
                self.pos += 1
                now = self._now()
        while j < len(targets) and kept:  # the video ended: the last frame stays on screen
            yield (j, *kept)
            j += 1
        if j < len(targets):
            raise _Failed(f"the frames of {Path(self.path).name!r} from {targets[j][1]:.2f} s on could not be decoded")

    def close(self) -> None:
        self.cap.release()
