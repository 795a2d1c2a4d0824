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
crash in C would take the whole app down. The worker stays up between videos (warm_up() starts it early).
"""
from __future__ import annotations

import atexit
import bisect
import importlib
import importlib.util
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from qvl_core.errors import UserError
from qvl_core.families import FamilySpec
from qvl_core.media.images import smart_resize
from qvl_core.settings import env_float

log = logging.getLogger(__name__)

# Named defaults and limits (the model's training used 2 fps, 4..768 frames, even counts).
DEFAULT_FPS = 2.0
MIN_FRAMES = 4
DEFAULT_MAX_FRAMES = 64
MAX_FRAMES_LIMIT = 768
DEFAULT_MAX_DURATION_S = env_float("QVL_MAX_VIDEO_SECONDS", 3 * 3600.0)
# Per-frame visual tokens (after the 2x2 merge) and the budget for the whole clip.
DEFAULT_MIN_FRAME_TOKENS = 16
DEFAULT_MAX_FRAME_TOKENS = 256
DEFAULT_TOTAL_VIDEO_TOKENS = 16384  # qwen-vl-utils advises keeping video tokens under 24576
KV_BYTES_PER_TOKEN_7B = 56 * 1024  # 7B keeps 56 KiB of KV cache per token

# Decoders in the order "auto" tries them. QVL_VIDEO_BACKEND="decord" (one) or "decord,opencv" (an order).
BACKENDS = ("pyav", "opencv", "decord")
BACKEND_ENV = "QVL_VIDEO_BACKEND"
# A decoder that reports nothing (no frame, no progress) for this long is killed and the next one tried.
STALL_TIMEOUT_S = env_float("QVL_VIDEO_STALL_SECONDS", 30.0)
MAX_IDLE_WORKERS = 2
JOBS_PER_WORKER = 64  # then a fresh process: decoders have been seen to grow memory over many files
# PyAV: a run of unneeded packets longer than this is skipped by seeking instead of reading through.
SEEK_MIN_GAP_PACKETS = 500
# PyAV: independent decoders, one per core (each on its own keyframe-aligned part of the video). Frame
# threads inside one decoder stall at every seek; separate decoders do not. Each one holds its reference
# frames (about 200 MB for 4K), hence the cap.
MAX_DECODE_THREADS = 8
MIN_PACKETS_PER_CHUNK = 200
CHUNKS_PER_DECODER = 4
# OpenCV: seek (instead of decoding through) when the next frame is this far ahead.
OPENCV_SEEK_GAP_S = 8.0
# PyAV: 8-bit 4:2:0 frames are scaled as YUV and then converted (see _PyAVReader._rgb).
_PLANAR_420 = frozenset({"yuv420p", "yuvj420p"})
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
    # Read when a budget is made, so `qvl serve --max-video-seconds` (set at startup) applies.
    max_duration_s: float = field(default_factory=lambda: DEFAULT_MAX_DURATION_S)

    def __post_init__(self) -> None:
        if not (0.05 <= self.fps <= 30):
            raise UserError(f"Video fps must be between 0.05 and 30, got {self.fps}.")
        if not (2 <= self.max_frames <= MAX_FRAMES_LIMIT):
            raise UserError(f"Max frames must be between 2 and {MAX_FRAMES_LIMIT}, got {self.max_frames}.")


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


# ---- pure planning --------------------------------------------------------------------------------
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
    if s >= duration:
        what = f"video {name!r}" if name else "the video"
        raise UserError(f"Clip start {s:g} s is past the end of {what}, which lasts {duration:.2f} s.")
    e = duration if end is None else min(float(end), duration)
    return s, e


def _check_duration(name: str, seconds: float, budget: VideoBudget, trimmed: bool) -> None:
    if seconds > budget.max_duration_s:
        what = "The clip of video" if trimmed else "Video"
        raise UserError(f"{what} {name!r} lasts {seconds:.0f} s, over the limit of {budget.max_duration_s:.0f} s "
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


# ---- public entry points -------------------------------------------------------------------------
def sample_frames(path: str | Path, family: FamilySpec, budget: VideoBudget | None = None, *,
                  start: float | None = None, end: float | None = None, backend: str = "auto") -> SampledVideo:
    """Decode only the sampled frames of a video (or of its [start, end) clip, in seconds), model-sized.

    Raises UserError naming the file and the problem for anything a person can fix: a missing, empty,
    damaged or audio-only file, an unsupported codec, a clip out of range or over the length limit.
    """
    budget = budget or VideoBudget()
    p = _existing_file(path)
    _check_clip_args(start, end)
    out: dict[str, Any] = {}

    def on_message(msg: tuple) -> None:
        if msg[0] == "plan":
            _, n, h, w, targets_k = msg
            out["frames"] = np.empty((n, h, w, 3), np.uint8)  # the only full-size buffer: the result
            out["ks"] = targets_k
        elif msg[0] == "frame":  # ("frame", j, shape, fill): fill(array) writes the frame into it
            first, *rest = out["ks"][msg[1]]
            msg[3](out["frames"][first])
            for k in rest:
                out["frames"][k] = out["frames"][first]

    result, used = _run(_backend_order(backend), p, _sample_job, (family, budget, start, end), on_message)
    return SampledVideo(frames=out["frames"], backend=used, **result)


def probe(path: str | Path, *, backend: str = "auto") -> VideoInfo:
    """Duration, frame rate, frame count, upright size and rotation, without decoding more than one frame."""
    p = _existing_file(path)
    info, _used = _run(_backend_order(backend), p, _probe_job, (), lambda msg: None)
    return info


def frame_at(path: str | Path, seconds: float, *, backend: str = "auto") -> Any:
    """The exact frame on screen at `seconds`, upright and at full size, as a PIL image (for a gallery)."""
    return frames_at(path, [seconds], backend=backend)[0]


def frames_at(path: str | Path, seconds: list[float], *, backend: str = "auto") -> list[Any]:
    """frame_at for several times in one pass over the file (a gallery of answer spans)."""
    from PIL import Image

    p = _existing_file(path)
    for t in seconds:
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise UserError(f"Frame time must be a number of seconds from 0 up, got {t!r}.")
    got: dict[int, np.ndarray] = {}

    def on_message(msg: tuple) -> None:
        if msg[0] == "frame":  # ("frame", j, shape, fill)
            got[msg[1]] = np.empty(msg[2], np.uint8)
            msg[3](got[msg[1]])

    order, _used = _run(_backend_order(backend), p, _frames_at_job, ([float(t) for t in seconds],), on_message)
    return [Image.fromarray(got[j]) for j in order]


def warm_up(backend: str = "auto") -> None:
    """Start a decoder worker and import the decoders in it now, so the first video does not wait ~0.3 s.

    For app start-up. Harmless if it fails: the first video then starts the worker itself.
    """
    modules = [READERS[n].module for n in _backend_order(backend) if getattr(READERS[n], "module", None)]
    try:
        _call(_warm_job, (None, "", modules), lambda msg: None)
    except (_Failed, UserError) as exc:
        log.warning("video worker warm-up failed: %s", exc)


def _warm_job(_reader: None, _path: str, modules: list[str], *, emit: Callable[[tuple], None]) -> None:
    for module in modules:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def _existing_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise UserError(f"Video file {p.name!r} does not exist.")
    if not p.is_file():
        raise UserError(f"{p.name!r} is not a video file (it is a folder or a device).")
    if p.stat().st_size == 0:
        raise UserError(f"Video file {p.name!r} is empty (0 bytes).")
    return p


def _backend_order(backend: str) -> tuple[str, ...]:
    """'auto' (QVL_VIDEO_BACKEND, else BACKENDS), one name (that one only) or a comma-separated order."""
    spec = backend
    if backend == "auto":
        spec = os.environ.get(BACKEND_ENV, "").strip() or "auto"
    if spec == "auto":
        return BACKENDS
    names = tuple(n.strip().lower() for n in spec.split(",") if n.strip())
    unknown = [n for n in names if n not in READERS]
    if not names or unknown:
        raise UserError(f"Unknown video backend {spec!r} (from backend= or {BACKEND_ENV}); "
                        f"choose from {', '.join(BACKENDS)} or auto.")
    return names


# ---- running a job: worker processes, stall watchdog, fallback ---------------------------------------
class _Failed(Exception):
    """This decoder could not do the job; the next one may. The message is written for people."""


def _run(order: tuple[str, ...], path: Path, job: Callable, args: tuple,
         on_message: Callable[[tuple], None]) -> tuple[Any, str]:
    """Run `job` with each decoder in `order` until one succeeds. UserErrors (the file's fault) stop at once."""
    failures: list[tuple[str, str]] = []
    for name in order:
        reader = READERS[name]
        module = getattr(reader, "module", None)
        if module and importlib.util.find_spec(module) is None:
            failures.append((name, "not installed"))
            continue
        try:
            return _call(job, (reader, str(path), *args), on_message), name
        except _Failed as exc:
            log.warning("video decoder %s failed on %s: %s", name, path.name, exc)
            failures.append((name, str(exc)))
    tried = [n for n, why in failures if why != "not installed"]
    if not tried:
        raise UserError(f"No video decoder is installed to read {path.name!r} (tried {', '.join(order)}).")
    first = dict(failures)[tried[0]]
    also = f" (also tried: {', '.join(tried[1:])})" if len(tried) > 1 else ""
    raise UserError(f"{first[:1].upper()}{first[1:]}{also}.")


class _Worker:
    """One decoder process: jobs go down one pipe, progress, frames and the result come back up another."""

    def __init__(self) -> None:
        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # same imports as here
        boot = ("import sys; from qvl_core.media.video import _worker_main; "
                "_worker_main(int(sys.argv[1]), int(sys.argv[2]))")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", boot, str(job_r), str(res_w)],
                                         pass_fds=(job_r, res_w), env=env, stdin=subprocess.DEVNULL)
        finally:
            os.close(job_r)
            os.close(res_w)
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.jobs_done = 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.close()

    def close(self) -> None:
        """Close the pipes; the worker exits when it sees its job pipe closed, and is reaped in the background."""
        for conn in (self.jobs, self.results):
            conn.close()
        if self.proc.poll() is None:
            threading.Thread(target=_reap, args=(self.proc,), daemon=True).start()


