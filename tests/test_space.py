"""The repository as a Hugging Face Space: front matter, import on ZeroGPU, and a CPU Space serving requests."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest
import yaml

from qvl_core.engine.loading import DEFAULT_MODEL_LARGE, DEFAULT_MODEL_SMALL
from qvl_core.engine.zerogpu import MAX_ZEROGPU_SECONDS, ZEROGPU_MIN_SECONDS, gpu_duration

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SPACE_ANSWER = "Served from a Space."
# Hardware flavours a Space may suggest (hub docs, Spaces configuration reference).
HARDWARE = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "l4x4", "a10g-small", "a10g-large",
            "a10g-largex2", "a10g-largex4", "a100-large", "l40sx1", "l40sx4", "l40sx8", "h100", "h100x8",
            "zero-a10g"}


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must open with YAML front matter for Spaces"
    return yaml.safe_load(match.group(1))


def pinned(package: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.split("#")[0].strip().startswith(f"{package}=="):
            return line.split("==")[1].split()[0]
    raise AssertionError(f"{package} is not pinned in requirements.txt")


def test_front_matter_makes_a_valid_gradio_space():
    fm = front_matter()
    assert fm["sdk"] == "gradio"
    assert fm["sdk_version"] == pinned("gradio"), "the Space must run the Gradio version the app is tested with"
    assert (ROOT / fm["app_file"]).is_file()
    assert re.fullmatch(r"3\.(1[0-3])", str(fm["python_version"])), "a Python the project supports, as a string"
    assert fm["suggested_hardware"] in HARDWARE
    assert {DEFAULT_MODEL_LARGE, DEFAULT_MODEL_SMALL} <= set(fm["models"])
    assert len(fm["short_description"]) <= 60  # the Hub's limit


@pytest.mark.parametrize(("prompt", "new", "expected"), [
    (100, 16, ZEROGPU_MIN_SECONDS),  # a short chat asks for the floor
    (2_000, 1024, 62),  # 10 + 0.5 prefill + 51.2 decode, rounded up
    (16_000, 4096, MAX_ZEROGPU_SECONDS),  # a long document page is capped at the limit
])
def test_gpu_duration_grows_with_the_request_and_stays_in_bounds(prompt, new, expected):
    assert gpu_duration(prompt, new) == expected


def _space_env(tmp_path: Path, model: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QVL_", "SPACE", "GRADIO_SERVER"))}
    # A Space starts with its own empty temp folder: the suite's shared one (Gradio's cache of every upload so far,
    # which a starting app sweeps) is not its.
    env.update(SPACE_ID="qvl/studio", SYSTEM="spaces", HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               QVL_MODEL=str(model), PYTHONPATH=str(ROOT), HOME=str(tmp_path), TMPDIR=str(tmp_path),
               GRADIO_TEMP_DIR=str(tmp_path / "gradio"), **extra)
    return env


IMPORT_PROBE = """
import json, sys

first = []  # which of spaces / torch the app imports first


class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("spaces", "torch") and name not in first:
            first.append(name)


