"""The public entry points (sample, probe, frames at times, warm-up) and the jobs they send to a worker."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from qvl_core.errors import UserError
from qvl_core.families import FamilySpec
from qvl_core.media.video.decord import _DecordReader
from qvl_core.media.video.opencv import _OpenCVReader
from qvl_core.media.video.plan import (
    SampledVideo,
    VideoBudget,
    VideoInfo,
    _check_clip_args,
    _check_duration,
    _clip,
    _effective_fps,
    _frame_size,
    _plan,
    _time_eps,
)
from qvl_core.media.video.pyav import _PyAVReader
from qvl_core.media.video.readers import _Failed
from qvl_core.media.video.workers import _call, _prestart, _run

log = logging.getLogger(__name__)

# Decoders in the order "auto" tries them. QVL_VIDEO_BACKEND="decord" (one) or "decord,opencv" (an order).
BACKENDS = ("pyav", "opencv", "decord")
BACKEND_ENV = "QVL_VIDEO_BACKEND"


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

    result, used = _run(_readers(backend), p, _sample_job, (family, budget, start, end), on_message)
    return SampledVideo(frames=out["frames"], backend=used, **result)


def probe(path: str | Path, *, backend: str = "auto") -> VideoInfo:
    """Duration, frame rate, frame count, upright size and rotation, without decoding more than one frame."""
    p = _existing_file(path)
    info, _used = _run(_readers(backend), p, _probe_job, (), lambda msg: None)
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

    order, _used = _run(_readers(backend), p, _frames_at_job, ([float(t) for t in seconds],), on_message)
    return [Image.fromarray(got[j]) for j in order]


def warm_up(backend: str = "auto", *, wait: bool = False) -> None:
    """Have a decoder worker ready, its decoders imported, so a video does not wait ~0.3 s for one.

    Call it when a video arrives (an upload), not at start-up: an app that is never sent a video starts no
    process. Returns at once (the worker imports in the background), or with `wait` once the imports are
    done (benchmarks). Harmless if it fails: the video then starts a worker itself.
    """
    modules = tuple(READERS[n].module for n in _backend_order(backend) if getattr(READERS[n], "module", None))
    if not wait:
        _prestart(modules)
        return
    try:
        _call(_warm_job, (None, "", list(modules)), lambda msg: None)
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


def _readers(backend: str) -> list[tuple[str, type]]:
    """(name, reader class) for each decoder _backend_order names, looked up now (tests swap READERS entries)."""
    return [(name, READERS[name]) for name in _backend_order(backend)]


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


# ---- jobs (run inside the worker) -----------------------------------------------------------------
def _sample_job(reader_cls: type, path: str, family: FamilySpec, budget: VideoBudget,
                start: float | None, end: float | None, *, emit: Callable[[tuple], None]) -> dict:
    name = Path(path).name
    reader = reader_cls(path, emit=emit, max_duration=None if start is not None or end is not None
                        else budget.duration_limit)
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



READERS: dict[str, type] = {"pyav": _PyAVReader, "decord": _DecordReader, "opencv": _OpenCVReader}