def _reap(proc: subprocess.Popen) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # stuck in a decoder call: it will not notice the closed pipe
        proc.kill()
        proc.wait()


_idle: list[_Worker] = []
_idle_lock = threading.Lock()


def _checkout() -> _Worker:
    with _idle_lock:
        while _idle:
            worker = _idle.pop()
            if worker.proc.poll() is None:
                return worker
            worker.close()
    return _Worker()


def _checkin(worker: _Worker) -> None:
    worker.jobs_done += 1
    with _idle_lock:
        if worker.jobs_done < JOBS_PER_WORKER and len(_idle) < MAX_IDLE_WORKERS:
            _idle.append(worker)
            return
    worker.close()  # the worker exits when its job pipe closes


@atexit.register
def _shutdown_workers() -> None:
    with _idle_lock:
        workers, _idle[:] = list(_idle), []
    for worker in workers:
        worker.close()


def _call(job: Callable, args: tuple, on_message: Callable[[tuple], None]) -> Any:
    """Run one job in a worker; kill it if it goes quiet for STALL_TIMEOUT_S or dies, then report _Failed."""
    reader, name = getattr(args[0], "name", "decoder"), Path(args[1]).name or "(warm-up)"
    worker = None
    for attempt in range(2):  # an idle worker may have died since its last job: one retry with a new one
        try:
            worker = _checkout()
            worker.jobs.send((job, args))
            break
        except OSError as exc:
            if worker is not None:
                worker.kill()
                worker = None
            if attempt:  # no processes allowed here: decode in this process, without the watchdog
                log.warning("video worker process unavailable (%s); decoding in-process", exc)
                return _run_inline(job, args, on_message)
    finished = False
    try:
        while True:
            if not worker.results.poll(STALL_TIMEOUT_S):
                raise _Failed(f"decoding {name!r} with {reader} made no progress for {STALL_TIMEOUT_S:.0f} s")
            try:
                kind, payload = worker.results.recv()
            except (EOFError, OSError):
                code = worker.proc.wait()
                raise _Failed(f"decoding {name!r} with {reader} crashed (exit status {code})") from None
            if kind == "msg" and payload[0] == "frame":  # its pixels follow as raw bytes
                filled = []

                def fill(dest: np.ndarray, conn: Connection = worker.results, filled: list = filled) -> None:
                    conn.recv_bytes_into(memoryview(dest).cast("B"))
                    filled.append(True)

                on_message((*payload, fill))
                if not filled:
                    worker.results.recv_bytes()
                continue
            if kind == "msg":
                on_message(payload)
                continue
            finished = True
            if kind == "ok":
                return payload
            if kind == "refused":
                raise UserError(payload)
            raise _Failed(payload)
    finally:
        if finished:
            _checkin(worker)
        else:  # stalled, crashed, or this thread was interrupted mid-job: the process cannot be reused
            worker.kill()


