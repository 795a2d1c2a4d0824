"""Pure planning for the sampler: budgets, frame counts and times, frame sizes, estimates; no decoding."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from qvl_core.errors import UserError
from qvl_core.families import FamilySpec
from qvl_core.media.images import smart_resize
from qvl_core.settings import DEFAULT_MAX_VIDEO_SECONDS

# Named defaults and limits (the model's training used 2 fps, 4..768 frames, even counts).
DEFAULT_FPS = 2.0
MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 64
MAX_FRAMES_LIMIT = 768
# Per-frame visual tokens (after the 2x2 merge) and the budget for the whole clip.
DEFAULT_MIN_FRAME_TOKENS = 16
DEFAULT_MAX_FRAME_TOKENS = 256
DEFAULT_TOTAL_VIDEO_TOKENS = 16384  # qwen-vl-utils advises keeping video tokens under 24576
KV_BYTES_PER_TOKEN_7B = 56 * 1024  # 7B keeps 56 KiB of KV cache per token
# The processor gets frame times on a clock of this many ticks per sampling step (see processor_metadata).
TICKS_PER_STEP = 1000


@dataclass(frozen=True)
class VideoBudget:
    """How densely and how finely to sample: frames per second, frame count and token budgets."""

    fps: float = DEFAULT_FPS
    min_frames: int = MIN_FRAMES
    max_frames: int = DEFAULT_MAX_FRAMES
    min_frame_tokens: int = DEFAULT_MIN_FRAME_TOKENS
    max_frame_tokens: int = DEFAULT_MAX_FRAME_TOKENS
    total_tokens: int = DEFAULT_TOTAL_VIDEO_TOKENS
    # None: the app's `Limits.max_video_seconds`, which the backend fills in (`sample_frames` on its own:
    # DEFAULT_MAX_VIDEO_SECONDS); a number may only narrow the app's limit.
    max_duration_s: float | None = None

    def __post_init__(self) -> None:
        if not (0.05 <= self.fps <= 30):
            raise UserError(f"Video fps must be between 0.05 and 30, got {self.fps}.")
        if not (2 <= self.max_frames <= MAX_FRAMES_LIMIT):
            raise UserError(f"Max frames must be between 2 and {MAX_FRAMES_LIMIT}, got {self.max_frames}.")

    @property
    def duration_limit(self) -> float:
        """The longest clip (seconds) this budget samples."""
        return DEFAULT_MAX_VIDEO_SECONDS if self.max_duration_s is None else self.max_duration_s


@dataclass(frozen=True)
class VideoInfo:
    """What a video is, from its header and first frame. Sizes are upright (after rotation).

    `rotation` is the clockwise turn (0, 90, 180, 270) applied to the stored frames to show them upright.
    `frames` comes from the container; where it has no count, it is estimated as duration x fps.
    """

    duration: float
    fps: float
    frames: int
    width: int
    height: int
    rotation: int
    backend: str


@dataclass(frozen=True)
class VideoEstimate:
    """What sampling a video will cost, before anything is decoded: for the UI's live estimate."""

    frames: int
    frame_size: tuple[int, int]  # (width, height) of each frame the model sees
    visual_tokens: int
    kv_cache_bytes_7b: int


@dataclass(frozen=True)
class SampledVideo:
    """Frames (T, H, W, 3 uint8, upright, already at the model's size) and when each was shown.

    `timestamps` are each frame's real presentation time in the file (seconds from its first frame).
    `fps` is the sampling rate the model is told: the frames sit at `start + k / fps`. It is exactly the
    requested rate where the frames are a whole number of source frames apart (30 fps at 2 fps: every
    15th frame), else frame count / clip duration. The model's times start at the first sampled frame:
    a time the model states is `start +` that in the file.
    """

    frames: np.ndarray
    timestamps: list[float]
    fps: float
    source_fps: float
    total_frames: int
    indices: list[int] = field(default_factory=list)
    original_size: tuple[int, int] = (0, 0)
    start: float = 0.0
    backend: str = ""

    @property
    def duration(self) -> float:
        return self.total_frames / self.source_fps

    def processor_metadata(self) -> dict:
        """The `video_metadata` entry that makes transformers compute the true time of every frame.

        transformers derives the rate as len(frames_indices) / total_num_frames * fps (Qwen2.5-VL:
        second_per_grid_ts = 2 / rate) and Qwen3-VL's "<t seconds>" stamps as index / fps. Frame
        indices cannot express variable frame rates, so the indices here count ticks of a clock running
        TICKS_PER_STEP times per sampling step: the rate comes out as exactly `self.fps` and each stamp
        as the frame's real time (to a thousandth of a step). Without metadata, transformers assumes
        24 fps (Qwen2.5-VL positions) or cannot stamp frames (Qwen3-VL), and every time is wrong.
        """
        n = len(self.timestamps)
        clock = self.fps * TICKS_PER_STEP
        last_tick = n * TICKS_PER_STEP - 1
        return {
            "total_num_frames": n * TICKS_PER_STEP,
            "fps": clock,
            "frames_indices": [min(last_tick, max(0, round((t - self.start) * clock))) for t in self.timestamps],
            "duration": n / self.fps,
            "width": int(self.frames.shape[2]),
            "height": int(self.frames.shape[1]),
        }



