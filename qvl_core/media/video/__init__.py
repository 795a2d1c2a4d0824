"""Video files in, evenly sampled frames with their true times out (one sampler for every tab).

Only the sampled frames are decoded: each part of the video is decoded from the keyframe before its
first wanted frame to its last one, frames that nothing refers to are skipped, independent parts are
decoded on every core at once, and each frame is resized to the model's size as it comes out, so memory
stays at the size of the result. Times are the frames' real presentation times, so variable-frame-rate
and trimmed clips are placed where the model assumes they are; rotated phone videos come out upright.

Decoders, tried in this order (`backend=` or QVL_VIDEO_BACKEND picks one, or an order):
- PyAV: FFmpeg with every frame's time read from the packets before decoding; exact frames, fastest.
- OpenCV: decodes forward (seeking over long gaps) and reads each frame's time as it goes; exact, slower.
- decord, if installed: no faster than OpenCV here, returns a frame one or two late next to open-GOP
  keyframes (tests/test_video.py shows it) and is known to hang on some files, so it comes last.
Every decode runs in a worker process: a decoder that raises, crashes or makes no progress for
STALL_TIMEOUT_S is killed and the next one is tried. A thread would not do: a call hung inside decord or
FFmpeg cannot be interrupted, so its thread (and the memory and CPU it holds) would stay for good, and a
crash in C would take the whole app down. A worker starts with the first video (or with warm_up(), which an
app calls when a video arrives), stays up between videos, and at most MAX_WORKERS of them run at once.

Modules: plan (pure: budgets, frame counts and times, sizes, estimates), sampler (the entry points and the
jobs a worker runs), workers (the watched processes), readers (the contract every decoder implements), and
one module per decoder: pyav, opencv, decord.
"""
from __future__ import annotations

from qvl_core.media.video.plan import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAME_TOKENS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MIN_FRAME_TOKENS,
    DEFAULT_TOTAL_VIDEO_TOKENS,
    KV_BYTES_PER_TOKEN_7B,
    MAX_FRAMES_LIMIT,
    MIN_FRAMES,
    SampledVideo,
    VideoBudget,
    VideoEstimate,
    VideoInfo,
    estimate,
    frame_indices,
)
from qvl_core.media.video.sampler import (
    BACKEND_ENV,
    BACKENDS,
    READERS,
    frame_at,
    frames_at,
    probe,
    sample_frames,
    warm_up,
)

__all__ = [
    "BACKENDS", "BACKEND_ENV", "DEFAULT_FPS", "DEFAULT_MAX_FRAMES",
    "DEFAULT_MAX_FRAME_TOKENS", "DEFAULT_MIN_FRAME_TOKENS", "DEFAULT_TOTAL_VIDEO_TOKENS", "KV_BYTES_PER_TOKEN_7B",
    "MAX_FRAMES_LIMIT", "MIN_FRAMES", "READERS", "SampledVideo", "VideoBudget", "VideoEstimate", "VideoInfo",
    "estimate", "frame_at", "frame_indices", "frames_at", "probe", "sample_frames", "warm_up",
]
