"""Benchmark: load time, time to first token, decode speed, and the app path's overhead over bare generate.

Both paths answer the same image + prompt with the same scripted checkpoint, so each produces exactly
`--tokens` tokens (the answer is longer than that): the app path is a `gradio_client` call to `/chat` on
the launched app; the bare path is the processor plus `model.generate` in this process. Runs alternate
(bare, app, bare, app, ...) so drift in machine speed hits both alike; medians are reported.

    python bench/generation.py [--sizes tiny mid] [--tokens 128] [--repeats 5] [--device cpu|cuda]
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


def _answer_with_pieces(n: int) -> str:
    # The scripted checkpoint cuts its answer into pieces of 1, 2, 3... characters: one token each.
    words = "the quick brown fox jumps over a lazy dog while grounding boxes stay exact "
    text = ""
    while len(text) < n * (n + 1) // 2 + n:
        text += words
    return text


def bench_size(size: str, *, tokens: int, repeats: int, device: str, image: Path) -> dict:
    import torch
    from gradio_client import Client, handle_file

    from qvl_core.engine.loading import LoadOptions
    from qvl_core.engine.local import ModelSession
    from qvl_core.engine.messages import user_turn
    from qvl_core.engine.sampling import SamplingParams
    from qvl_core.engine.types import GenerationRequest
    from qvl_core.testing.tiny import build_checkpoint
    from ui.shell import LAUNCH_KWARGS, build_demo

    work = Path(tempfile.mkdtemp(prefix=f"qvl-bench-{size}-"))
    ckpt = build_checkpoint(work / "ckpt", family="qwen2_5_vl", answer=_answer_with_pieces(tokens + 8), size=size)
    t0 = time.perf_counter()
    session = ModelSession(LoadOptions(model=str(ckpt), device=device))
    lm = session.load()
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in lm.model.parameters())

    prompt, max_image_tokens = "Describe this image.", 256
    request = GenerationRequest(turns=(user_turn(prompt, [str(image)]),),
                                sampling=SamplingParams(max_new_tokens=tokens, repetition_penalty=1.0),
                                max_image_tokens=max_image_tokens)

    def bare() -> float:
        # What a cookbook script does: processor + generate, greedy, same inputs.
        start = time.perf_counter()
        prepared = session.prepare(request)
        inputs = prepared.inputs.to(lm.model.device)
        with torch.inference_mode():
            out = lm.model.generate(**inputs, max_new_tokens=tokens, do_sample=False, temperature=None, top_p=None,
                                    top_k=None, repetition_penalty=1.0)
        if device == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
        return elapsed

    demo = build_demo(session)
    demo.queue(default_concurrency_limit=1)
    demo.launch(prevent_thread_lock=True, server_port=_free_port(), quiet=True, **LAUNCH_KWARGS)
    client = Client(demo.local_url, verbose=False)

    def app() -> float:
        client.predict(api_name="/chat_reset")  # each call answers a fresh one-turn conversation
        start = time.perf_counter()
        client.predict(message={"text": prompt, "files": [handle_file(str(image))]}, system="",
                       max_new_tokens=tokens, temperature=0.0, repetition_penalty=1.0,
                       max_image_tokens=max_image_tokens, api_name="/chat")
        return time.perf_counter() - start

    bare(), app()  # warm-up: first calls pay one-off costs (allocator, upload path)
    bare_times, app_times, stats = [], [], []
    for _ in range(repeats):
        bare_times.append(bare())
        app_times.append(app())
        stats.append(session.generate(request)[1])
    demo.close()
    assert all(s.completion_tokens == tokens for s in stats)
    bare_med, app_med = statistics.median(bare_times), statistics.median(app_times)
    return {
        "size": size, "params_m": round(n_params / 1e6, 1), "device": device, "dtype": lm.dtype,
        "attn": lm.attn, "tokens": tokens, "prompt_tokens": stats[0].prompt_tokens, "load_s": round(load_s, 2),
        "ttft_s": round(statistics.median(s.ttft_s for s in stats), 4),
        "decode_tps": round(statistics.median(s.decode_tps for s in stats), 1),
        "bare_s": round(bare_med, 3), "app_s": round(app_med, 3), "app_over_bare": round(app_med / bare_med, 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=["tiny", "mid"])
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    ns = ap.parse_args()
    image = ROOT / "assets" / "shapes.png"
    rows = [bench_size(s, tokens=ns.tokens, repeats=ns.repeats, device=ns.device, image=image) for s in ns.sizes]
    print(f"# machine: {platform.machine()} {platform.processor() or ''} | python {platform.python_version()}")
    cols = ["size", "params_m", "device", "dtype", "prompt_tokens", "load_s", "ttft_s", "decode_tps", "bare_s", "app_s",
            "app_over_bare"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    if ns.json:
        ns.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
