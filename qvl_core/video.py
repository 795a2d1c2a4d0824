"""Video files in, evenly sampled frames with their true times out (one sampler for every tab)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .envvars import env_float
from .errors import UserError
from .families import FamilySpec
from .images import smart_resize

# Named defaults and limits (FACTS §5: the model's training used 2 fps, 4..768 frames, even counts).
DEFAULT_FPS = 2.0
MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 64
MAX_FRAMES_LIMIT = 768
DEFAULT_MAX_DURATION_S = env_float("QVL_MAX_VIDEO_SECONDS", 3 * 3600.0)
# Per-frame visual tokens (after the 2x2 merge) and the budget for the whole clip.
DEFAULT_MIN_FRAME_TOKENS = 16
DEFAULT_MAX_FRAME_TOKENS = 256
DEFAULT_TOTAL_VIDEO_TOKENS = 16384  # qwen-vl-utils advises keeping video tokens under 24576


@dataclass(frozen=True)
class VideoBudget:
    """How densely and how finely to sample: frames per second, frame count and token budgets."""

    fps: float = DEFAULT_FPS
    min_frames: int = MIN_FRAMES
    max_frames: int = DEFAULT_MAX_FRAMES
    min_frame_tokens: int = DEFAULT_MIN_FRAME_TOKENS
    max_frame_tokens: int = DEFAULT_MAX_FRAME_TOKENS
    total_tokens: int = DEFAULT_TOTAL_VIDEO_TOKENS
    max_duration_s: float = DEFAULT_MAX_DURATION_S

    def __post_init__(self) -> None:
        if not (0.05 <= self.fps <= 30):
            raise UserError(f"Video fps must be between 0.05 and 30, got {self.fps}.")
        if not (2 <= self.max_frames <= MAX_FRAMES_LIMIT):
            raise UserError(f"Max frames must be between 2 and {MAX_FRAMES_LIMIT}, got {self.max_frames}.")


@dataclass(frozen=True)
class SampledVideo:
    """Frames (T, H, W, 3 uint8, already at the model's size) and when each was shown, in seconds.

    `fps` is the effective sampling rate handed to the processor: frame count / source frames * source fps.
    """

    frames: np.ndarray
    timestamps: list[float]
    fps: float
    source_fps: float
    total_frames: int
    indices: list[int] = field(default_factory=list)
    original_size: tuple[int, int] = (0, 0)

    @property
    def duration(self) -> float:
        return self.total_frames / self.source_fps

    def processor_metadata(self) -> dict:
        """The `video_metadata` entry that makes transformers compute the true time per frame.

        Without it the processor assumes 24 fps (Qwen2.5-VL positions) or cannot stamp
        frames (Qwen3-VL), and every timestamp the model says is wrong.
        """
        return {
            "total_num_frames": self.total_frames,
            "fps": self.source_fps,
            "frames_indices": list(self.indices),
            "duration": self.duration,
            "width": int(self.frames.shape[2]),
            "height": int(self.frames.shape[1]),
        }


def frame_indices(total_frames: int, source_fps: float, budget: VideoBudget, *,
                  temporal_patch: int = 2) -> list[int]:
    """An even number of frame indices, clamped to the budget (FACTS §5), at k * total / n.

    The model places frame k at k / sample_fps seconds with sample_fps = n / total * source_fps, i.e. at
    source frame k * total / n: sampling exactly there keeps every frame within one source frame of the
    time the model assumes (linspace to the last frame drifts by up to a whole sampling step).
    """
    if total_frames < 1:
        raise UserError("Video has no frames.")
    duration = total_frames / source_fps
    upper = min(budget.max_frames, total_frames)
    n = max(budget.min_frames, min(duration * budget.fps, upper))
    n = min(n, upper)  # a clip shorter than min_frames cannot give more frames than it has
    n = max(temporal_patch, int(n // temporal_patch) * temporal_patch)
    # n > total only for 1-frame clips: the only frame repeats so the temporal patch is full.
    return [k * total_frames // n for k in range(n)]


def sample_frames(path: str | Path, family: FamilySpec, budget: VideoBudget | None = None) -> SampledVideo:
    """Decode only the sampled frames of a video and resize them to the model's size."""
    import cv2  # local: OpenCV is heavy and only videos need it

    budget = budget or VideoBudget()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"Video file {p.name!r} does not exist.")
    if p.stat().st_size == 0:
        raise UserError(f"Video file {p.name!r} is empty.")
    cap = cv2.VideoCapture(str(p))
    try:
        if not cap.isOpened():
            raise UserError(f"File {p.name!r} is not a video this app can read.")
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        src_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if total < 1 or not math.isfinite(src_fps) or src_fps <= 0:
            raise UserError(f"Video {p.name!r} has no readable frames (frame count {total}, fps {src_fps:g}).")
        if total / src_fps > budget.max_duration_s:
            raise UserError(
                f"Video {p.name!r} lasts {total / src_fps:.0f} s, over the limit of "
                f"{budget.max_duration_s:.0f} s (QVL_MAX_VIDEO_SECONDS)."
            )
        wanted = frame_indices(total, src_fps, budget, temporal_patch=family.temporal_patch_size)
        frames = _read_frames(cap, wanted)
    finally:
        cap.release()
    if not frames:
        raise UserError(f"Video {p.name!r} could not be decoded (no frame came out).")
    indices = sorted(frames)
    h0, w0 = frames[indices[0]].shape[:2]
    per_frame_max = _per_frame_max_pixels(len(wanted), family, budget)
    new_h, new_w = smart_resize(h0, w0, factor=family.factor,
                                min_pixels=budget.min_frame_tokens * family.pixels_per_token,
                                max_pixels=per_frame_max)
    # A frame that failed to decode repeats its predecessor so timing stays regular.
    ordered = [frames.get(i) for i in wanted]
    for k, f in enumerate(ordered):
        if f is None:
            ordered[k] = ordered[k - 1] if k else frames[indices[0]]
    stack = np.stack([cv2.resize(f, (new_w, new_h), interpolation=cv2.INTER_AREA) for f in ordered])
    return SampledVideo(
        frames=stack,
        timestamps=[i / src_fps for i in wanted],
        fps=len(wanted) / total * src_fps,
        source_fps=src_fps,
        total_frames=total,
        indices=wanted,
        original_size=(w0, h0),
    )


def _per_frame_max_pixels(n_frames: int, family: FamilySpec, budget: VideoBudget) -> int:
    # Two frames share one temporal patch, so the clip costs n/2 frames' worth of tokens.
    share = budget.total_tokens * family.temporal_patch_size // max(n_frames, 1)
    tokens = max(budget.min_frame_tokens, min(budget.max_frame_tokens, share))
    return tokens * family.pixels_per_token


def _read_frames(cap: object, wanted: list[int]) -> dict[int, np.ndarray]:
    """Read the wanted frames as RGB. Sequential grab() is exact on every codec; seeking is not."""
    import cv2

    targets = sorted(set(wanted))
    out: dict[int, np.ndarray] = {}
    pos = 0
    for idx in targets:
        while pos < idx:
            if not cap.grab():  # type: ignore[attr-defined]
                return out
            pos += 1
        ok, frame = cap.read()  # type: ignore[attr-defined]
        pos += 1
        if not ok:
            return out
        out[idx] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return out
