"""Benchmark: the same N-session /chat load (bench/concurrency.py) in process versus through a serving engine.

Builds one scripted checkpoint, runs bench/concurrency.py against the app with the model in process, then starts
`transformers serve` (by default with --continuous-batching) on the same checkpoint and runs the same load against
the app with `--backend openai --concurrency N`. Prints both rows, the ratios, and whether the server really
batched (transformers serve logs a fallback to sequential generation for models it cannot batch).

    python bench/serving.py                          # tiny scripted Qwen2.5-VL on CPU, 16 sessions x 3 turns
    python bench/serving.py --sessions 8 --no-cb     # the server without continuous batching
    python bench/serving.py --api-base http://127.0.0.1:8000/v1 --served-model Qwen/Qwen2.5-VL-7B-Instruct \\
        --model /models/Qwen2.5-VL-7B-Instruct -- --device cuda     # an engine you started (vLLM...)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.concurrency import _answer_with_pieces, markdown_header, markdown_row  # noqa: E402

FALLBACK_LOG = "does not support continuous batching"


def run_load(model: str, label: str, out: Path, *, sessions: int, turns: int, max_new_tokens: int,
             app_args: list[str]) -> dict:
    """One bench/concurrency.py run; returns its JSON summary (its own output goes to stderr)."""
    cmd = [sys.executable, str(ROOT / "bench" / "concurrency.py"), "--model", model, "--label", label,
           "--sessions", str(sessions), "--turns", str(turns), "--max-new-tokens", str(max_new_tokens),
           "--json", str(out), "--", *app_args]
    print(f"# {' '.join(cmd[1:])}", file=sys.stderr)
    res = subprocess.run(cmd, cwd=ROOT, stdout=sys.stderr)
    if not out.exists():
        raise SystemExit(f"bench/concurrency.py failed ({res.returncode}) for {label}")
    return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--model", default=None, help="checkpoint folder (default: a tiny scripted one built here)")
    ap.add_argument("--api-base", default=None, help="a server already running (default: start transformers serve)")
    ap.add_argument("--served-model", default=None, help="the name the running server serves (with --api-base)")
    ap.add_argument("--no-cb", action="store_true", help="start transformers serve without --continuous-batching")
    ap.add_argument("--concurrency", type=int, default=None, help="app --concurrency (default: --sessions)")
    ns, app_args = ap.parse_known_args(argv)
    app_args = [a for a in app_args if a != "--"] or ["--device", "cpu"]
    work = Path(tempfile.mkdtemp(prefix="qvl-bench-serving-"))
    model = ns.model
    if model is None:
        from qvl_core.testing.tiny import build_checkpoint

        model = str(build_checkpoint(work / "ckpt", family="qwen2_5_vl",
                                     answer=_answer_with_pieces(ns.max_new_tokens + 8)))
    load = dict(sessions=ns.sessions, turns=ns.turns, max_new_tokens=ns.max_new_tokens)
    local = run_load(model, "in-process", work / "local.json", app_args=app_args, **load)

    server = None
    engine = "server at " + (ns.api_base or "")
    api_base = ns.api_base
    if api_base is None:
        from tests.serving import start_server

        extra = [] if ns.no_cb else ["--continuous-batching"]
        server = start_server(model, work / "server.log", extra=extra)
        server.wait_ready()
        api_base = server.api_base
        engine = "transformers serve" + ("" if ns.no_cb else " --continuous-batching")
    try:
        served_args = ["--backend", "openai", "--api-base", api_base,
                       "--concurrency", str(ns.concurrency or ns.sessions)]
        served = run_load(ns.served_model or model, f"openai → {engine}", work / "served.json",
                          app_args=served_args, **load)
    finally:
        if server is not None:
            server.stop()
    batched = None if server is None else FALLBACK_LOG not in server.log_text()

    a, b = local["summary"], served["summary"]
    machine = local["machine"]
    print(f"# machine: {machine['cpus']} CPUs, {machine['cpu']}")
    print(markdown_header())
    print(markdown_row(local["label"], a))
    print(markdown_row(served["label"], b))
    if a.get("tokens_per_s") and b.get("tokens_per_s"):
        print(f"# tokens/s served / in-process: {b['tokens_per_s'] / a['tokens_per_s']:.2f}x; "
              f"wall in-process / served: {a['wall_s'] / b['wall_s']:.2f}x")
    if batched is not None:
        print("# server batched requests: " + ("yes" if batched else "no: it fell back to sequential generation "
                                                 f"(its log: '{FALLBACK_LOG}')"))
    return 0 if a["errors"] == 0 and b["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
