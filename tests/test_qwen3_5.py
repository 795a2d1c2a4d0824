"""The 2026 families (Qwen3.5 dense/MoE, Qwen3.8-Flash-Next): table, loading, and the tiny checkpoints' template."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; a download attempt must fail

import pytest
import torch

from qvl_core.errors import UserError
from qvl_core.families import FAMILIES, family_for, in_process_family, linear_attention_note
from qvl_core.testing.tiny import build_checkpoint, main, thinking_chat_template

THINKING_FAMILIES = ("qwen3_5", "qwen3_5_moe")
ON, OFF = "<|im_start|>assistant\n<think>\n", "<|im_start|>assistant\n<think>\n\n</think>\n\n"
DRAFT_THEN_ANSWER = ('The cat is left: [{"bbox_2d": [1, 1, 9, 9]}] is a draft.</think>\n\n'
                     '[{"bbox_2d": [100, 200, 300, 400], "label": "cat"}]')


def _processor(ckpt_dir, family, answer=None):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(ckpt_dir(family, answer))


def _render(processor, messages, **kwargs) -> str:
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)


HI = [{"role": "user", "content": "Hi"}]


# --- the family table (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["qwen3_5", "qwen3_5_moe", "qwen4_exp"])
def test_2026_families_are_in_the_table_like_qwen3_vl(model_type):
    """Bug guarded: every Qwen3.5/3.6/3.8 checkpoint was refused with "Unsupported model type"."""
    spec = family_for(model_type)
    assert (spec.patch_size, spec.merge_size, spec.temporal_patch_size, spec.factor) == (16, 2, 2, 32)
    assert (spec.coords, spec.box_syntax, spec.absolute_time) == ("norm1000", "json", True)
    assert spec.linear_attention and (spec.think_open, spec.think_close) == ("<think>", "</think>")
    assert spec.in_process is (model_type != "qwen4_exp")


def test_qwen4_exp_is_refused_in_process_with_the_way_to_serve_it():
    """Bug guarded: Qwen3.8-Flash-Next (too big for one GPU) would be loaded in process, or refused as unknown."""
    with pytest.raises(UserError, match="--backend openai"):
        in_process_family("qwen4_exp")
    assert in_process_family("qwen3_5") is FAMILIES["qwen3_5"]


def test_load_model_refuses_qwen4_exp_before_reading_weights(tmp_path):
    """Bug guarded: a qwen4_exp folder reached from_pretrained (a 125B MoE + 95 GB table on one GPU)."""
    from transformers import AutoConfig

    from qvl_core.engine.loading import LoadOptions, load_model

    AutoConfig.for_model("qwen4_exp").save_pretrained(tmp_path)  # a config, no weights at all
    with pytest.raises(UserError, match=r"Qwen3\.8-Flash-Next.*--backend openai"):
        load_model(LoadOptions(model=str(tmp_path), device="cpu"))


NOTE_CASES = [  # (family, device, installed modules, note mentions)
    ("qwen3_5", "cuda", set(), ["flash-linear-attention", "causal-conv1d"]),
    ("qwen3_5_moe", "cuda", {"fla"}, ["causal-conv1d"]),
    ("qwen3_5", "cuda", {"causal_conv1d"}, ["flash-linear-attention"]),
    ("qwen3_5", "cuda", {"fla", "causal_conv1d"}, []),
    ("qwen3_5", "cpu", set(), []),  # the kernels are CUDA-only: nothing to install on a CPU
    ("qwen3_vl", "cuda", set(), []),  # no linear attention
]


@pytest.mark.parametrize(("family", "device", "installed", "mentions"), NOTE_CASES)
def test_linear_attention_note_says_when_a_qwen3_5_runs_the_slow_path_on_cuda(family, device, installed, mentions):
    """Bug guarded: Qwen3.5 on a GPU without flash-linear-attention/causal-conv1d ran much slower, said nowhere."""
    note = linear_attention_note(FAMILIES[family], device, installed)
    assert bool(note) == bool(mentions)
    for name in mentions:
        assert name in note
    if note:
        assert "slow" in note and "pip install" in note


@pytest.mark.parametrize(("name", "family"), [
    ("Qwen/Qwen3.5-2B", "qwen3_5"), ("Qwen/Qwen3.5-9B", "qwen3_5"), ("Qwen/Qwen3.6-27B", "qwen3_5"),
    ("Qwen/Qwen3.8-27B", "qwen3_5"), ("Qwen/Qwen3.5-35B-A3B", "qwen3_5_moe"),
    ("qwen3.5-397b-a17b-fp8", "qwen3_5_moe"), ("Qwen/Qwen3.6-35B-A3B", "qwen3_5_moe"),
    ("Qwen/Qwen3.8-Flash-Next", "qwen4_exp"), ("Qwen/Qwen3-VL-8B-Thinking", "qwen3_vl"),
])
def test_served_model_names_of_2026_tell_their_family(name, family):
    """Bug guarded: `--backend openai` with a served Qwen3.5 name asked for --family (no pattern matched)."""
    from qvl_core.engine.openai import resolve_family

    assert resolve_family(name) is FAMILIES[family]


@pytest.mark.parametrize(("given", "family"), [("qwen3.5", "qwen3_5"), ("Qwen3.5-MoE", "qwen3_5_moe"),
                                                ("qwen3.8-flash-next", "qwen4_exp"), ("qwen4_exp", "qwen4_exp")])
def test_family_flag_takes_the_2026_names(given, family):
    from qvl_core.engine.openai import resolve_family

    assert resolve_family("served-model", given) is FAMILIES[family]


# --- the tiny checkpoints: template and tokenizer ------------------------------------------------


@pytest.mark.parametrize("family", THINKING_FAMILIES)
def test_generation_prompt_opens_reasoning_by_default_and_closes_it_when_off(ckpt_dir, family):
    """Bug guarded: the tiny template had no thinking switch, so nothing could test the thinking pipeline."""
    processor = _processor(ckpt_dir, family)
    assert _render(processor, HI) == "<|im_start|>user\nHi<|im_end|>\n" + ON
    assert _render(processor, HI, enable_thinking=True).endswith(ON)
    assert _render(processor, HI, enable_thinking=False).endswith(OFF)


def test_thinking_default_off_variant_thinks_only_when_asked(tmp_path):
    """Like Qwen3.5-0.8B/2B: the default is read from rendering, so the tiny builder must offer both defaults."""
    from transformers import AutoProcessor

    assert main([str(tmp_path), "--family", "qwen3_5", "--no-thinking-default"]) == 0
    processor = AutoProcessor.from_pretrained(tmp_path)
    assert _render(processor, HI).endswith(OFF)
    assert _render(processor, HI, enable_thinking=False).endswith(OFF)
    assert _render(processor, HI, enable_thinking=True).endswith(ON)
    with pytest.raises(ValueError, match="thinking families"):
        build_checkpoint(tmp_path / "x", family="qwen3_vl", thinking_default=False)


HISTORY = [
    {"role": "user", "content": "First?"},
    {"role": "assistant", "content": "Let me see.\n</think>\n\nA cat."},
    {"role": "user", "content": "And now?"},
]


@pytest.mark.parametrize(("messages", "kwargs", "assistant"), [
    (HISTORY, {}, "<|im_start|>assistant\nA cat.<|im_end|>\n"),  # earlier reasoning dropped
    (HISTORY, {"preserve_thinking": True},
     "<|im_start|>assistant\n<think>\nLet me see.\n</think>\n\nA cat.<|im_end|>\n"),
    ([HISTORY[0], {"role": "assistant", "content": "<think>\nOpened.</think>A cat."}, HISTORY[2]],
     {"preserve_thinking": True}, "<|im_start|>assistant\n<think>\nOpened.\n</think>\n\nA cat.<|im_end|>\n"),
    ([HISTORY[0], {"role": "assistant", "content": "A cat.", "reasoning_content": "Apart."}, HISTORY[2]],
     {"preserve_thinking": True}, "<|im_start|>assistant\n<think>\nApart.\n</think>\n\nA cat.<|im_end|>\n"),
    ([HISTORY[0], {"role": "assistant", "content": "A cat.", "reasoning_content": "Apart."}, HISTORY[2]],
     {}, "<|im_start|>assistant\nA cat.<|im_end|>\n"),
    ([HISTORY[0], {"role": "assistant", "content": "A cat."}, HISTORY[2]],
     {"preserve_thinking": True}, "<|im_start|>assistant\nA cat.<|im_end|>\n"),  # no reasoning: no empty block
])
def test_history_reasoning_is_handled_like_the_released_template(ckpt_dir, messages, kwargs, assistant):
    """Bug guarded: reasoning kept in history, or lost with preserve_thinking, or reasoning_content ignored."""
    processor = _processor(ckpt_dir, "qwen3_5")
    prompt = _render(processor, messages, **kwargs)
    assert prompt == ("<|im_start|>user\nFirst?<|im_end|>\n" + assistant
                      + "<|im_start|>user\nAnd now?<|im_end|>\n" + ON)


def test_a_last_assistant_turn_keeps_its_reasoning():
    """After the last user message (a turn being continued) the reasoning stays, as in the released template."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(thinking_chat_template())
    text = template.render(messages=[*HISTORY[:1], {"role": "assistant", "content": "Hmm.</think>\n\nA"}],
                           add_generation_prompt=False)
    assert text.endswith("<|im_start|>assistant\n<think>\nHmm.\n</think>\n\nA<|im_end|>\n")