def _run_inline(job: Callable, args: tuple, on_message: Callable[[tuple], None]) -> Any:
    def emit(msg: tuple) -> None:
        if msg[0] == "frame":
            frame = msg[2]

            def fill(dest: np.ndarray) -> None:
                dest[...] = frame

            on_message(("frame", msg[1], frame.shape, fill))
        else:
            on_message(msg)

    try:
        return job(*args, emit=emit)
    except UserError:
        raise
    except Exception as exc:  # any decoder failure means "try the next decoder"
        raise _Failed(_describe(exc)) from exc


def _describe(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, _Failed) else f"{type(exc).__name__}: {exc}"


def _send(results: Connection, msg: tuple) -> None:
    """Worker side of emit: frames go as a header and then their raw bytes (no pickling of pixels)."""
    if msg[0] == "frame":
        frame = np.ascontiguousarray(msg[2])
        results.send(("msg", ("frame", msg[1], frame.shape)))
        results.send_bytes(memoryview(frame).cast("B"))
    else:
        results.send(("msg", msg))


def _worker_main(job_fd: int, result_fd: int) -> None:
    """The worker process: run jobs until the job pipe closes. Exits if the app that started it is gone."""
    jobs = Connection(job_fd, writable=False)
    results = Connection(result_fd, readable=False)
    parent = os.getppid()

    def watch_parent() -> None:  # runs even while a decoder call hangs (they release the GIL)
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()
    while True:
        try:
            job, args = jobs.recv()
        except EOFError:
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the job names a module this process cannot import
            results.send(("failed", f"could not start: {_describe(exc)}"))
            continue
        try:
            result = job(*args, emit=partial(_send, results))
        except UserError as exc:
            results.send(("refused", str(exc)))
        except Exception as exc:  # noqa: BLE001 - reported to the app, which tries the next decoder
            results.send(("failed", _describe(exc)))
        else:
            results.send(("ok", result))


