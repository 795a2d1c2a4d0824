"""Start a real `transformers serve` on a local checkpoint for tests and benchmarks; stop it for sure.

`python -m tests.serving ARGS...` runs the real `transformers serve ARGS...` with one addition: a line on stderr
whenever the server aborts a generation because its client went away (QVL-TRACE ...), so a test can see
that closing our stream really stopped the server's `generate`, not just our reading of it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRACE = "QVL-TRACE generation cancelled after"
START_TIMEOUT_S = 300.0  # importing torch + transformers and loading a tiny model; slow on a busy 2-core box


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """One running server process; `api_base` ends in /v1; `log` holds its stdout and stderr."""

    proc: subprocess.Popen
    port: int
    model: str
    log: Path
    extra: list[str] = field(default_factory=list)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Poll /health until it answers; fail with the server's log if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)


def start_server(model: str | Path, log: Path, *, extra: list[str] | None = None, port: int | None = None) -> Server:
    """Start (not wait for) `transformers serve --device cpu` pinned to `model`; call wait_ready() next."""
    port = port or free_port()
    extra = list(extra or [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    # transformers serve lists the Hugging Face cache under /v1/models and fails when there is none: give it one.
    hub = log.parent / "hf-home"
    (hub / "hub").mkdir(parents=True, exist_ok=True)
    env.setdefault("HF_HOME", str(hub))
    cmd = [sys.executable, "-m", "tests.serving", "serve", "--device", "cpu", "--host", "127.0.0.1",
           "--port", str(port), *extra, str(model)]
    out = log.open("w")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    out.close()
    return Server(proc, port, str(model), log, extra)


def _install_trace() -> None:
    """Report, on stderr, every generation the server aborts because its client disconnected."""
    from transformers.cli.serving import utils

    original = utils.DirectStreamer.put

    def put(self, value):  # the server's own signature
        try:
            return original(self, value)
        except utils._GenerationCancelled:
            print(f"{TRACE} {self.total_tokens} tokens", file=sys.stderr, flush=True)
            raise

    utils.DirectStreamer.put = put


def main() -> int:
    from transformers.cli.transformers import main as transformers_main

    _install_trace()
    sys.argv = ["transformers", *sys.argv[1:]]
    return transformers_main()


if __name__ == "__main__":
    sys.exit(main())