def _frame_count(duration: float, frames: int, budget: VideoBudget, temporal_patch: int) -> int:
    """duration x fps, clamped to [min_frames, min(max_frames, frames)], floored to even."""
    upper = min(budget.max_frames, frames)
    n = max(budget.min_frames, min(duration * budget.fps + 1e-6, upper))  # 1e-6: 9.999999 s x 2 is 20
    n = min(n, upper)  # a clip shorter than min_frames cannot give more frames than it has
    # n > frames only for 1-frame clips: the only frame repeats so the temporal patch is full.
    return max(temporal_patch, int(n // temporal_patch) * temporal_patch)


def frame_indices(total_frames: int, source_fps: float, budget: VideoBudget, *,
                  temporal_patch: int = 2) -> list[int]:
    """An even number of frame indices, clamped to the budget, at k * total / n.

    The model places frame k at k / sample_fps seconds with sample_fps = n / total * source_fps, i.e. at
    source frame k * total / n: sampling exactly there keeps every frame within one source frame of the
    time the model assumes (linspace to the last frame drifts by up to a whole sampling step). This is the
    constant-frame-rate case of what sample_frames does with real frame times.
    """
    if total_frames < 1:
        raise UserError("Video has no frames.")
    n = _frame_count(total_frames / source_fps, total_frames, budget, temporal_patch)
    return [k * total_frames // n for k in range(n)]


def _frame_size(n_frames: int, width: int, height: int, family: FamilySpec, budget: VideoBudget) -> tuple[int, int]:
    """(height, width) every frame is resized to: the per-frame share of the clip's token budget."""
    share = budget.total_tokens * family.temporal_patch_size // max(n_frames, 1)  # 2 frames share a token
    tokens = max(budget.min_frame_tokens, min(budget.max_frame_tokens, share))
    return smart_resize(height, width, factor=family.factor,
                        min_pixels=budget.min_frame_tokens * family.pixels_per_token,
                        max_pixels=tokens * family.pixels_per_token)


def _check_clip_args(start: float | None, end: float | None) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0):
            raise UserError(f"Clip {name} must be a number of seconds from 0 up, got {value!r}.")
    if start is not None and end is not None and end <= start:
        raise UserError(f"Clip end ({end:g} s) must be after its start ({start:g} s).")


def _clip(name: str | None, duration: float, start: float | None, end: float | None) -> tuple[float, float]:
    """[start, end) within the video, or a UserError naming the file and its length. End is clamped."""
    s = float(start or 0.0)
    what = f"video {name!r}" if name else "the video"
    if duration <= 0:  # a still picture, which FFmpeg reads as one frame lasting 0 s
        raise UserError(f"{what[0].upper()}{what[1:]} has no duration: it is not a video this app can read "
                        "(an image renamed?).")
    if s >= duration:
        raise UserError(f"Clip start {s:g} s is past the end of {what}, which lasts {duration:.2f} s.")
    e = duration if end is None else min(float(end), duration)
    return s, e


def _check_duration(name: str, seconds: float, budget: VideoBudget, trimmed: bool) -> None:
    if seconds > budget.duration_limit:
        what = "The clip of video" if trimmed else "Video"
        raise UserError(f"{what} {name!r} lasts {seconds:.0f} s, over the limit of {budget.duration_limit:.0f} s "
                        f"(QVL_MAX_VIDEO_SECONDS); choose a shorter clip with start/end.")


def _plan(frame_times: np.ndarray, clip: tuple[float, float], budget: VideoBudget,
          temporal_patch: int) -> tuple[list[float], list[int]]:
    """n target times start + k * D / n, and at each the frame on screen (the last one shown by then)."""
    start, end = clip
    eps = _time_eps(frame_times)
    first = max(0, int(np.searchsorted(frame_times, start + eps, side="right")) - 1)
    last = max(first, int(np.searchsorted(frame_times, end - eps, side="left")) - 1)
    n = _frame_count(end - start, last - first + 1, budget, temporal_patch)
    times = [start + (end - start) * k / n for k in range(n)]
    idx = np.searchsorted(frame_times, np.asarray(times) + eps, side="right") - 1
    return times, [int(i) for i in np.clip(idx, first, last)]


def _time_eps(frame_times: np.ndarray) -> float:
    # Float slack when a target lands exactly on a frame: a thousandth of a second, or less for fast video.
    if len(frame_times) > 1:
        return min(1e-3, float(np.min(np.diff(frame_times))) / 4 or 1e-3)
    return 1e-3


def _effective_fps(indices: list[int], frame_times: np.ndarray, nominal_fps: float, n: int,
                   clip: tuple[float, float]) -> float:
    """The rate the model is told: exact when the frames are a whole number of source frames apart."""
    steps = set(np.diff(indices).tolist())
    if len(steps) == 1 and (step := steps.pop()) > 0 and nominal_fps > 0:
        lo, hi = indices[0], indices[-1]
        expected = np.arange(lo, hi + 1) / nominal_fps
        actual = frame_times[lo:hi + 1] - frame_times[lo] + lo / nominal_fps
        if np.all(np.abs(actual - expected) < 0.25 / nominal_fps):  # constant frame rate over the clip
            return nominal_fps / step
    return float(f"{n / (clip[1] - clip[0]):.12g}")  # 12 digits: 19.999999999999982 (0.1 s in floats) is 20


def estimate(info: VideoInfo, family: FamilySpec, budget: VideoBudget | None = None, *,
             start: float | None = None, end: float | None = None) -> VideoEstimate:
    """Frames, frame size, visual tokens and 7B KV-cache bytes sampling would give, from probe() alone."""
    budget = budget or VideoBudget()
    _check_clip_args(start, end)
    s, e = _clip(None, info.duration, start, end)
    frames = max(1, round(info.frames * (e - s) / info.duration)) if info.duration > 0 else info.frames
    n = _frame_count(e - s, frames, budget, family.temporal_patch_size)
    h, w = _frame_size(n, info.width, info.height, family, budget)
    tokens = n // family.temporal_patch_size * (h // family.factor) * (w // family.factor)
    return VideoEstimate(n, (w, h), tokens, tokens * KV_BYTES_PER_TOKEN_7B)