# ---- jobs (run inside the worker) -----------------------------------------------------------------
def _sample_job(reader_cls: type, path: str, family: FamilySpec, budget: VideoBudget,
                start: float | None, end: float | None, *, emit: Callable[[tuple], None]) -> dict:
    name = Path(path).name
    reader = reader_cls(path, emit=emit, max_duration=None if start is not None or end is not None
                        else budget.max_duration_s)
    try:
        clip = _clip(name, reader.duration, start, end)
        _check_duration(name, clip[1] - clip[0], budget, trimmed=start is not None or end is not None)
        target_times, planned = _plan(reader.frame_times, clip, budget, family.temporal_patch_size)
        n = len(planned)
        h, w = _frame_size(n, reader.width, reader.height, family, budget)
        unique = sorted(set(planned))
        ks = [[k for k, i in enumerate(planned) if i == u] for u in unique]  # a frame can serve two times
        emit(("plan", n, h, w, ks))
        indices, times = list(planned), [0.0] * n
        targets = [(u, target_times[ks_[0]]) for u, ks_ in zip(unique, ks, strict=True)]
        for j, index, t, frame in reader.read(targets, (h, w)):
            emit(("frame", j, frame))
            for k in ks[j]:
                indices[k], times[k] = index, t
        fps = _effective_fps(indices, reader.frame_times, reader.fps, n, clip)
        return {"timestamps": times, "fps": fps, "source_fps": reader.fps, "total_frames": reader.frames,
                "indices": indices, "original_size": (reader.width, reader.height), "start": times[0]}
    finally:
        reader.close()


