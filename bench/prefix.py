"""Benchmark: follow-up questions with the conversation's prefix reused (KV cache) against a full prefill.

One loaded checkpoint, two sessions over it: `reuse` keeps conversation prefixes (the app's default), `cold` has
the budget at 0 (what every request costs without reuse). Runs alternate between them so drift hits both alike.

- image: through `/chat` on a launched app (gradio_client, wall time of each call): a 1024x1024 image at the
  default 1280 visual tokens, `--tokens` new tokens; turn 1, then follow-up questions. Ratio: follow-up / turn 1.
- video: a `--frames`-frame clip through the session (stats.ttft_s): follow-up time to first token / turn 1's.
- retry and edit of the last turn (the KV prefix up to the changed message is reused): ratio to turn 1.
- memory: bytes kept for one conversation (`PrefixCache.stats`).

    python bench/prefix.py [--size mid] [--family qwen2_5_vl] [--tokens 8] [--repeats 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="mid")
    ap.add_argument("--family", default="qwen2_5_vl")
    ap.add_argument("--tokens", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ns = ap.parse_args()

    import numpy as np
    import torch
    from gradio_client import Client, handle_file
    from PIL import Image

    from qvl_core.engine.loading import LoadOptions
    from qvl_core.engine.local import ModelSession
    from qvl_core.engine.prefix_cache import PrefixCache
    from qvl_core.engine.sampling import SamplingParams
    from qvl_core.engine.types import GenerationRequest, VideoBudget
    from qvl_core.tasks.conversation import Conversation
    from qvl_core.testing.tiny import build_checkpoint
    from ui.shell import LAUNCH_KWARGS, build_demo

    work = Path(tempfile.mkdtemp(prefix="qvl-bench-prefix-"))
    image = work / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8)).save(image)
    ckpt = build_checkpoint(work / "ckpt", family=ns.family, size=ns.size)  # random weights: greedy, any answer
    base = ModelSession(LoadOptions(model=str(ckpt), device=ns.device))
    base.load()
    sessions = {"reuse": ModelSession(base.options, loaded=base.loaded, prefix_cache=PrefixCache(4096)),
                "cold": ModelSession(base.options, loaded=base.loaded, prefix_cache=PrefixCache(0))}
    demos = {}
    for name, session in sessions.items():
        demo = build_demo(session)
        demo.queue(default_concurrency_limit=1)
        demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True, **LAUNCH_KWARGS)
        demos[name] = demo
    sampling = {"max_new_tokens": ns.tokens, "temperature": 0.0}
    greedy = SamplingParams(max_new_tokens=ns.tokens, temperature=0.0)

    def chat_turns(name: str) -> list[float]:
        client = Client(demos[name].local_url, verbose=False)
        times = []
        for i, text in enumerate(["Describe this photo.", "What colours are in it?", "Anything in the corner?"]):
            files = [handle_file(str(image))] if i == 0 else []
            t0 = time.perf_counter()
            client.predict(message={"text": text, "files": files}, **sampling, api_name="/chat")
            times.append(time.perf_counter() - t0)
        client.close()
        return times

    def ask(session, conv: Conversation, **kw):
        request = GenerationRequest(turns=conv.turns, sampling=greedy, conversation_id=conv.key, **kw)
        text, stats = session.generate(request)
        return conv.with_answer(text), stats

    def video_turns(name: str) -> tuple[float, float]:
        session = sessions[name]
        budget = VideoBudget(fps=float(ns.frames) / 8.0, max_frames=ns.frames)  # the 8 s clock clip
        conv = Conversation().send("What happens?", [str(ROOT / "assets" / "clock.mp4")])
        conv, first = ask(session, conv, video=budget)
        _, follow = ask(session, conv.send("When does the ball turn blue?"), video=budget)
        return first.ttft_s, follow.ttft_s

    def retry_edit(name: str) -> tuple[float, float, float]:
        session = sessions[name]
        conv = Conversation().send("Describe this photo.", [str(image)])
        conv, first = ask(session, conv)
        conv, _ = ask(session, conv.send("What colours are in it?"))
        _, retried = ask(session, conv.retry())
        edited = conv.retry().edit(len(conv.turns) - 2, "Which colour is most common?")
        _, edit = ask(session, edited)
        return first.total_s, retried.total_s, edit.total_s

    rows: dict[str, dict[str, list[float]]] = {n: {} for n in sessions}
    for _ in range(ns.repeats):
        for name in sessions:  # alternate: machine drift hits both alike
            t = chat_turns(name)
            rows[name].setdefault("chat_first", []).append(t[0])
            rows[name].setdefault("chat_follow", []).extend(t[1:])
            v = video_turns(name)
            rows[name].setdefault("video_first_ttft", []).append(v[0])
            rows[name].setdefault("video_follow_ttft", []).append(v[1])
            r = retry_edit(name)
            rows[name].setdefault("rt_first", []).append(r[0])
            rows[name].setdefault("retry", []).append(r[1])
            rows[name].setdefault("edit", []).append(r[2])
    # One conversation's kept bytes: a fresh store, one image conversation of two turns.
    probe = ModelSession(base.options, loaded=base.loaded, prefix_cache=PrefixCache(4096))
    conv, _ = ask(probe, Conversation().send("Describe this photo.", [str(image)]))
    ask(probe, conv.send("And then?"))
    kept = probe.prefix.stats()
    for demo in demos.values():
        demo.close()

    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rows.items()}
    out = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
           "torch": torch.__version__, "family": ns.family, "size": ns.size, "device": ns.device,
           "tokens": ns.tokens, "frames": ns.frames, "repeats": ns.repeats,
           "medians_s": {n: {k: round(v, 3) for k, v in m.items()} for n, m in med.items()},
           "ratios": {n: {"chat_follow/first": round(m["chat_follow"] / m["chat_first"], 3),
                          "video_follow_ttft/first": round(m["video_follow_ttft"] / m["video_first_ttft"], 3),
                          "retry/first": round(m["retry"] / m["rt_first"], 3),
                          "edit/first": round(m["edit"] / m["rt_first"], 3)} for n, m in med.items()},
           "kept_per_conversation_mb": round(kept.used_bytes / 2**20, 2)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
