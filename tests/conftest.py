"""Shared fixtures: tiny checkpoints built once per test run, sessions on them, generated media."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never download anything
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.local import ModelSession
from qvl_core.testing.tiny import build_checkpoint

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "tests" / "artifacts"


@pytest.fixture(scope="session")
def ckpt_dir(tmp_path_factory):
    """Build (once) and return the folder of a tiny checkpoint: ckpt_dir(family, answer=None)."""
    cache: dict[tuple, Path] = {}
    root = tmp_path_factory.mktemp("ckpts")

    def get(family: str = "qwen2_5_vl", answer: str | None = None) -> Path:
        key = (family, answer)
        if key not in cache:
            out = root / f"{family}-{len(cache)}"
            build_checkpoint(out, family=family, answer=answer)
            cache[key] = out
        return cache[key]

    return get


@pytest.fixture(scope="session")
def make_session(ckpt_dir):
    """A loaded ModelSession on a tiny checkpoint (shared per family/answer)."""
    sessions: dict[tuple, ModelSession] = {}

    def get(family: str = "qwen2_5_vl", answer: str | None = None) -> ModelSession:
        key = (family, answer)
        if key not in sessions:
            s = ModelSession(LoadOptions(model=str(ckpt_dir(family, answer)), device="cpu"))
            s.load()
            sessions[key] = s
        return sessions[key]

    return get


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """Images and a video made by the test run itself."""
    import cv2

    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(d / "noise.png")
    Image.new("RGB", (1000, 500), (200, 30, 30)).save(d / "red.jpg")
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(d / "transparent.png")
    writer = cv2.VideoWriter(str(d / "count.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(40):  # 4 s at 10 fps; each frame shows its own index as a grey level
        writer.write(np.full((120, 160, 3), i * 6, np.uint8))
    writer.release()
    (d / "empty.png").write_bytes(b"")
    (d / "fake.png").write_bytes(b"this is not a png at all")
    (d / "fake.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    return d


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def launch_app():
    """Launch build_demo(session) on a free port; closes every app at the end of the run."""
    from ui.shell import LAUNCH_KWARGS, build_demo

    demos = []

    def launch(session):
        demo = build_demo(session)
        demo.queue(default_concurrency_limit=1)
        demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **LAUNCH_KWARGS)
        demos.append(demo)
        return demo

    yield launch
    for demo in demos:
        demo.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


class RecordingBackend:
    """A `Backend` that delegates to a ModelSession and records what reached the model for every request.

    Each request gets a record: the prompt the model saw (decoded input ids), the sha256 of every image
    file in it, the text it generated, how it ended. `events` is one ordered log, shared by all requests,
    of (kind, request id): "call", "first" (first chunk), "closing" (the consumer closed the stream early),
    "released" (the stream is over: generation thread joined, GPU lock free). Tests may append their own.
    `hold(marker)` makes any request whose last user message contains `marker` wait before it starts.
    """

    def __init__(self, inner: ModelSession) -> None:
        import threading

        self.inner = inner
        self.lock = threading.Lock()
        self.records: list[dict] = []
        self.events: list[tuple[str, int]] = []
        self.holds: dict[str, tuple] = {}

    family = property(lambda self: self.inner.family)
    model_id = property(lambda self: self.inner.model_id)
    limits = property(lambda self: self.inner.limits)

    def load(self):
        return self.inner.load()

    def status(self):
        return self.inner.status()

    def log(self, kind: str, rid: int) -> None:
        with self.lock:
            self.events.append((kind, rid))

    def hold(self, marker: str):
        """Requests carrying `marker` wait until the returned (arrived, release) pair's release is set."""
        import threading

        pair = (threading.Event(), threading.Event())
        self.holds[marker] = pair
        return pair

    def stream(self, request, *, videos=None):
        import hashlib

        last_user = next((t.text for t in reversed(request.turns) if t.role == "user"), "")
        with self.lock:
            rid = len(self.records)
            rec = {"id": rid, "last_user": last_user, "prompt": None, "media": [], "text": "", "tokens": 0,
                   "finish": None, "error": None, "turns": len(request.turns)}
            self.records.append(rec)
            self.events.append(("call", rid))
        for marker, (arrived, release) in list(self.holds.items()):
            if marker in last_user:
                arrived.set()
                release.wait(timeout=300)
        prepared = self.inner.prepare(request, videos=videos)
        rec["prompt"] = self.inner.loaded.processor.tokenizer.decode(prepared.inputs["input_ids"][0])
        rec["media"] = [hashlib.sha256(Path(m.path).read_bytes()).hexdigest() for m in prepared.plan.images]
        stream = self.inner.stream_prepared(prepared, request.sampling)
        first = True
        try:
            for chunk in stream:
                if first:
                    first = False
                    self.log("first", rid)
                rec["text"] += chunk.text
                rec["tokens"] = chunk.tokens
                if chunk.stats is not None:
                    rec["finish"] = chunk.stats.finish_reason
                yield chunk
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if rec["finish"] is None and rec["error"] is None:
                rec["finish"] = "closed"  # the consumer went away (Stop, disconnect) before the end
                self.log("closing", rid)
            stream.close()
            self.log("released", rid)

    def generate(self, request):
        parts, stats = [], None
        for chunk in self.stream(request):
            parts.append(chunk.text)
            stats = chunk.stats or stats
        return "".join(parts), stats


@pytest.fixture(scope="session")
def recording_backend(make_session):
    """Factory: a fresh RecordingBackend over the shared tiny session (random weights unless `answer`)."""

    def make(family: str = "qwen2_5_vl", answer: str | None = None) -> RecordingBackend:
        return RecordingBackend(make_session(family, answer))

    return make
