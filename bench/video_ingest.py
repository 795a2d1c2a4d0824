"""Video ingest benchmark: our sampler against qwen-vl-utils and transformers, same frames and frame size.

Makes its own test videos (synthetic testsrc2 content through libx264, a 60 s segment looped by stream
copy, so the keyframe interval is exact), then times every method in a fresh process each and reports
wall time, peak memory (ru_maxrss; for our sampler the app process plus its decoder worker) and the ratio
reference / ours. References (bench/requirements.txt): qwen-vl-utils `fetch_video` with each of its
readers, and transformers' `load_video` with each backend followed by the resize its video processor does.

    python bench/video_ingest.py --quick            # 1-minute 720p and 5-minute 480p versions
    python bench/video_ingest.py                    # 10-minute 720p (2 s and 10 s keyframes), 60-minute 480p
    python bench/video_ingest.py --methods ours:pyav,qwen-vl-utils:decord --configs qwen-default
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench-videos"
SEGMENT_S = 60  # encoded once per (size, keyframe interval), then looped without re-encoding
FACTOR = 28  # Qwen2.5-VL: one visual token covers 28 x 28 pixels


@dataclass(frozen=True)
class VideoSpec:
    name: str
    width: int
    height: int
    fps: int
    seconds: int
    gop: int  # keyframe interval, frames

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}.mp4"


FULL = (VideoSpec("720p30-10min-key2s", 1280, 720, 30, 600, 60),
        VideoSpec("720p30-10min-key10s", 1280, 720, 30, 600, 300),
        VideoSpec("480p30-60min-key8s", 854, 480, 30, 3600, 250))
QUICK = (VideoSpec("720p30-1min-key2s", 1280, 720, 30, 60, 60),
         VideoSpec("720p30-1min-key10s", 1280, 720, 30, 60, 300),
         VideoSpec("480p30-5min-key8s", 854, 480, 30, 300, 250))
# Frame counts: qwen-vl-utils' defaults (2 fps, at most 768 frames) and this app's (2 fps, at most 64).
CONFIGS = {"qwen-default": 768, "app-default": 64}
METHODS = ("ours:pyav", "ours:decord", "ours:opencv",
           "qwen-vl-utils:decord", "qwen-vl-utils:torchcodec", "qwen-vl-utils:torchvision",
           "transformers:pyav", "transformers:decord", "transformers:opencv", "transformers:torchcodec")


# ---- test videos ------------------------------------------------------------------------------------
def make_video(spec: VideoSpec) -> Path:
    import av

    if spec.path.exists():
        return spec.path
    CACHE.mkdir(parents=True, exist_ok=True)
    seg_s = min(SEGMENT_S, spec.seconds)
    segment = CACHE / f"segment-{spec.width}x{spec.height}-{spec.fps}fps-g{spec.gop}-{seg_s}s.mp4"
    if not segment.exists():
        print(f"encoding {segment.name} ...", file=sys.stderr, flush=True)
        src = av.open(f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}:duration={seg_s}", format="lavfi")
        out = av.open(str(segment) + ".part", "w", format="mp4")
        stream = out.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        # A keyframe exactly every `gop` frames (no scene-cut keyframes), B-frames as x264 chooses.
        stream.options = {"g": str(spec.gop), "keyint_min": str(spec.gop), "sc_threshold": "0",
                          "preset": "veryfast", "crf": "23"}
        for frame in src.decode(video=0):
            frame.pict_type = av.video.frame.PictureType.NONE
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        out.close()
        src.close()
        os.replace(str(segment) + ".part", segment)
    loops = spec.seconds // seg_s
    print(f"writing {spec.path.name} ({loops} x {seg_s} s, stream copy) ...", file=sys.stderr, flush=True)
    src = av.open(str(segment))
    in_stream = src.streams.video[0]
    out = av.open(str(spec.path) + ".part", "w", format="mp4")
    out_stream = out.add_stream_from_template(in_stream)
    step = int(Fraction(seg_s) / in_stream.time_base)
    for loop in range(loops):
        src.seek(0, stream=in_stream)
        for packet in src.demux(in_stream):
            if packet.dts is None:
                continue
            packet.pts += loop * step
            packet.dts += loop * step
            packet.stream = out_stream
            out.mux(packet)
    out.close()
    src.close()
    os.replace(str(spec.path) + ".part", spec.path)
    return spec.path


# ---- one measurement (run in its own process) ---------------------------------------------------------
def qwen_size(height: int, width: int, n: int) -> tuple[int, int]:
    """The frame size qwen-vl-utils picks by default for n frames (its VIDEO_* and MODEL_SEQ_LEN defaults)."""
    import math

    min_pixels = 128 * FACTOR * FACTOR
    max_pixels = max(min(768 * FACTOR * FACTOR, 128000 * FACTOR * FACTOR * 0.9 / n * 2), int(min_pixels * 1.05))
    h, w = round(height / FACTOR) * FACTOR, round(width / FACTOR) * FACTOR
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / FACTOR) * FACTOR, math.floor(width / beta / FACTOR) * FACTOR
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / FACTOR) * FACTOR, math.ceil(width * beta / FACTOR) * FACTOR
    return h, w


def our_budget(n: int, h: int, w: int, width: int, height: int):
    """A VideoBudget that makes our sampler give n frames of exactly h x w (checked)."""
    from qvl_core.families import FAMILIES
    from qvl_core.media.video import VideoBudget
    from qvl_core.media.video.plan import _frame_size

    family = FAMILIES["qwen2_5_vl"]
    for tokens in range((h // FACTOR) * (w // FACTOR), (h // FACTOR) * (w // FACTOR) + 64):
        budget = VideoBudget(fps=2.0, max_frames=n, min_frame_tokens=4, max_frame_tokens=tokens,
                             total_tokens=tokens * n, max_duration_s=1e9)
        if _frame_size(n, width, height, family, budget) == (h, w):
            return budget
    raise SystemExit(f"no budget gives {h}x{w} from {width}x{height}")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_s(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_one(method: str, path: str, n: int, h: int, w: int, width: int, height: int) -> dict:
    kind, backend = method.split(":")
    if kind == "ours":
        from qvl_core.families import FAMILIES
        from qvl_core.media import video
        from qvl_core.media.video import workers

        budget = our_budget(n, h, w, width, height)
        video.warm_up(backend, wait=True)  # as the app has it by then: the worker is running, decoders imported
        base, cpu0 = rss_mb(), cpu_s(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = video.sample_frames(path, FAMILIES["qwen2_5_vl"], budget, backend=backend)
        wall = time.perf_counter() - t0
        shape = out.frames.shape
        procs = [worker.proc for worker in workers._idle]
        workers._shutdown_workers()
        for proc in procs:  # reaped, so their peak memory shows in RUSAGE_CHILDREN
            proc.wait()
    elif kind == "qwen-vl-utils":
        os.environ["FORCE_QWENVL_VIDEO_READER"] = backend
        from qwen_vl_utils.vision_process import fetch_video

        base, cpu0 = rss_mb(), cpu_s(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        out = fetch_video({"video": path, "nframes": n, "resized_height": h, "resized_width": w})
        wall = time.perf_counter() - t0
        shape = (out.shape[0], out.shape[2], out.shape[3], out.shape[1])
    else:  # transformers: load_video, then the resize its Qwen video processor would do
        import torch
        from torchvision.transforms.v2 import functional as F
        from transformers.video_utils import load_video

        base, cpu0 = rss_mb(), cpu_s(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        frames, _meta = load_video(path, num_frames=n, backend=backend)
        frames = torch.as_tensor(frames)
        if frames.shape[-1] == 3:
            frames = frames.permute(0, 3, 1, 2)
        frames = F.resize(frames, [h, w], interpolation=F.InterpolationMode.BICUBIC, antialias=True)
        wall = time.perf_counter() - t0
        shape = (frames.shape[0], frames.shape[2], frames.shape[3], frames.shape[1])
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    # CPU: this process during the run, plus our decoder worker's whole life (its imports included).
    cpu = cpu_s(resource.RUSAGE_SELF) - cpu0 + cpu_s(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": cpu, "peak_mb": self_peak + child_peak, "base_mb": base, "shape": list(shape)}


def measure(method: str, spec: VideoSpec, n: int, h: int, w: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--one", method, str(spec.path), str(n), str(h), str(w),
           str(spec.width), str(spec.height)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout > {timeout:.0f} s"}
    if done.returncode != 0:
        lines = [x for x in done.stderr.strip().splitlines() if x.strip()]
        return {"error": (lines[-1] if lines else f"exit {done.returncode}")[:90]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---- the report ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short videos (1 and 5 minutes)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--videos", default="", help="comma-separated names (default: all of the mode)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest counts")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    ap.add_argument("--one", nargs=7, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        method, path, n, h, w, width, height = args.one
        print(json.dumps(run_one(method, path, int(n), int(h), int(w), int(width), int(height))))
        return

    specs = [s for s in (QUICK if args.quick else FULL) if not args.videos or s.name in args.videos.split(",")]
    methods = [m for m in args.methods.split(",") if m]
    print(f"# video ingest: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {' '.join(sys.argv[1:]) or '(full)'}\n")
    rows = []
    for spec in specs:
        make_video(spec)
        for config in args.configs.split(","):
            n = min(CONFIGS[config], spec.seconds * 2)
            h, w = qwen_size(spec.height, spec.width, n)
            results: dict[str, dict] = {}
            for _ in range(args.repeats):  # interleaved, so a busy moment does not hit one method only
                for method in methods:
                    r = measure(method, spec, n, h, w, args.timeout)
                    best = results.get(method)
                    if best is None or ("wall" in r and ("wall" not in best or r["wall"] < best["wall"])):
                        results[method] = r
                    print(f"  {spec.name} {config} {method}: "
                          f"{r.get('wall', r.get('error'))}", file=sys.stderr, flush=True)
            rows.append((spec, config, n, h, w, results))
    report(rows)


def report(rows) -> None:
    print("| video | frames | size | method | wall s | CPU s | peak RSS MB | reference / ours (wall) |")
    print("|---|---|---|---|---|---|---|---|")
    for spec, _config, n, h, w, results in rows:
        ours = results.get("ours:pyav", {}).get("wall")
        refs = {m: r["wall"] for m, r in results.items() if not m.startswith("ours") and "wall" in r}
        for method, r in results.items():
            if "wall" not in r:
                print(f"| {spec.name} | {n} | {w}x{h} | {method} | n/a | | | {r['error']} |")
                continue
            if tuple(r["shape"][:3]) != (n, h, w):
                r["note"] = f" (got {r['shape'][0]} x {r['shape'][2]}x{r['shape'][1]})"
            ratio = f"{r['wall'] / ours:.2f}x" if ours and not method.startswith("ours") else ""
            if method.startswith("ours") and ours and method != "ours:pyav":
                ratio = f"({r['wall'] / ours:.2f}x of ours:pyav)"
            print(f"| {spec.name} | {n} | {w}x{h} | {method} | {r['wall']:.2f} | {r['cpu']:.1f} | {r['peak_mb']:.0f} | "
                  f"{ratio}{r.get('note', '')} |")
        if ours and refs:
            fastest = min(refs, key=refs.get)
            print(f"| {spec.name} | {n} | | **fastest reference: {fastest}** | {refs[fastest]:.2f} | | | "
                  f"**{refs[fastest] / ours:.2f}x** |")


if __name__ == "__main__":
    main()
