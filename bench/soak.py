"""Soak test: R rounds of M clients against one launched app; the server's memory after every round.

Each client opens its own `gradio_client.Client` (its own session), sends one /chat turn with its own image
and one /ground call, and closes. The M clients of a round start together; the next round starts when the
last one is done. After every round the script reads the server process's RSS from /proc, then asks the
server (SIGUSR1) to run `gc.collect()` and report its RSS again, what glibc's malloc holds in use and free
(mallinfo2, every arena), and how many Python objects live. With `--trace` the server also runs tracemalloc
(from the first report on) and prints the allocation sites that grew most since the previous round.

The question it answers: does the server's memory level off under repeated load, or keep growing?

    python bench/soak.py                          # 8 rounds x 32 clients, tiny scripted checkpoint on CPU
    python bench/soak.py --rounds 4 --clients 8 --trace
    python bench/soak.py --model /models/Qwen2.5-VL-7B-Instruct -- --device cuda

Loopback only. Flags after `--` (or any flag this script does not know) go to `app.py` unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.concurrency import _cpu_model, _free_port, _session_image, _wait_for_app  # noqa: E402

MAX_ROUNDS = 50  # bounded: a soak is a measurement, not a load generator left running
MAX_CLIENTS = 128
REPORT_TIMEOUT_S = 120  # the server's gc + report (tracemalloc snapshots of a big heap take a while)
REQUEST_TIMEOUT_S = 600  # one client's chat + ground; a hung request is an error, not a hang of the soak
REPORT_ENV = "QVL_SOAK_REPORT"  # the server appends one JSON line here per SIGUSR1
TRACE_ENV = "QVL_SOAK_TRACE"  # "1": the server runs tracemalloc and reports the sites that grew
TRACE_TOP = 12
# The scripted answer: one box, so /chat draws it into the app's output folder and /ground returns it.
ANSWER = '[{"bbox_2d": [10, 10, 60, 50], "label": "square"}]'


# ---- the server side (child process) ----------------------------------------------------------------------
def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def malloc_mb() -> tuple[float, float] | None:
    """(in use, free but held) by glibc's malloc over every arena, in MB; None without glibc 2.33+."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return (info.uordblks + info.hblkhd) / 2**20, info.fordblks / 2**20


def serve(app_args: list[str]) -> int:
    """Run the app (ui.launch.main) with a SIGUSR1 handler that collects garbage and reports memory."""
    import gc
    import tracemalloc

    report = Path(os.environ[REPORT_ENV])
    trace = os.environ.get(TRACE_ENV) == "1"
    previous: list = []

    def on_report(_signum, _frame) -> None:
        row: dict = {"rss_mb": rss_mb()}
        gc.collect()
        row["rss_gc_mb"] = rss_mb()
        row["malloc_mb"] = malloc_mb()
        row["py_objects"] = len(gc.get_objects())
        if trace:
            # Started at the first report, after start-up: tracing torch's and Gradio's imports takes minutes.
            if not tracemalloc.is_tracing():
                tracemalloc.start(10)
            snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
            row["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            if previous:
                row["grew"] = [f"{s.size_diff / 2**20:+.2f} MB {s.count_diff:+d} blocks "
                               f"{s.traceback.format()[-1].strip()} <- {s.traceback[0]}"
                               for s in snapshot.compare_to(previous[0], "traceback")[:TRACE_TOP]]
            previous[:] = [snapshot]
        with report.open("a") as f:
            f.write(json.dumps(row) + "\n")

    signal.signal(signal.SIGUSR1, on_report)  # runs in the main thread, which only waits for the server
    import ui.launch

    return ui.launch.main(app_args)


# ---- the client side --------------------------------------------------------------------------------------
def one_client(url: str, index: int, image: Path) -> str | None:
    """One user: a chat turn with an image, then a grounding call. Returns an error, or None."""
    from gradio_client import Client, handle_file

    # A round queues every request at once behind one model: the last in line waits minutes, not httpx's 5 s.
    client = Client(url, verbose=False, httpx_kwargs={"timeout": REQUEST_TIMEOUT_S})
    try:
        client.predict(message={"text": f"What is in picture {index}?", "files": [handle_file(str(image))]},
                       max_new_tokens=32, api_name="/chat")
        client.predict(image=handle_file(str(image)), text="square", preset="Detect", api_name="/ground")
        return None
    except Exception as exc:  # noqa: BLE001 - a failed request is a counted result
        return f"{type(exc).__name__}: {exc}"[:300]
    finally:
        client.close()


def run_round(url: str, images: list[Path]) -> tuple[int, list[str], float]:
    """All clients at once; returns (succeeded, errors, wall seconds)."""
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        try:
            error = one_client(url, i, images[i])
        except Exception as exc:  # noqa: BLE001 - could not even connect
            error = f"{type(exc).__name__}: {exc}"[:300]
        if error:
            with lock:
                errors.append(error)

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT_S)
    hung = sum(t.is_alive() for t in threads)
    errors += [f"still running after {REQUEST_TIMEOUT_S} s"] * hung
    return len(images) - len(errors), errors, time.monotonic() - t0