@pytest.mark.parametrize("family", THINKING_FAMILIES)
def test_think_tags_are_ordinary_added_tokens(ckpt_dir, family):
    """As in the real tokenizer: one token each, not special, so skip_special_tokens keeps them in the text."""
    tokenizer = _processor(ckpt_dir, family).tokenizer
    ids = tokenizer("a<think>b</think>c", add_special_tokens=False)["input_ids"]
    think, close = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    assert think in ids and close in ids and len(ids) == 5
    assert "<think>" not in tokenizer.all_special_tokens and "</think>" not in tokenizer.all_special_tokens
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a<think>b</think>c"
    assert type(tokenizer).__name__ == "Qwen3_5Tokenizer"


# --- the tiny checkpoints: architecture and scripted thinking -------------------------------------


@pytest.mark.parametrize("family", THINKING_FAMILIES)
def test_tiny_qwen3_5_is_the_real_hybrid_architecture(make_session, family):
    """Linear- and full-attention layers per layer_types, and routed + shared experts for the MoE build."""
    model = make_session(family).loaded.model
    text = model.config.text_config
    assert text.layer_types == ["linear_attention"] * 3 + ["full_attention"]
    layers = model.model.language_model.layers
    assert [hasattr(layer, "linear_attn") for layer in layers] == [True, True, True, False]
    assert hasattr(layers[3], "self_attn")
    if family == "qwen3_5_moe":
        assert text.num_experts == 4 and text.num_experts_per_tok == 2
        assert layers[0].mlp.experts.down_proj.shape[0] == 4 and hasattr(layers[0].mlp, "shared_expert")


@pytest.mark.parametrize("family", THINKING_FAMILIES)
@pytest.mark.parametrize("enable_thinking", [True, False])
def test_scripted_thinking_answer_follows_the_generation_prompt(make_session, family, enable_thinking):
    """A scripted "reasoning</think>\\n\\nanswer" comes back exactly, after either generation prompt and after a
    history holding the same answer (linear-attention layers included in the zeroed residual writes)."""
    session = make_session(family, DRAFT_THEN_ANSWER)
    model, processor = session.loaded.model, session.loaded.processor
    messages = [HISTORY[0], {"role": "assistant", "content": DRAFT_THEN_ANSWER}, HISTORY[2]]
    prompt = _render(processor, messages, enable_thinking=enable_thinking)
    inputs = processor(text=[prompt], return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:]
    assert processor.decode(new, skip_special_tokens=True) == DRAFT_THEN_ANSWER
    assert new[-1].item() == processor.tokenizer.eos_token_id


@pytest.mark.parametrize("family", THINKING_FAMILIES)
def test_status_names_the_family_and_has_no_slow_path_note_on_cpu(make_session, family):
    status = make_session(family).status()
    assert status.family == FAMILIES[family].display_name
    assert "linear attention" not in status.precision_note