def _probe_job(reader_cls: type, path: str, *, emit: Callable[[tuple], None]) -> VideoInfo:
    reader = reader_cls(path, emit=emit, index=False)
    try:
        return VideoInfo(reader.duration, reader.fps, reader.frames, reader.width, reader.height,
                         reader.rotation, reader.name)
    finally:
        reader.close()


def _frames_at_job(reader_cls: type, path: str, seconds: list[float], *,
                   emit: Callable[[tuple], None]) -> list[int]:
    """Emit the frame on screen at each time (each distinct frame once); return which one each time got."""
    reader = reader_cls(path, emit=emit)
    try:
        for t in seconds:
            if t > reader.duration:
                raise UserError(f"Time {t:g} s is past the end of video {Path(path).name!r}, "
                                f"which lasts {reader.duration:.2f} s.")
        eps = _time_eps(reader.frame_times)
        wanted = [max(0, int(np.searchsorted(reader.frame_times, t + eps, side="right")) - 1) for t in seconds]
        unique = sorted(set(wanted))
        targets = [(i, seconds[wanted.index(i)]) for i in unique]
        for j, _index, _t, frame in reader.read(targets, None):
            emit(("frame", j, frame))
        return [unique.index(i) for i in wanted]
    finally:
        reader.close()


# ---- decoders (run inside the worker) -------------------------------------------------------------
# Each reader opens a file and exposes: name, frames, fps, duration, width/height (upright), rotation
# (clockwise degrees applied), frame_times (seconds of every frame in display order, first = 0; nominal
# for OpenCV), and read(targets, size) yielding (target position, frame index, real time, RGB frame) for
# targets = [(frame index, target time)] sorted by index, each frame resized to size = (h, w) or kept
# full size when size is None. A UserError is the file's fault (no decoder will do better); anything
# else makes the caller try the next decoder.
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


