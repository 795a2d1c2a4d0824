"""The Chat tab sends a system prompt only when the user wrote one; otherwise the model's template decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch  # noqa: F401 - imported at collection: its first import runs ldconfig, which no fast test may start

from qvl_core.engine.messages import build_messages, user_turn
from qvl_core.tasks.conversation import Conversation
from qvl_core.testing.shrunk import real_files_dir
from ui.tabs.chat import DEFAULT_SYSTEM, SYSTEM_PLACEHOLDER, ChatSettings

TEMPLATE_DEFAULT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
# The released Qwen2.5-VL-7B-Instruct non-weight files, where this machine has them.
REAL_FILES = real_files_dir("Qwen2.5-VL-7B-Instruct") or Path("/nonexistent")


def chat_prompt(session, system: str) -> str:
    """The prompt the model sees for one Chat-tab message with the settings box holding `system`."""
    settings = ChatSettings(system, (16, 0.0, 1.0, 0, 1.05, -1), 256, 2.0, 8, False)
    request = settings.request(Conversation().send("Hello"))
    prepared = session.prepare(request)
    return session.loaded.processor.tokenizer.decode(prepared.inputs["input_ids"][0])


def test_chat_tab_default_is_no_system_prompt():
    assert DEFAULT_SYSTEM == ""
    assert "default" in SYSTEM_PLACEHOLDER


@pytest.mark.parametrize("system", [DEFAULT_SYSTEM, "   \n"])
def test_qwen3_vl_gets_no_injected_system_prompt(make_session, system):
    """Regression: Chat always sent "You are a helpful assistant." as the system prompt, but Qwen3-VL's template
    has no default system prompt: the model saw a system turn it was never tuned with."""
    prompt = chat_prompt(make_session("qwen3_vl"), system)
    assert "<|im_start|>system" not in prompt
    assert prompt.startswith("<|im_start|>user\nHello<|im_end|>\n")


@pytest.mark.parametrize("system", [DEFAULT_SYSTEM, "   \n"])
def test_qwen2_5_vl_keeps_its_template_default_once(make_session, system):
    prompt = chat_prompt(make_session("qwen2_5_vl"), system)
    assert prompt.startswith(TEMPLATE_DEFAULT + "<|im_start|>user\nHello")
    assert prompt.count("<|im_start|>system") == 1


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"])
def test_a_written_system_prompt_is_sent_alone(make_session, family):
    prompt = chat_prompt(make_session(family), "Answer in French.")
    assert prompt.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nHello")
    assert prompt.count("<|im_start|>system") == 1 and "helpful assistant" not in prompt


@pytest.mark.skipif(not (REAL_FILES / "chat_template.json").is_file(), reason="released Qwen2.5-VL files absent")
@pytest.mark.parametrize(("system", "expected_system"), [
    (None, "You are a helpful assistant."), ("Answer in French.", "Answer in French."),
])
def test_released_qwen2_5_vl_template_supplies_its_own_default(make_session, system, expected_system):
    template = json.loads((REAL_FILES / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    plan = build_messages((user_turn("Hello"),), system=system)
    processor = make_session("qwen2_5_vl").loaded.processor
    prompt = processor.apply_chat_template(plan.messages, chat_template=template, tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.startswith(f"<|im_start|>system\n{expected_system}<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n")
    assert prompt.count("<|im_start|>system") == 1
