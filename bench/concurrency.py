"""Benchmark: N simultaneous `gradio_client` sessions, each a multi-turn /chat: completion, queue wait, tokens/s.

Every session opens its own `Client`, uploads its own image on the first turn and sends T messages that
carry its own secret word, each answered with at most M new tokens. All sessions start together. For every
request the client side records, from gradio_client's status stream: submit, the first PROCESSING status
(the request left the queue: *queue wait*), the first streamed output and the end (*end-to-end*).
gradio_client looks at its message queue every 50 ms, so client-side times have that resolution. Token
counts and TTFT come from the server: the app runs in a child process whose backend is wrapped to write
one JSON line per generation (tokens, prompt tokens, TTFT from the GPU lock to the first token, finish
reason, time inside the backend). *busy* is the backend's time summed over requests / wall time: near
100% means the one GPU queue was never idle, so the waits are the price of serving one at a time.

    python bench/concurrency.py                       # tiny scripted checkpoint on CPU, 16 sessions x 3 turns
    python bench/concurrency.py --model /models/Qwen2.5-VL-7B-Instruct --max-new-tokens 128 -- --device cuda
    python bench/concurrency.py -- --backend openai --api-base http://127.0.0.1:8000/v1 --concurrency 16
    python bench/concurrency.py --url http://127.0.0.1:7860   # an app already running (no token counts)

Flags after `--` (or any flag this script does not know) go to `app.py` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STATS_ENV = "QVL_BENCH_STATS"  # the child app appends one JSON line per generation to this file
TAG = re.compile(r"\[req (s\d+t\d+)\]")
APP_START_TIMEOUT_S = 900  # loading a 7B checkpoint from a cold disk can take minutes


@dataclass
class RequestRecord:
    """One /chat request as the client saw it (seconds since the common start), plus the server's stats."""

    tag: str
    session: int
    turn: int
    submit: float
    processing: float | None = None
    first_output: float | None = None
    end: float | None = None
    ranks: list[tuple[int | None, int | None]] = field(default_factory=list)  # (rank, queue_size) seen
    error: str | None = None
    reply_chars: int = 0
    server: dict | None = None

    @property
    def queue_wait(self) -> float | None:
        # Without a PROCESSING status the first output bounds the wait from above.
        start = self.processing if self.processing is not None else self.first_output
        return None if start is None else start - self.submit

    @property
    def ttft(self) -> float | None:
        if self.first_output is None:
            return None
        return self.first_output - (self.processing if self.processing is not None else self.submit)

    @property
    def e2e(self) -> float | None:
        return None if self.end is None else self.end - self.submit


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100)
    return ordered[int(rank) - 1]


# ---- the app side (child process) -------------------------------------------------------------------------
class CountingBackend:
    """Delegates to the real backend; appends one JSON line per generation to the stats file."""

    def __init__(self, inner: object, path: Path) -> None:
        self._inner = inner
        self._path = path
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    @property
    def family(self):
        return self._inner.family

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def stream(self, request, **kwargs):
        last_user = next((t.text for t in reversed(request.turns) if t.role == "user"), "")
        match = TAG.search(last_user)
        row: dict = {"tag": match.group(1) if match else None, "t_call": time.time(), "turns": len(request.turns)}
        last = None
        try:
            for chunk in self._inner.stream(request, **kwargs):
                row.setdefault("t_first_chunk", time.time())
                last = chunk
                yield chunk
        except BaseException as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            row["t_end"] = time.time()
            stats = last.stats if last is not None else None
            if stats is not None:
                row.update(completion_tokens=stats.completion_tokens, prompt_tokens=stats.prompt_tokens,
                           ttft_s=stats.ttft_s, decode_tps=stats.decode_tps, finish_reason=stats.finish_reason,
                           peak_gpu_mb=stats.peak_gpu_mb)
            else:
                row.update(completion_tokens=last.tokens if last is not None else 0, finish_reason="closed")
            with self._lock, self._path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def generate(self, request):
        return self._inner.generate(request)


def serve(app_args: list[str]) -> int:
    """Run app.py's main with every backend it opens wrapped in CountingBackend."""
    import ui.launch

    path = Path(os.environ[STATS_ENV])
    real_open = ui.launch.open_backend

    def counting_open(*args, **kwargs):
        return CountingBackend(real_open(*args, **kwargs), path)

    ui.launch.open_backend = counting_open
    return ui.launch.main(app_args)


