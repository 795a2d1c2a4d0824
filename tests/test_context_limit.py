"""Prompt tokens + max new tokens are checked against the model's context before the GPU lock and the prefill."""

from __future__ import annotations

import functools

import pytest
import torch  # noqa: F401 - imported at collection: its first import runs ldconfig, which no fast test may start

from qvl_core.engine.local import check_fits_context, context_length
from qvl_core.engine.messages import user_turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import UserError

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]
# The released checkpoints' text-config context, which the tiny builds copy.
RELEASED_CONTEXT = {"qwen2_vl": 32768, "qwen2_5_vl": 128000, "qwen3_vl": 262144, "qwen3_5": 262144,
                    "qwen3_5_moe": 262144}


@pytest.mark.parametrize(("prompt", "new", "context", "message"), [
    (100, 28, 128, None),  # exactly full: fine
    (10, 5, None, None),  # a config without a context: nothing to check
    (100, 29, 128, "prompt is 100 tokens and max new tokens is 29: 129 in all, over the model's context length "
                   "of 128 tokens. Lower max new tokens to at most 28"),
    (128, 1, 128, "prompt is 128 tokens \\(plus 1 max new tokens\\), over the model's context length of 128"),
])
def test_check_fits_context_table(prompt, new, context, message):
    if message is None:
        check_fits_context(prompt, new, context)
    else:
        with pytest.raises(UserError, match=message):
            check_fits_context(prompt, new, context)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoints_carry_the_released_context(make_session, family):
    assert context_length(make_session(family).loaded.model) == RELEASED_CONTEXT[family]


def _forward_must_not_run(model, monkeypatch):
    original = model.forward

    @functools.wraps(original)
    def forward(*args, **kwargs):
        raise AssertionError("the prefill ran for a request that cannot fit the context")

    monkeypatch.setattr(model, "forward", forward)


def test_over_the_context_is_refused_before_the_prefill(make_session, media_dir, monkeypatch):
    """Regression: nothing checked prompt + max new tokens against max_position_embeddings; an over-long request
    took the GPU lock and ran its prefill, then decoded past the positions the model was trained on."""
    s = make_session("qwen2_vl")
    request = GenerationRequest(turns=(user_turn("Describe", [media_dir / "noise.png"]),),
                                sampling=SamplingParams(max_new_tokens=32768))
    prompt = s.prepare(request).prompt_tokens
    _forward_must_not_run(s.loaded.model, monkeypatch)
    with pytest.raises(UserError) as err:
        s.generate(request)
    assert f"prompt is {prompt} tokens and max new tokens is 32768" in str(err.value)
    assert "context length of 32768 tokens" in str(err.value)
    assert f"at most {32768 - prompt}" in str(err.value)
    assert not s._gpu_lock.locked()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_boundary_with_a_small_context(make_session, media_dir, monkeypatch, family):
    """Exactly the context runs; one token more is refused (context shrunk on the loaded config)."""
    s = make_session(family)
    request = GenerationRequest(turns=(user_turn("Describe", [media_dir / "noise.png"]),),
                                sampling=SamplingParams(max_new_tokens=3))
    prompt = s.prepare(request).prompt_tokens
    monkeypatch.setattr(s.loaded.model.config.get_text_config(), "max_position_embeddings", prompt + 3)
    _text, stats = s.generate(request)
    assert stats.completion_tokens >= 1
    over = GenerationRequest(turns=request.turns, sampling=SamplingParams(max_new_tokens=4))
    with pytest.raises(UserError, match=f"{prompt + 4} in all, over the model's context length of {prompt + 3}"):
        s.generate(over)
