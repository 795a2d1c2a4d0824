"""Shared fixtures (tiny checkpoints, sessions, media, launchers) and the test tiers they put a test in."""

from __future__ import annotations

import os
import subprocess
import sys
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

# Tiers. A test that requests one of these fixtures (directly or through another fixture) is marked with its
# tier; `make test-fast` runs what is left: pure functions and the model classes on tiny checkpoints.
TIER_FIXTURES = {
    "launch_app": "app",  # a Gradio server
    "run_python": "app",  # a child process: the CLI, app.py, the tiny-checkpoint builder
    "spawn_python": "app",  # a long-running child process (app.py as a Space)
    "model_server": "app",  # a real `transformers serve` process
    "chromium": "browser",  # headless Chromium (the `page` fixture uses it)
    "live_browser": "browser",  # the Agent tab's own headless Chromium (qvl_core.tasks.live_browser)
}
# The video decoder's worker process belongs to the library under test (every decode runs in one), so the
# fast tier allows it, and so is `ldconfig -p`, which ctypes.util.find_library runs when torch/CUDA look up a
# shared library on first use; any other child process started from a fast-tier test fails that test.
LIBRARY_SPAWNERS = ("qvl_core.media.video", "ctypes.util")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        for tier in tier_markers(getattr(item, "fixturenames", ())):
            item.add_marker(tier)
    # Browser tests last: the one Playwright session they share then never runs next to the other tiers.
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


def tier_markers(fixturenames) -> set[str]:
    """The tier markers implied by the fixtures a test uses."""
    return {TIER_FIXTURES[name] for name in fixturenames if name in TIER_FIXTURES}


def _spawned_by_library() -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if any(module == p or module.startswith(p + ".") for p in LIBRARY_SPAWNERS):
            return True
        frame = frame.f_back
    return False


@pytest.fixture(autouse=True)
def fast_tier_guard(request, monkeypatch):
    """In the fast tier, starting a process or launching the app fails the test: it belongs in the app tier."""
    if request.node.get_closest_marker("app") or request.node.get_closest_marker("browser"):
        return
    hint = "request run_python, spawn_python, model_server or launch_app (tests/conftest.py) so it is marked `app`"
    real_execute_child = subprocess.Popen._execute_child

    def execute_child(self, args, *rest, **kwargs):
        if not _spawned_by_library():
            pytest.fail(f"fast-tier test started a process {str(args)[:200]}: {hint}", pytrace=False)
        return real_execute_child(self, args, *rest, **kwargs)

    def launch(self, *args, **kwargs):
        pytest.fail(f"fast-tier test launched a Gradio app: {hint}", pytrace=False)

    monkeypatch.setattr(subprocess.Popen, "_execute_child", execute_child)
    gradio = sys.modules.get("gradio")  # imported by collection whenever a test module uses it
    if gradio is not None:
        monkeypatch.setattr(gradio.Blocks, "launch", launch)


# The tiny Qwen3.5 checkpoints think by default, like the released Qwen3.5 >= 4B: the generation prompt opens the
# reasoning, so a scripted answer for them is written as such a model writes it, reasoning first.
THINKING_FAMILIES = ("qwen3_5", "qwen3_5_moe")


def as_model_writes(family: str, answer: str) -> str:
    """`answer` as `family` writes it by default: after a short reasoning closed by </think> where it thinks."""
    return f"Looking at it.\n</think>\n\n{answer}" if family in THINKING_FAMILIES else answer


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
    """Launch build_demo(session[, config]) on a free port (extra keywords go to launch); closes every app at the
    end of the run."""
    from ui.shell import LAUNCH_KWARGS, build_demo

    demos = []

    def launch(session, config=None, **launch_kwargs):
        demo = build_demo(session) if config is None else build_demo(session, config)
        demo.queue(default_concurrency_limit=1)
        demo.launch(prevent_thread_lock=True, server_port=free_port(), quiet=True, **LAUNCH_KWARGS, **launch_kwargs)
        demos.append(demo)
        return demo

    yield launch
    for demo in demos:
        demo.close()


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: ours, offline, with the repository importable."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="session")
def run_python():
    """run_python(*args, env=None, cwd=ROOT, timeout=300): `python ARGS` to the end, output captured as text.

    `env` replaces child_env() when given."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | str = ROOT,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env or child_env(),
                              cwd=cwd, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def qvl_cli(run_python):
    """qvl_cli(*args, env=None): the command line, `python -m qvl_core.cli ARGS`, in a child process."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return run_python("-m", "qvl_core.cli", *args, env=env)

    return run


@pytest.fixture
def spawn_python():
    """spawn_python(*args, log=PATH, env=None, cwd=ROOT): start `python ARGS` with its output in `log`; whatever
    is still running at the end of the test is terminated."""
    procs: list[subprocess.Popen] = []

    def spawn(*args: str, log: Path, env: dict[str, str] | None = None, cwd: Path | str = ROOT) -> subprocess.Popen:
        with Path(log).open("w") as sink:
            proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env or child_env(), stdout=sink,
                                    stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="session")
def model_server():
    """tests.serving.start_server: a real `transformers serve` on a local checkpoint (the caller stops it)."""
    from tests.serving import start_server

    return start_server


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium for the whole run (Debian's, driven by Playwright); each test gets its own page."""
    from playwright.sync_api import sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS, require_chromium

    require_chromium()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def live_browser():
    """A LiveBrowser (the agent's driven Chromium, started on first use), closed after the test."""
    from qvl_core.tasks.live_browser import LiveBrowser
    from tests.browser import CHROMIUM, require_chromium

    require_chromium()
    browser = LiveBrowser(executable=CHROMIUM, settle_s=0.2)
    yield browser
    browser.close()


@pytest.fixture
def open_page(chromium):
    """open_page(viewport="desktop"|"phone", dark=False): a page in a fresh context at that viewport and colour
    scheme, with its page errors (`page.errors`) and console lines (`page.console`) recorded."""
    from tests.browser import VIEWPORTS

    contexts = []

    def make(viewport: str = "desktop", *, dark: bool = False):
        width, height = VIEWPORTS[viewport]
        context = chromium.new_context(viewport={"width": width, "height": height},
                                       color_scheme="dark" if dark else "light")
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.errors, page.console = [], []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        page.on("console", lambda msg: page.console.append(msg.text))
        return page

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page(chromium):
    """A page in a fresh browser context (no cookies, storage or routes from another test), 1280x900."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


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