sys.meta_path.insert(0, Spy())
import app
import gradio as gr
import torch
from qvl_core.engine.zerogpu import ZeroGPUBackend
backend = app.backend
fn = getattr(backend, "gpu_function", None)
print(json.dumps({
    "blocks": isinstance(app.demo, gr.Blocks),
    "zero_backend": isinstance(backend, ZeroGPUBackend),
    "wrapped": fn is not None and hasattr(fn, "zerogpu"),
    "param_device": str(next(backend.session.loaded.model.parameters()).device),
    "spaces_first": first[0] == "spaces",
    "apis": sorted(d["api_name"] for d in app.demo.config["dependencies"] if d.get("api_name")),
}))
"""


@pytest.mark.timeout(300)
def test_app_imports_as_a_zerogpu_space(run_python, ckpt_dir, tmp_path):
    """As on ZeroGPU: `spaces` imported first, model on (emulated) CUDA at import, generation wrapped."""
    pytest.importorskip("spaces")
    env = _space_env(tmp_path, ckpt_dir(), SPACES_ZERO_GPU="true",
                     SPACES_ZERO_DEVICE_API_URL="http://127.0.0.1:9")  # never called: nothing is generated here
    out = run_python("-c", IMPORT_PROBE, cwd=tmp_path, env=env, timeout=280)
    assert out.returncode == 0, out.stderr[-3000:]
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["blocks"] and probe["zero_backend"] and probe["wrapped"] and probe["spaces_first"]
    assert probe["param_device"] == "cuda:0"
    assert {"chat", "ground", "parse_document", "video_qa"} <= set(probe["apis"])


@pytest.mark.timeout(120)
def test_importing_the_app_off_spaces_does_nothing_heavy(run_python, tmp_path):
    code = ("import sys, app; print(hasattr(app, 'demo'), 'spaces' in sys.modules, 'torch' in sys.modules, "
            "'gradio' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACE")}
    env["PYTHONPATH"] = str(ROOT)
    out = run_python("-c", code, cwd=tmp_path, env=env, timeout=110)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "False", "False"]


@pytest.mark.timeout(400)
def test_cpu_space_runs_app_py_and_answers(spawn_python, ckpt_dir, tmp_path):
    """`python app.py` as a (non-ZeroGPU) Space starts it: all interfaces, the platform's port, a real answer."""
    from gradio_client import Client

    port = free_port()
    env = _space_env(tmp_path, ckpt_dir("qwen2_5_vl", SPACE_ANSWER), GRADIO_SERVER_PORT=str(port), QVL_DEVICE="cpu")
    log = tmp_path / "space.log"
    proc = spawn_python(str(ROOT / "app.py"), log=log, cwd=tmp_path, env=env)  # stopped by the fixture
    # Ready once launch() has passed its own check that localhost answers (it then says how to share). Read from
    # the log, not by connecting: clients polling a starting server (each fetching the whole page config) kept
    # it too busy to answer that check within Gradio's 3 s, and launch gave up.
    for _ in range(600):  # readiness, not a timing check: the pytest timeout guards a hang
        if proc.poll() is not None or "public link" in (log.read_text() if log.exists() else ""):
            break
        time.sleep(0.5)
    assert proc.poll() is None, log.read_text()[-3000:]
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    reply = client.predict(message={"text": "Hello from a Space", "files": []}, api_name="/chat")
    assert reply == SPACE_ANSWER
    client.close()


def test_zerogpu_backend_generates_through_its_gpu_function_with_pickled_inputs(make_session, media_dir):
    """ZeroGPU runs the GPU function in a forked worker and pickles its arguments and every result."""
    import pickle

    from qvl_core.engine.messages import user_turn
    from qvl_core.engine.types import GenerationRequest
    from qvl_core.engine.zerogpu import ZeroGPUBackend

    pytest.importorskip("spaces")
    backend = ZeroGPUBackend(make_session("qwen2_5_vl", SPACE_ANSWER))
    inner, calls = backend.gpu_function, []

    def as_in_a_worker(key, prepared, sampling):
        key, prepared, sampling = pickle.loads(pickle.dumps((key, prepared, sampling)))
        calls.append(prepared.prompt_tokens)
        for chunk in inner(key, prepared, sampling):
            yield pickle.loads(pickle.dumps(chunk))

    backend.gpu_function = as_in_a_worker
    request = GenerationRequest(turns=(user_turn("What is this?", [str(media_dir / "red.jpg")]),))
    text, stats = backend.generate(request)
    assert text == SPACE_ANSWER and stats.finish_reason == "stop"
    assert calls == [stats.prompt_tokens]
    assert stats.image_original_sizes == ((1000, 500),)
    assert backend.status().gpu_memory_mb is None and backend.model_id == backend.session.model_id