# ---- the client side --------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answer_with_pieces(n: int) -> str:
    # The scripted checkpoint cuts its answer into pieces of 1, 2, 3... characters, one token each: an
    # answer longer than the token budget makes every reply exactly max_new_tokens long.
    words = "the quick brown fox jumps over a lazy dog while the queue keeps everyone in order "
    text = ""
    while len(text) < n * (n + 1) // 2 + n:
        text += words
    return text


def _session_image(index: int, folder: Path) -> Path:
    """A small image unique to one session (its own colour and noise)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(index)
    pixels = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    pixels[:, :, index % 3] = (index * 37) % 256
    out = folder / f"session-{index:02d}.png"
    Image.fromarray(pixels).save(out)
    return out


def _wait_for_app(url: str, proc: subprocess.Popen | None, log_path: Path | None) -> None:
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text()[-4000:] if log_path else ""
            raise SystemExit(f"the app exited with code {proc.returncode} before serving:\n{tail}")
        try:
            with urllib.request.urlopen(url + "/gradio_api/info", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise SystemExit(f"the app at {url} did not answer within {APP_START_TIMEOUT_S} s")


def _drain_status(job, rec: RequestRecord, t0: float) -> None:
    """Note every status update the job has received so far (gradio_client keeps them on a queue)."""
    from gradio_client.utils import Status

    updates = job.communicator.updates if job.communicator else None
    while updates is not None and not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "type", None) != "status":
            continue
        when = update.time.timestamp() - t0 if update.time else time.time() - t0
        if update.code == Status.IN_QUEUE:
            rec.ranks.append((update.rank, update.queue_size))
        elif update.code == Status.PROCESSING and rec.processing is None:
            rec.processing = when
        elif update.code == Status.ITERATING and rec.first_output is None:
            rec.first_output = when


def run_session(url: str, index: int, *, turns: int, max_new_tokens: int, image: Path | None, t0: float,
                start: threading.Barrier, records: list[RequestRecord], lock: threading.Lock,
                poll_s: float = 0.01) -> None:
    """One client: its own Client (own session hash, own conversation), T turns, one image on turn 0."""
    from gradio_client import Client, handle_file

    try:
        client = Client(url, verbose=False)
    finally:
        start.wait()  # even a session that could not connect releases the common start
    secret = f"SECRET{index:02d}X"
    for turn in range(turns):
        tag = f"s{index:02d}t{turn}"
        files = [handle_file(str(image))] if (image is not None and turn == 0) else []
        text = f"[req {tag}] My secret word is {secret}. Say something about it, turn {turn}."
        rec = RequestRecord(tag=tag, session=index, turn=turn, submit=time.time() - t0)
        job = client.submit(message={"text": text, "files": files}, max_new_tokens=max_new_tokens,
                            api_name="/chat")
        while not job.done():
            _drain_status(job, rec, t0)
            time.sleep(poll_s)
        _drain_status(job, rec, t0)
        rec.end = time.time() - t0
        try:
            reply = job.result()
            rec.reply_chars = len(reply)
            if rec.first_output is None:
                rec.first_output = rec.end
        except Exception as exc:  # noqa: BLE001 - a failed request is a counted result, not a crash
            rec.error = f"{type(exc).__name__}: {exc}"
        with lock:
            records.append(rec)
        if rec.error:
            break  # the conversation cannot go on without its answer
    client.close()


def run_bench(url: str, *, sessions: int, turns: int, max_new_tokens: int, images: bool, work: Path
              ) -> tuple[list[RequestRecord], float]:
    """Run every session at once; returns the records and the wall time from the common start to the last end."""
    image_paths = [_session_image(i, work) if images else None for i in range(sessions)]
    records: list[RequestRecord] = []
    lock = threading.Lock()
    barrier = threading.Barrier(sessions + 1)
    t0_box: list[float] = []

    def session(i: int) -> None:
        try:
            run_session(url, i, turns=turns, max_new_tokens=max_new_tokens, image=image_paths[i], t0=t0_box[0],
                        start=barrier, records=records, lock=lock)
        except Exception as exc:  # noqa: BLE001 - a session that cannot even connect counts as errors
            with lock:
                records.append(RequestRecord(tag=f"s{i:02d}t0", session=i, turn=0, submit=0.0,
                                             error=f"{type(exc).__name__}: {exc}"))

    t0_box.append(time.time())
    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(sessions)]
    for t in threads:
        t.start()
    barrier.wait()  # every Client is connected; go
    t_start = time.time() - t0_box[0]
    for t in threads:
        t.join()
    wall = max((r.end for r in records if r.end is not None), default=t_start) - t_start
    return sorted(records, key=lambda r: (r.session, r.turn)), wall


def attach_server_stats(records: list[RequestRecord], stats_file: Path | None) -> None:
    if stats_file is None or not stats_file.exists():
        return
    by_tag = {}
    for line in stats_file.read_text().splitlines():
        row = json.loads(line)
        if row.get("tag"):
            by_tag[row["tag"]] = row
    for rec in records:
        rec.server = by_tag.get(rec.tag)


def summarize(records: list[RequestRecord], wall: float, *, sessions: int, turns: int, max_new_tokens: int) -> dict:
    done = [r for r in records if r.error is None and r.end is not None]
    waits = [r.queue_wait for r in done if r.queue_wait is not None]
    e2e = [r.e2e for r in done if r.e2e is not None]
    ttft = [r.ttft for r in done if r.ttft is not None]
    server = [r.server for r in done if r.server]
    tokens = sum(s.get("completion_tokens") or 0 for s in server) if server else None
    server_ttft = [s["ttft_s"] for s in server if s.get("ttft_s") is not None]
    busy = sum(s["t_end"] - s["t_call"] for s in server) / wall if server and wall > 0 else None
    max_rank = max((rank for r in records for rank, _ in r.ranks if rank is not None), default=None)

    def r3(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "sessions": sessions, "turns": turns, "max_new_tokens": max_new_tokens,
        "requests": sessions * turns, "completed": len(done), "errors": len([r for r in records if r.error]),
        "wall_s": r3(wall),
        "queue_wait_p50_s": r3(percentile(waits, 50)), "queue_wait_p95_s": r3(percentile(waits, 95)),
        "e2e_p50_s": r3(percentile(e2e, 50)), "e2e_p95_s": r3(percentile(e2e, 95)),
        "client_ttft_p50_s": r3(percentile(ttft, 50)), "client_ttft_p95_s": r3(percentile(ttft, 95)),
        # TTFT from the server's stats when there are any (exact); else as the client saw it (50 ms steps).
        "ttft_p50_s": r3(percentile(server_ttft or ttft, 50)), "ttft_p95_s": r3(percentile(server_ttft or ttft, 95)),
        "busy_pct": round(100 * busy) if busy is not None else None,
        "completion_tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1) if tokens and wall > 0 else None,
        "finish_reasons": dict(sorted(_count(s.get("finish_reason") for s in server).items())) if server else None,
        "max_queue_rank_seen": max_rank,
    }


def _count(values) -> dict:
    out: dict = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


COLUMNS = [("completed", "completed"), ("errors", "errors"), ("queue_wait_p50_s", "wait p50 s"),
           ("queue_wait_p95_s", "wait p95 s"), ("e2e_p50_s", "e2e p50 s"), ("e2e_p95_s", "e2e p95 s"),
           ("ttft_p50_s", "TTFT p50 s"), ("ttft_p95_s", "TTFT p95 s"), ("tokens_per_s", "tokens/s"),
           ("busy_pct", "busy %"), ("wall_s", "wall s")]


def markdown_row(label: str, summary: dict) -> str:
    cells = [label, f"{summary['sessions']}×{summary['turns']}", str(summary["max_new_tokens"])]
    for key, _ in COLUMNS:
        value = summary[key]
        cells.append(f"{value}/{summary['requests']}" if key == "completed" else "n/a" if value is None else str(value))
    return "| " + " | ".join(cells) + " |"


def markdown_header() -> str:
    names = ["backend", "sessions×turns", "max new tokens", *(name for _, name in COLUMNS)]
    return "| " + " | ".join(names) + " |\n|" + "---|" * len(names)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-child"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Unknown flags and everything after -- are passed to app.py.")
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--model", default=None, help="checkpoint for the app (default: a tiny scripted one built here)")
    ap.add_argument("--size", default="tiny", choices=["tiny", "mid"], help="size of the built checkpoint")
    ap.add_argument("--url", default=None, help="benchmark an app already running there (no token counts)")
    ap.add_argument("--no-images", action="store_true", help="text-only turns (default: one image per session)")
    ap.add_argument("--label", default=None, help="first column of the markdown row")
    ap.add_argument("--json", type=Path, default=None, help="also write the summary and every request here")
    ns, app_args = ap.parse_known_args(argv)
    app_args = [a for a in app_args if a != "--"]
    if ns.sessions < 1 or ns.turns < 1 or ns.max_new_tokens < 1:
        ap.error("--sessions, --turns and --max-new-tokens must be at least 1")

    work = Path(tempfile.mkdtemp(prefix="qvl-bench-concurrency-"))
    proc = None
    stats_file = None
    url = ns.url.rstrip("/") if ns.url else None
    model = ns.model
    label = ns.label or model or url
    if url is None:
        if model is None:
            from qvl_core.testing.tiny import build_checkpoint

            model = str(build_checkpoint(work / "ckpt", family="qwen2_5_vl", size=ns.size,
                                         answer=_answer_with_pieces(ns.max_new_tokens + 8)))
            label = ns.label or f"in-process, {ns.size} scripted Qwen2.5-VL"
            if not any(a.startswith("--device") for a in app_args):
                app_args += ["--device", "cpu"]
        port = _free_port()
        if not any(a.startswith("--port") for a in app_args):
            app_args += ["--port", str(port)]
        else:
            i = next(i for i, a in enumerate(app_args) if a.startswith("--port"))
            port = int(app_args[i].split("=", 1)[1] if "=" in app_args[i] else app_args[i + 1])
        # A queue at least as long as the crowd: the default would refuse nobody here, but say it explicitly.
        if not any(a.startswith("--queue-size") for a in app_args):
            app_args += ["--queue-size", str(max(64, ns.sessions * 2))]
        stats_file = work / "server-stats.jsonl"
        log_path = work / "app.log"
        env = {**os.environ, STATS_ENV: str(stats_file), "GRADIO_ANALYTICS_ENABLED": "False"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-child", "--model", model, *app_args]
        with log_path.open("w") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        print(f"# app: {' '.join(cmd[2:])} (log: {log_path})", file=sys.stderr)
        _wait_for_app(url, proc, log_path)
    else:
        _wait_for_app(url, None, None)

    try:
        records, wall = run_bench(url, sessions=ns.sessions, turns=ns.turns, max_new_tokens=ns.max_new_tokens,
                                  images=not ns.no_images, work=work)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    attach_server_stats(records, stats_file)
    summary = summarize(records, wall, sessions=ns.sessions, turns=ns.turns, max_new_tokens=ns.max_new_tokens)
    cpu = _cpu_model()
    print(f"# machine: {os.cpu_count()} CPUs, {cpu} | python {platform.python_version()} | {label}")
    print(markdown_header())
    print(markdown_row(label if len(label) < 60 else "…" + label[-57:], summary))
    print(f"# finish reasons (server): {summary['finish_reasons']} | max queue rank seen: "
          f"{summary['max_queue_rank_seen']} | client-side TTFT p50/p95: {summary['client_ttft_p50_s']}/"
          f"{summary['client_ttft_p95_s']} s")
    ttfts = ", ".join(f"{r.tag}={r.server['ttft_s']:.3f}" if r.server and r.server.get("ttft_s") is not None
                      else f"{r.tag}={r.ttft:.2f}(client)" for r in records if r.server or r.ttft is not None)
    print(f"# per-request TTFT s: {ttfts}")
    for r in records:
        if r.error:
            print(f"# error {r.tag}: {r.error}")
    if ns.json:
        ns.json.write_text(json.dumps({"summary": summary, "machine": {"cpus": os.cpu_count(), "cpu": cpu},
                                       "label": label, "app_args": app_args,
                                       "requests": [asdict(r) for r in records]}, indent=2))
    return 0 if summary["errors"] == 0 else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    sys.exit(main())
