"""Model loading choices (default model, dtype, attention, quantization) and the `qvl` command line."""

from __future__ import annotations

import pytest

from qvl_core.engine import loading
from qvl_core.engine.loading import LoadOptions, default_model_id
from qvl_core.engine.local import ModelSession
from qvl_core.engine.messages import user_turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import UserError


def _fake_cuda(monkeypatch, *, free_gb: float | None, bf16: bool = True):
    import torch

    monkeypatch.delenv("QVL_MODEL", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: free_gb is not None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (int((free_gb or 0) * 2**30), 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)


@pytest.mark.parametrize(("free_gb", "expected"), [
    (None, loading.DEFAULT_MODEL_SMALL), (12.0, loading.DEFAULT_MODEL_SMALL), (70.0, loading.DEFAULT_MODEL_LARGE),
])
def test_default_model_depends_on_free_gpu_memory(monkeypatch, free_gb, expected):
    _fake_cuda(monkeypatch, free_gb=free_gb)
    assert default_model_id() == expected


def test_model_env_overrides_the_default(monkeypatch):
    monkeypatch.setenv("QVL_MODEL", "/models/mine")
    assert default_model_id() == "/models/mine"


# The dtype and attention choice: tests/test_precision.py.


def test_cuda_requested_without_a_gpu(monkeypatch):
    _fake_cuda(monkeypatch, free_gb=None)
    with pytest.raises(UserError, match="no CUDA GPU is visible"):
        loading.choose_device(LoadOptions(device="cuda"))


@pytest.mark.parametrize(("field", "value"), [("dtype", "float8"), ("attn", "magic"), ("quantization", "int3")])
def test_bad_load_options_are_named(field, value):
    with pytest.raises(UserError, match=f"{field} must be one of"):
        LoadOptions(**{field: value})


def test_int8_weight_only_quantization_loads_and_answers(ckpt_dir):
    pytest.importorskip("torchao")
    answer = "quantized but exact"
    s = ModelSession(LoadOptions(model=str(ckpt_dir("qwen2_5_vl", answer)), device="cpu", quantization="int8"))
    assert s.status().quantization == "int8"
    lm = s.load()
    assert "Int8" in type(lm.model.model.language_model.layers[0].mlp.up_proj.weight).__name__
    req = GenerationRequest(turns=(user_turn("q"),), sampling=SamplingParams(max_new_tokens=40))
    assert s.generate(req)[0] == answer


# ---- the command line --------------------------------------------------------------------------------
def test_cli_chat_streams_the_answer(qvl_cli, ckpt_dir, media_dir):
    answer = "Two shapes.\nDone."
    out = qvl_cli("chat", str(media_dir / "red.jpg"), str(media_dir / "count.avi"), "--prompt", "What is here?",
               "--model", str(ckpt_dir("qwen2_5_vl", answer)), "--device", "cpu")
    assert out.returncode == 0, out.stderr
    assert out.stdout == answer + "\n"
    assert "tokens, stop" in out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--prompt", "hi", "--model", "/no/such/folder"], "Model folder '/no/such/folder' does not exist"),
    (["notes.pdf", "--prompt", "hi"], "'notes.pdf' is not a supported image or video"),
    (["--prompt", "hi", "--temperature", "9"], "temperature must be between 0.0 and 2.0"),
])
def test_cli_errors_are_one_line_and_non_zero(qvl_cli, ckpt_dir, args, message):
    if "--model" not in args:
        args = [*args, "--model", str(ckpt_dir("qwen2_5_vl"))]
    out = qvl_cli("chat", *args)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("qvl: error:") and message in lines[-1]
    assert "Traceback" not in out.stderr


def test_serve_with_a_missing_model_fails_at_start_with_one_message(run_python):
    out = run_python("app.py", "--model", "/no/such/folder")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "qvl: Model folder '/no/such/folder' does not exist." in out.stderr