class _PyAVReader:
    """FFmpeg through PyAV: exact presentation times from the packets, keyframe seeks, skipped non-reference frames."""

    name = "pyav"
    module = "av"

    def __init__(self, path: str, *, emit: Callable[[tuple], None], index: bool = True,
                 max_duration: float | None = None) -> None:
        import av

        self.path, self.emit = path, emit
        self._scalers = threading.local()
        name = Path(path).name
        try:
            self.container = av.open(path, metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise _not_a_video(path, exc.strerror or type(exc).__name__) from None
        try:
            self._open_stream(name, index, max_duration)
        except BaseException:
            self.container.close()
            raise

    def _open_stream(self, name: str, index: bool, max_duration: float | None) -> None:
        container = self.container
        if not container.streams.video:
            if container.streams.audio:
                raise UserError(f"File {name!r} has no video stream: it holds only audio.")
            raise UserError(f"File {name!r} is not a video: it has no video stream.")
        self.stream = stream = container.streams.video[0]
        cc = stream.codec_context
        if cc is None or not getattr(cc, "name", None):  # FFmpeg has no decoder for it
            raise _Failed(f"video {name!r} uses a video codec this app cannot decode")
        cc.thread_type = "AUTO"  # frame and slice threads: every core on one video
        cc.thread_count = 0
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        declared = (float(stream.duration * stream.time_base) if stream.duration
                    else container.duration / 1e6 if container.duration else 0.0)
        if max_duration is not None and declared > max_duration:
            raise UserError(f"Video {name!r} lasts {declared:.0f} s, over the limit of {max_duration:.0f} s "
                            f"(QVL_MAX_VIDEO_SECONDS); choose a shorter clip with start/end.")
        if index:
            self._index(name, declared)
            self.fps = float(rate) if rate else (self.frames - 1) / max(self.frame_times[-1], 1e-9)
            self.container.seek(self.dts[0], stream=stream, backward=True)
        first = self._first_frame(name)
        self.rotation = (-int(getattr(first, "rotation", 0) or 0)) % 360
        w, h = first.width, first.height
        self.width, self.height = (h, w) if self.rotation in (90, 270) else (w, h)
        if not index:
            self.fps = float(rate) if rate else 0.0
            self.duration = declared or (stream.frames / self.fps if self.fps and stream.frames else 0.0)
            self.frames = stream.frames or max(1, round(self.duration * self.fps))
            self.frame_times = np.arange(self.frames) / self.fps if self.fps else np.zeros(1)

    def _first_frame(self, name: str) -> Any:
        import av

        try:
            for frame in self.container.decode(self.stream):
                return frame
        except av.error.FFmpegError as exc:
            raise _Failed(f"video {name!r} could not be decoded ({exc.strerror})") from None
        raise UserError(f"Video {name!r} has no frames.")

    def _index(self, name: str, declared: float) -> None:
        """One pass over the packets (no decoding): every frame's time, keyframes, decode order."""
        import av

        pts: list[int] = []
        dts: list[int] = []
        key: list[bool] = []
        shown: list[bool] = []
        try:
            for packet in self.container.demux(self.stream):
                if packet.size == 0:
                    continue
                if packet.pts is None:
                    raise _Failed(f"video {name!r} has frames without timestamps")
                pts.append(packet.pts)
                dts.append(packet.dts if packet.dts is not None else packet.pts)
                key.append(packet.is_keyframe)
                shown.append(not packet.is_discard)
                if len(pts) % 8192 == 0:
                    self.emit(("progress", len(pts)))
        except av.error.FFmpegError:
            pass  # a damaged tail: the length check below decides whether what was read is enough
        if not pts:
            raise UserError(f"Video {name!r} has no frames.")
        self.pts, self.dts, self.key = pts, dts, key
        self.pos_of = {p: i for i, p in enumerate(pts)}
        self._gop_starts = [i for i, k in enumerate(key) if k or i == 0]
        self._seeks_by_pts = bool({"mov", "mp4", "matroska", "webm"} & set(self.container.format.name.split(",")))
        display = sorted(p for p, s in zip(pts, shown, strict=True) if s)
        if len(set(display)) != len(display):
            raise _Failed(f"video {name!r} has frames with duplicate timestamps")
        self.display_pts = display
        tb = self.stream.time_base
        # Exact integer ticks times the numerator, then one correctly rounded division: the same floats as
        # float(Fraction) per frame, without an hour of video costing a second in Fraction arithmetic.
        if (display[-1] - display[0]) * tb.numerator < 2**53:  # exact in float64 (always, but for odd files)
            ticks = (np.asarray(display, np.int64) - display[0]) * tb.numerator
            self.frame_times = ticks.astype(np.float64) / tb.denominator
        else:
            self.frame_times = np.asarray([float((p - display[0]) * tb) for p in display])
        self.frames = len(display)
        # The last frame lasts as long as the one before it (or one frame at the nominal rate).
        if self.frames > 1:
            step = Fraction(display[-1] - display[-2]) * tb
        else:
            rate = self.stream.average_rate or self.stream.guessed_rate
            step = 1 / Fraction(rate) if rate else Fraction(1, 25)
        self.duration = float((display[-1] - display[0]) * tb + step)
        if declared and self.duration < 0.9 * declared - 1.0:
            raise UserError(f"Video {name!r} is truncated or damaged: it declares {declared:.1f} s but only "
                            f"the first {self.duration:.1f} s can be read.")

    def read(self, targets: list[tuple[int, float]], size: tuple[int, int] | None):
        want = {self.display_pts[i]: j for j, (i, _t) in enumerate(targets)}
        gop_start = self._gop_starts
        # For each GOP with a wanted frame: the last packet (decode order) that must be decoded.
        last_needed: dict[int, int] = {}
        glued: set[int] = set()  # GOPs whose leading pictures need the GOP before, decoded in one go
        for p in want:
            i = self.pos_of[p]
            g = bisect.bisect_right(gop_start, i) - 1
            last_needed[g] = max(last_needed.get(g, -1), i)
            if g > 0 and p < self.pts[gop_start[g]]:  # open-GOP leading picture: refers to the GOP before
                last_needed[g - 1] = gop_start[g] - 1
                glued.add(g)
        gops = [(g, gop_start[g], last_needed[g]) for g in sorted(last_needed)]
        threads = _decode_threads()
        # More pieces than decoders: whoever finishes first takes the next, so no core idles at the end.
        chunks = _split_work(gops, glued, threads * CHUNKS_PER_DECODER)
        if len(chunks) == 1 or threads == 1:
            yield from self._decode(self.container, self.stream, gops, want, size, self.emit)
        else:
            yield from self._decode_parallel(chunks, min(threads, len(chunks)), want, size)

    def _decode(self, container: Any, stream: Any, gops: list[tuple[int, int, int]], want: dict[int, int],
                size: tuple[int, int] | None, emit: Callable[[tuple], None]):
        """Decode the wanted frames of `gops` [(gop, first packet, last needed packet)]: seek to each run of
        GOPs, send every packet up to the last wanted one (non-reference frames skipped), drain."""
        import av

        firsts = {first for _g, first, _last in gops}
        pending = {p: j for p, j in want.items() if self._gop_start_at(self.pos_of[p]) in firsts}
        cc = stream.codec_context
        packets = None
        cursor = -1  # decode position of the last packet taken from the demuxer
        for _g, first, last in gops:
            if packets is None or first - cursor > SEEK_MIN_GAP_PACKETS or first <= cursor:
                if packets is not None:
                    yield from self._frames(cc.decode(None), pending, size)  # drain before the seek flushes
                container.seek(self._seek_target(first), stream=stream, backward=True)
                packets = container.demux(stream)
                cursor = -1
            for packet in packets:
                if packet.size == 0:
                    continue
                i = self.pos_of.get(packet.pts, -1)
                if cursor == -1 and i > first:  # the seek overshot: start over from the top of the file
                    container.seek(self.dts[0], stream=stream, backward=True)
                    packets = container.demux(stream)
                    cursor = -2
                    continue
                cursor = max(cursor, i)
                if i % 512 == 0:
                    emit(("progress", i))
                if i < first:
                    continue
                cc.skip_frame = "DEFAULT" if packet.pts in pending or i == first else "NONREF"
                try:
                    frames = cc.decode(packet)
                except av.error.FFmpegError:
                    frames = []  # a damaged packet: if a wanted frame is lost, the check below says so
                yield from self._frames(frames, pending, size)
                if i >= last:
                    break
        if packets is not None:
            yield from self._frames(cc.decode(None), pending, size)
        if pending:
            missing = sorted(float((p - self.display_pts[0]) * self.stream.time_base) for p in pending)
            raise _Failed(f"the frames of {Path(self.path).name!r} at {', '.join(f'{t:.2f}' for t in missing[:3])} s "
                          "could not be decoded")

    def _seek_target(self, first: int) -> int:
        """The timestamp to seek to so as to land on the keyframe at decode position `first`.

        MP4/MOV and Matroska seek by presentation time; with B-frames a keyframe is shown after it is
        decoded, so its decode time lands a whole GOP early (correct, since we read forward, but a GOP
        demuxed for nothing per seek). Other demuxers (MPEG-TS, AVI) seek by decode time, where the
        presentation time would overshoot. The time is kept below the next keyframe's decode time.
        """
        if not self._seeks_by_pts:
            return self.dts[first]
        g = bisect.bisect_right(self._gop_starts, first)
        limit = self.dts[self._gop_starts[g]] - 1 if g < len(self._gop_starts) else self.pts[first]
        return max(self.dts[first], min(self.pts[first], limit))

    def _gop_start_at(self, pos: int) -> int:
        return self._gop_starts[bisect.bisect_right(self._gop_starts, pos) - 1]

    def _decode_parallel(self, chunks: list[list[tuple[int, int, int]]], threads: int, want: dict[int, int],
                         size: tuple[int, int] | None):
        """`threads` decoders, each on its own thread (PyAV decodes without the GIL), taking chunks in turn."""
        import queue

        import av

        results: queue.SimpleQueue = queue.SimpleQueue()
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for chunk in chunks:
            todo.put(chunk)
        stop = threading.Event()

        def work() -> None:
            try:
                with av.open(self.path, metadata_errors="ignore") as container:
                    stream = container.streams.video[0]
                    stream.codec_context.thread_type = "AUTO"
                    stream.codec_context.thread_count = max(1, _cpu_count() // threads)
                    while not stop.is_set():
                        try:
                            chunk = todo.get_nowait()
                        except queue.Empty:
                            return
                        for item in self._decode(container, stream, chunk, want, size, lambda msg: None):
                            results.put(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread, which raises it
                results.put(exc)
            finally:
                results.put(None)

        workers = [threading.Thread(target=work, daemon=True) for _ in range(threads)]
        for t in workers:
            t.start()
        running = len(workers)
        try:
            while running:
                try:
                    item = results.get(timeout=1.0)
                except queue.Empty:
                    self.emit(("progress", running))
                    continue
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            stop.set()

    def _frames(self, frames: list, pending: dict[int, int], size: tuple[int, int] | None):
        for frame in frames:
            j = pending.pop(frame.pts, None)
            if j is None:
                continue
            index = bisect.bisect_left(self.display_pts, frame.pts)
            yield j, index, float(self.frame_times[index]), self._rgb(frame, size)

    def _rgb(self, frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        turn = self.rotation // 90
        # One pair of scalers per decoding thread, kept across frames, each single-threaded: frame.reformat
        # would build a new swscale context (and its thread pool) for every frame, which cost more CPU
        # than the conversion itself; the decoders already keep every core busy.
        scalers = getattr(self._scalers, "pair", None)
        if scalers is None:
            from av.video.reformatter import VideoReformatter

            scalers = self._scalers.pair = (VideoReformatter(), VideoReformatter())
        scale, convert = scalers
        if size is not None:
            h, w = size if turn % 2 == 0 else size[::-1]  # resize in the stored orientation, then turn
            if frame.format.name in _PLANAR_420:
                # Scale the YUV planes first, then convert at the small size: swscale's unscaled
                # yuv->rgb path is several times faster than its scaling one.
                frame = scale.reformat(frame, width=w, height=h, interpolation="BILINEAR", threads=1)
            else:
                frame = scale.reformat(frame, width=w, height=h, format="rgb24", interpolation="BILINEAR",
                                       threads=1)
        arr = convert.reformat(frame, format="rgb24", threads=1).to_ndarray()
        return np.ascontiguousarray(np.rot90(arr, -turn)) if turn else arr

    def close(self) -> None:
        self.container.close()


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


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _decode_threads() -> int:
    return max(1, min(MAX_DECODE_THREADS, _cpu_count()))


def _split_work(gops: list[tuple[int, int, int]], glued: set[int], parts: int) -> list[list[tuple[int, int, int]]]:
    """Cut the GOPs to decode into up to `parts` contiguous runs of about equal work (packets to decode).

    Small jobs stay in one piece: a decoder per core only pays off once each has a few GOPs of work.
    """
    work = [last - first + 1 for _g, first, last in gops]
    total = sum(work)
    parts = max(1, min(parts, len(gops), total // MIN_PACKETS_PER_CHUNK))
    chunks: list[list[tuple[int, int, int]]] = [[]]
    done = 0
    for gop, w in zip(gops, work, strict=True):
        if chunks[-1] and done >= total * len(chunks) / parts and gop[0] not in glued:
            chunks.append([])
        chunks[-1].append(gop)
        done += w
    return chunks


def _opencv_rotation(path: str) -> int:
    import cv2

    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360 if cap.isOpened() else 0
    finally:
        cap.release()


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


READERS: dict[str, type] = {"pyav": _PyAVReader, "decord": _DecordReader, "opencv": _OpenCVReader}