def wait_for_launch(proc: subprocess.Popen, log_path: Path) -> None:
    """Wait until Gradio's launch has finished its own checks (it prints the share hint last).

    The server answers before launch() has checked that localhost is reachable; a report (tracemalloc above
    all) that slows the server then can fail that check and end the app.
    """
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while "To create a public link" not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the app did not finish launching:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.2)


def server_report(proc: subprocess.Popen, path: Path, seen: int) -> dict:
    """Ask the server for its report (SIGUSR1) and wait for line `seen + 1`."""
    proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + REPORT_TIMEOUT_S
    while time.monotonic() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) > seen:
            return json.loads(lines[seen])
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        time.sleep(0.2)
    raise SystemExit(f"the server did not report within {REPORT_TIMEOUT_S} s")


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def row_cells(label: str, ok: str, wall: str, row: dict) -> list[str]:
    malloc = row.get("malloc_mb") or (None, None)
    cells = [label, ok, wall, fmt(row["rss_mb"]), fmt(row["rss_gc_mb"]), fmt(malloc[0]), fmt(malloc[1]),
             f"{row['py_objects']:,}"]
    return cells + ([fmt(row.get("traced_mb"))] if "traced_mb" in row else [])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--serve-child"]:
        return serve(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Unknown flags and everything after -- are passed to app.py.")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--model", default=None, help="checkpoint for the app (default: a tiny scripted one built here)")
    ap.add_argument("--trace", action="store_true", help="tracemalloc in the server: what grew between rounds")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="start no round after this long")
    ns, app_args = ap.parse_known_args(argv)
    app_args = [a for a in app_args if a != "--"]
    if not 1 <= ns.rounds <= MAX_ROUNDS or not 1 <= ns.clients <= MAX_CLIENTS:
        ap.error(f"--rounds must be 1..{MAX_ROUNDS} and --clients 1..{MAX_CLIENTS}")

    work = Path(tempfile.mkdtemp(prefix="qvl-bench-soak-"))
    model = ns.model
    if model is None:
        from qvl_core.testing.tiny import build_checkpoint

        model = str(build_checkpoint(work / "ckpt", family="qwen2_5_vl", answer=ANSWER))
        if not any(a.startswith("--device") for a in app_args):
            app_args += ["--device", "cpu"]
    port = _free_port()
    app_args += ["--host", "127.0.0.1", "--port", str(port), "--queue-size", str(max(64, 2 * ns.clients))]
    report = work / "server-report.jsonl"
    log_path = work / "app.log"
    env = {**os.environ, REPORT_ENV: str(report), TRACE_ENV: "1" if ns.trace else "0",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve-child", "--model", model, *app_args]
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    print(f"# app: {' '.join(cmd[2:])} (log: {log_path})", file=sys.stderr)
    images = [_session_image(i, work) for i in range(ns.clients)]
    header = ["round", "ok", "wall s", "RSS MB", "RSS after gc MB", "malloc in use MB", "malloc free MB",
              "Python objects"] + (["traced MB"] if ns.trace else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    failed = 0
    t_start = time.monotonic()
    try:
        _wait_for_app(url, proc, log_path)
        wait_for_launch(proc, log_path)
        first = server_report(proc, report, 0)
        lines.append("| " + " | ".join(row_cells("started", "", "", first)) + " |")
        print(lines[-1], file=sys.stderr)
        for r in range(1, ns.rounds + 1):
            if time.monotonic() - t_start > ns.max_minutes * 60:
                print(f"# stopped before round {r}: --max-minutes {ns.max_minutes}", file=sys.stderr)
                break
            ok, errors, wall = run_round(url, images)
            failed += len(errors)
            row = server_report(proc, report, r)
            lines.append("| " + " | ".join(row_cells(str(r), f"{ok}/{ns.clients}", f"{wall:.1f}", row)) + " |")
            print(lines[-1], file=sys.stderr)
            for error in sorted(set(errors)):
                print(f"#   error ×{errors.count(error)}: {error}", file=sys.stderr)
            for site in row.get("grew", []):
                print(f"#   grew: {site}", file=sys.stderr)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"# machine: {os.cpu_count()} CPUs, {_cpu_model()} | python {platform.python_version()} | "
          f"{ns.rounds} rounds x {ns.clients} clients (chat turn with an image + ground each) | {model}")
    print("\n".join(lines))
    if ns.trace:
        sites = [json.loads(line).get("grew", []) for line in report.read_text().splitlines()]
        last = sites[-1] if sites else []
        print("# grew most between the last two reports:\n" + "\n".join(f"#   {s}" for s in last))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
