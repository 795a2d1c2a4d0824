"""Tier 1: the load-time dtype and attention choice, a pure function of the device, the GPU and what is installed."""

from __future__ import annotations

import pytest
import torch

from qvl_core.engine import loading
from qvl_core.engine.loading import GpuFacts, LoadOptions, Precision, choose_precision
from qvl_core.errors import UserError

HOPPER = GpuFacts((9, 0), bf16=True)
AMPERE = GpuFacts((8, 0), bf16=True)
TURING = GpuFacts((7, 5), bf16=False)  # T4: no bf16, no flash-attn 2
VOLTA = GpuFacts((7, 0), bf16=False)


@pytest.mark.parametrize(("dtype", "attn", "device", "gpu", "flash", "expected"), [
    # auto on a modern GPU: bf16, flash-attn when installed, sdpa otherwise
    ("auto", "auto", "cuda", HOPPER, True, ("bfloat16", "flash_attention_2")),
    ("auto", "auto", "cuda", AMPERE, True, ("bfloat16", "flash_attention_2")),
    ("auto", "auto", "cuda", HOPPER, False, ("bfloat16", "sdpa")),
    # no bf16: float32, never float16; flash-attn cannot run in float32 nor before Ampere
    ("auto", "auto", "cuda", TURING, True, ("float32", "sdpa")),
    ("auto", "auto", "cuda", VOLTA, False, ("float32", "sdpa")),
    # an Ampere-class capability that lacks bf16 support still goes float32 + sdpa
    ("auto", "auto", "cuda", GpuFacts((8, 6), bf16=False), True, ("float32", "sdpa")),
    # asked-for float16 is honoured; flash-attn still needs Ampere
    ("float16", "auto", "cuda", HOPPER, True, ("float16", "flash_attention_2")),
    ("float16", "auto", "cuda", TURING, True, ("float16", "sdpa")),
    ("float32", "auto", "cuda", HOPPER, True, ("float32", "sdpa")),
    # CPU: float32 + sdpa whatever is installed; explicit choices kept
    ("auto", "auto", "cpu", None, True, ("float32", "sdpa")),
    ("bfloat16", "auto", "cpu", None, True, ("bfloat16", "sdpa")),
    ("auto", "eager", "cuda", HOPPER, True, ("bfloat16", "eager")),
    ("auto", "sdpa", "cuda", HOPPER, True, ("bfloat16", "sdpa")),
])
def test_precision_table(dtype, attn, device, gpu, flash, expected):
    """Regression: a GPU without bf16 loaded float16 (NaN / "!!!!" answers from Qwen-VL), and flash-attn was
    picked on GPUs and dtypes it cannot run on (pre-Ampere, float32)."""
    got = choose_precision(LoadOptions(dtype=dtype, attn=attn), device, gpu, flash_attn_installed=flash)
    assert (got.dtype, got.attn) == expected


def test_float32_fallback_says_why():
    got = choose_precision(LoadOptions(), "cuda", TURING, flash_attn_installed=False)
    assert got == Precision("float32", "sdpa", got.note) and "no bfloat16" in got.note and "float16" in got.note
    assert choose_precision(LoadOptions(), "cuda", HOPPER, flash_attn_installed=True).note == ""


@pytest.mark.parametrize(("dtype", "device", "gpu", "flash", "reason"), [
    ("auto", "cuda", HOPPER, False, "needs the flash-attn package"),
    ("float16", "cuda", TURING, True, "compute capability 8.0 or newer"),
    ("float32", "cuda", HOPPER, True, "float16/bfloat16 only"),
    ("auto", "cpu", None, True, "CUDA GPUs only"),
])
def test_flash_attention_asked_for_where_it_cannot_run(dtype, device, gpu, flash, reason):
    with pytest.raises(UserError, match=reason):
        choose_precision(LoadOptions(dtype=dtype, attn="flash_attention_2"), device, gpu, flash_attn_installed=flash)


def test_gpu_facts_take_the_weakest_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: [(9, 0), (7, 5)][i])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert loading.gpu_facts() == GpuFacts((7, 5), bf16=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loading.gpu_facts() is None


def test_status_line_says_why_the_precision_is_unusual():
    from qvl_core.engine.types import SessionStatus

    note = choose_precision(LoadOptions(), "cuda", TURING, flash_attn_installed=False).note
    status = SessionStatus("m", "Qwen2.5-VL", "cuda:0", "float32", "sdpa", "none", None, False, False, note)
    assert f"float32 · sdpa ({note})" in status.summary()
