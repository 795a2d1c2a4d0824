"""Tier 1-2: sampling starts from the model's own defaults; presence penalty; presets; where each value came from."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from qvl_core.cli import _sampling, build_parser
from qvl_core.engine.messages import user_turn
from qvl_core.engine.openai import sampling_fields
from qvl_core.engine.sampling import (
    SAMPLING_PRESETS,
    SERVER_DEFAULTS,
    SamplingDefaults,
    SamplingParams,
    defaults_from_generation_config,
    preset_sampling,
)
from qvl_core.engine.seeded import PresencePenalty, sampling_processors
from qvl_core.engine.types import GenerationRequest
from ui.common import sampling_note, shown_sampling, to_sampling

# Qwen2.5-VL-7B-Instruct's released generation_config.json (sampling part).
QWEN25_GC = {"do_sample": True, "temperature": 1e-6, "top_p": 0.001, "top_k": 1, "repetition_penalty": 1.05}
# Qwen3-VL-style instruct defaults.
QWEN3_GC = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.0}


def test_checkpoint_defaults_are_read_and_its_own_temperature_is_valid():
    """Regression: every request sent greedy, repetition penalty 1.05 and explicit Nones, so each checkpoint's
    generation_config was ignored; and its 1e-6 temperature failed our own minimum."""
    d = defaults_from_generation_config(GenerationConfig(**QWEN25_GC))
    assert (d.temperature, d.top_p, d.top_k, d.repetition_penalty) == (1e-6, 0.001, 1, 1.05)
    resolved = SamplingParams().resolved(d)
    assert (resolved.temperature, resolved.top_k, resolved.repetition_penalty) == (1e-6, 1, 1.05)
    assert defaults_from_generation_config(GenerationConfig()).temperature == 0.0  # no do_sample: greedy


def test_user_settings_override_the_checkpoint_and_the_rest_stay_its_own():
    d = defaults_from_generation_config(GenerationConfig(**QWEN3_GC))
    r = SamplingParams(temperature=0.2, presence_penalty=1.5).resolved(d)
    assert (r.temperature, r.top_p, r.top_k, r.repetition_penalty, r.presence_penalty) == (0.2, 0.8, 20, 1.0, 1.5)
    assert SamplingParams(temperature=0.0).resolved(d).greedy  # greedy stays available
    # Neither side names it: transformers' neutral values.
    assert SamplingParams().resolved(SERVER_DEFAULTS).presence_penalty == 0.0


def test_openai_request_sends_only_what_the_user_set():
    """Regression: a served model got temperature 0, top_p 1, repetition 1.05 on every request, overriding the
    server's (the checkpoint's) defaults."""
    untouched = GenerationRequest(turns=(user_turn("x"),), sampling=SamplingParams(max_new_tokens=9))
    for flavor in ("vllm", "transformers", "openai"):
        assert sampling_fields(untouched, flavor) == {"max_tokens": 9}
    set_ = GenerationRequest(turns=(user_turn("x"),), sampling=preset_sampling("Qwen3.5 thinking"))
    assert sampling_fields(set_, "vllm")["presence_penalty"] == 1.5
    assert sampling_fields(set_, "openai")["presence_penalty"] == 1.5
    assert "presence_penalty" not in sampling_fields(set_, "transformers")  # transformers serve refuses it


def test_presence_penalty_subtracts_once_per_generated_token():
    """Regression: there was no presence penalty (generate has none): the Qwen3.5 cards' 1.5 could not be set."""
    proc = PresencePenalty(1.5)
    prompt = torch.tensor([[4, 4, 1]])
    scores = torch.zeros(1, 6)
    assert torch.equal(proc(prompt, scores), scores)  # the prompt is not penalised
    out = proc(torch.tensor([[4, 4, 1, 2, 2, 3]]), torch.zeros(1, 6))
    assert out.tolist() == [[0.0, 0.0, -1.5, -1.5, 0.0, 0.0]]  # token 2 twice: still one penalty
    greedy = SamplingParams(temperature=0.0, presence_penalty=1.5).resolved(SERVER_DEFAULTS)
    assert [type(p) for p in sampling_processors(greedy)] == [PresencePenalty]


def test_presets_are_the_model_cards_values():
    assert SAMPLING_PRESETS["Qwen3.5 thinking"] == {"temperature": 1.0, "top_p": 0.95, "top_k": 20,
                                                    "presence_penalty": 1.5}
    p = preset_sampling("Qwen3.5 instruct (no thinking)", SamplingParams(max_new_tokens=5, seed=3))
    assert (p.temperature, p.top_p, p.top_k, p.presence_penalty, p.max_new_tokens, p.seed) == (0.7, 0.8, 20, 1.5, 5, 3)
    with pytest.raises(ValueError, match="preset"):
        preset_sampling("hot")


def test_cli_flags_leave_sampling_to_the_checkpoint_unless_given():
    ns = build_parser().parse_args(["chat", "-p", "x"])
    assert _sampling(ns).user_set() == {}
    ns = build_parser().parse_args(["chat", "-p", "x", "--sampling-preset", "Qwen3.5 thinking", "--top-k", "5",
                                    "--presence-penalty", "0.5"])
    assert _sampling(ns).user_set() == {"temperature": 1.0, "top_p": 0.95, "top_k": 5, "presence_penalty": 0.5}


def test_ui_sends_only_changes_and_says_where_values_came_from():
    """The sliders start at the checkpoint's values; unchanged ones are left to the model, and the note says
    which values are the checkpoint's and which the user changed."""
    d = defaults_from_generation_config(GenerationConfig(**QWEN3_GC))
    shown = shown_sampling(d)
    assert shown == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.0,
                     "presence_penalty": 0.0}
    untouched = to_sampling(512, *list(shown.values())[:4], -1, shown["presence_penalty"], defaults=d)
    assert untouched.user_set() == {}
    changed = to_sampling(512, 0.3, 0.8, 20, 1.0, -1, 1.5, defaults=d)
    assert changed.user_set() == {"temperature": 0.3, "presence_penalty": 1.5}
    note = sampling_note(d, 0.3, 0.8, 20, 1.0, 1.5)
    assert "top p, top k, repetition penalty: from the checkpoint's generation_config" in note
    assert "temperature, presence penalty: changed by you" in note
    assert "server's defaults" in sampling_note(SamplingDefaults(source="server"), *shown_sampling(SERVER_DEFAULTS)
                                                .values())
