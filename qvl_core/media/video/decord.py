"""The decord reader: its own frame index and keyframe seeks (last resort: it can hang or be a frame late)."""
from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np

from qvl_core.errors import UserError
from qvl_core.media.video.readers import _not_a_video, _opencv_rotation


class _DecordReader:
    """decord: its own frame index and keyframe seeks; it applies rotation itself (checked in the tests)."""

    name = "decord"
    module = "decord"

    def __init__(self, path: str, *, emit: Callable[[tuple], None], index: bool = True,
                 max_duration: float | None = None) -> None:
        import decord

        self.path = path
        name = Path(path).name
        try:
            self.vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=0)
        except Exception:  # noqa: BLE001 - decord raises DECORDError or RuntimeError with C++ log lines
            raise _not_a_video(path, "decord cannot open it") from None
        self.frames = len(self.vr)
        if self.frames < 1:
            raise UserError(f"Video {name!r} has no frames.")
        # decord reports float32 values: snap the rate back to its fraction (29.97 is 30000/1001).
        self.fps = float(Fraction(float(self.vr.get_avg_fps())).limit_denominator(1001))
        stamps = np.asarray(self.vr.get_frame_timestamp(list(range(self.frames))), dtype=np.float64)
        times = stamps[:, 0] - stamps[0, 0]
        grid = np.arange(self.frames) / self.fps if self.fps else times
        # float32 times of a constant-rate video are its frame grid plus rounding noise: use the grid
        self.frame_times = grid if np.all(np.abs(times - grid) <= 1e-4 + 3e-7 * grid) else np.round(times, 6)
        if self.frames > 1:
            step = float(self.frame_times[-1] - self.frame_times[-2])
        else:
            step = 1 / self.fps if self.fps else 0.04
        self.duration = round(float(self.frame_times[-1]) + step, 6)
        if max_duration is not None and self.duration > max_duration:
            raise UserError(f"Video {name!r} lasts {self.duration:.0f} s, over the limit of {max_duration:.0f} s "
                            f"(QVL_MAX_VIDEO_SECONDS); choose a shorter clip with start/end.")
        self.height, self.width = self.vr[0].shape[:2]
        self.vr.seek(0)
        self.rotation = _opencv_rotation(path)

    def read(self, targets: list[tuple[int, float]], size: tuple[int, int] | None):
        import decord

        vr = self.vr
        if size is not None and size != (self.height, self.width):
            vr = decord.VideoReader(self.path, ctx=decord.cpu(0), num_threads=0, width=size[1], height=size[0])
        for j, (index, _t) in enumerate(targets):
            yield j, index, float(self.frame_times[index]), vr[index].asnumpy()

    def close(self) -> None:
        self.vr = None
