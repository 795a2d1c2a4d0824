"""Tiny checkpoints: real Qwen-VL classes load them offline, run images and videos, and scripted ones obey."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything here is local; a download attempt must fail

import numpy as np
import pytest
import torch
from PIL import Image

from qvl_core.testing.tiny import BYTE_ALPHABET, SPECIAL_TOKENS, build_checkpoint, split_answer

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe")
ARCHITECTURES = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_5": "Qwen3_5ForConditionalGeneration",
    "qwen3_5_moe": "Qwen3_5MoeForConditionalGeneration",
}
# Qwen3-VL's processor (16 px patches, 64-token minimum, "<t seconds>" video time) and no default system prompt.
QWEN3_PROCESSOR = ("qwen3_vl", "qwen3_5", "qwen3_5_moe")
# The thinking template: the generation prompt opens the reasoning (thinking is on by default).
GENERATION_PROMPT = {"qwen3_5": "<|im_start|>assistant\n<think>\n", "qwen3_5_moe": "<|im_start|>assistant\n<think>\n"}
MAX_TINY_BYTES = 20 * 1024 * 1024

JSON_ANSWER = (
    "```json\n[\n"
    '  {"bbox_2d": [12, 34, 156, 178], "label": "café ✓"},\n'
    '  {"bbox_2d": [200, 40, 310, 96], "label": "日本 sign"}\n'
    "]\n```"
)
HTML_ANSWER = (
    '```html\n<html><body>\n<h2 data-bbox="310 94 658 132">Título — 日本語 ✓</h2>\n'
    + "".join(
        f'<p data-bbox="{10 + i} {20 + i} {300 + i} {40 + i}">Line {i}: café &amp; “quotes”, naïve 🙂</p>\n'
        for i in range(40)
    )
    + "</body></html>\n```"
)
SAMPLING = {"do_sample": True, "temperature": 1.0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.3}
VIDEO_FPS = 2.0


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """`checkpoint(family, answer=None)`: the folder, built once per session."""
    built: dict[tuple[str, str | None], Path] = {}

    def get(family: str, answer: str | None = None) -> Path:
        key = (family, answer)
        if key not in built:
            folder = tmp_path_factory.mktemp(f"{family}_{'scripted' if answer else 'random'}")
            built[key] = build_checkpoint(folder, family=family, answer=answer)
        return built[key]

    return get


@pytest.fixture(scope="session")
def loaded(checkpoint):
    """`loaded(family, answer=None)`: (model, processor) loaded the way the app loads them."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cache: dict[tuple[str, str | None], tuple] = {}

    def get(family: str, answer: str | None = None):
        key = (family, answer)
        if key not in cache:
            path = checkpoint(family, answer)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
            cache[key] = (model.eval(), AutoProcessor.from_pretrained(path))
        return cache[key]

    return get


def _image(width: int = 90, height: int = 60) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _frames(count: int = 4) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, 56, 84, 3), dtype=np.uint8)


def _video_kwargs(frames: np.ndarray, fps: float = VIDEO_FPS) -> dict:
    """Already-sampled frames: no resampling, and the true rate through the metadata."""
    return {
        "do_sample_frames": False,
        "video_metadata": [{"fps": fps, "total_num_frames": len(frames), "frames_indices": list(range(len(frames)))}],
        "cap_pixels_per_frame": False,
    }


def _generate(model, processor, messages, *, images=None, videos=None, video_kwargs=None, max_new_tokens=20, **gen):
    """Run the real processor and `generate`; return (new text without specials, new ids, inputs)."""
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=images, videos=videos, return_tensors="pt", **(video_kwargs or {}))
    torch.manual_seed(0)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, **gen)
    new_ids = output[0, inputs["input_ids"].shape[1]:]
    return processor.decode(new_ids, skip_special_tokens=True), new_ids.tolist(), inputs


def _user(*parts) -> dict:
    return {"role": "user", "content": [*parts]}


IMAGE_PART = {"type": "image"}
VIDEO_PART = {"type": "video"}


def _text(text: str) -> dict:
    return {"type": "text", "text": text}


# --- pure pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["a", "hi", "\nstarts with a newline", JSON_ANSWER, HTML_ANSWER, "x" * 50, "<|box_start|>(1,2)<|box_end|>"],
)
def test_split_answer_gives_distinct_pieces_that_rebuild_the_text(text):
    taken = set(BYTE_ALPHABET.values()) | set(SPECIAL_TOKENS)
    pieces = split_answer(text, taken)
    assert "".join(pieces) == text
    lengths = [len(p) for p in pieces]
    assert lengths == sorted(set(lengths)), "lengths must be strictly increasing"
    if len(text) > 1:
        assert not any("".join(BYTE_ALPHABET[b] for b in p.encode()) in taken for p in pieces)


def test_split_answer_rejects_empty_text():
    with pytest.raises(ValueError, match="non-empty"):
        split_answer("", set())


def test_long_answer_stays_small():
    """~5000 chars of HTML -> about 100 pieces, not thousands of tokens."""
    pieces = split_answer(HTML_ANSWER * 2, set(BYTE_ALPHABET.values()))
    assert len(pieces) < 2 * int((2 * len(HTML_ANSWER * 2)) ** 0.5)


# --- files and configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_config_carries_markers_and_real_model_type(checkpoint, family):
    config = json.loads((checkpoint(family) / "config.json").read_text())
    assert config["model_type"] == family
    assert config["architectures"] == [ARCHITECTURES[family]]
    assert config["qvl_random_weights"] is True
    assert "qvl_scripted_answer" not in config
    assert config["tie_word_embeddings"] is False
    scripted = json.loads((checkpoint(family, JSON_ANSWER) / "config.json").read_text())
    assert scripted["qvl_random_weights"] is True and scripted["qvl_scripted_answer"] is True


@pytest.mark.parametrize("family", FAMILIES)
def test_ids_and_processor_defaults_match_the_real_layout(loaded, family):
    model, processor = loaded(family)
    tokenizer = processor.tokenizer
    config = model.config
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, tokenizer.pad_token_id]
    patch = 16 if family in QWEN3_PROCESSOR else 14
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size, image_processor.temporal_patch_size) == (
        patch, 2, 2)
    assert config.vision_config.patch_size == patch
    if family in QWEN3_PROCESSOR:
        assert dict(image_processor.size) == {"shortest_edge": 65536, "longest_edge": 16777216}
    else:
        assert dict(image_processor.size) == {"shortest_edge": 3136, "longest_edge": 12845056}
    if family == "qwen2_5_vl":
        assert config.vision_config.tokens_per_second == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_renders_qwen_chatml(loaded, family):
    _, processor = loaded(family)
    messages = [
        _user({"type": "image", "url": "file.png"}, _text("Describe.")),
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [VIDEO_PART, _text("And this?")]},
    ]
    prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = "" if family in QWEN3_PROCESSOR else "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    assert prompt == (
        system
        + "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Describe.<|im_end|>\n"
        + "<|im_start|>assistant\nA cat.<|im_end|>\n"
        + "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>And this?<|im_end|>\n"
        + GENERATION_PROMPT.get(family, "<|im_start|>assistant\n")
    )
    with_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    )
    assert processor.tokenizer.chat_template == processor.chat_template


# Conversations as the app and API callers send them (labels, data-URL images, list-valued system and assistant
# content, an empty follow-up); the tiny Qwen2/2.5-VL template must render each exactly as the released one does.
TEMPLATE_CASES = {
    "image, string reply, video": [
        _user({"type": "image", "url": "file.png"}, _text("Describe.")),
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [VIDEO_PART, _text("And this?")]},
    ],
    "string system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    "labelled media around text": [
        {"role": "system", "content": [_text("Answer in one word.")]},
        _user(_text("Picture 1: "), IMAGE_PART, _text("Compare with "),
              {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, _text(" — which? 日本")),
        {"role": "assistant", "content": [_text("The first.")]},
        _user(_text("")),
    ],
}


@pytest.mark.parametrize("generation_prompt", [True, False])
@pytest.mark.parametrize("case", list(TEMPLATE_CASES))
def test_tiny_template_renders_like_the_released_template(loaded, case, generation_prompt):
    """Bug guarded: the literal in test_chat_template_renders_qwen_chatml was written from the tiny template's
    own output, so a tiny template that drifted from the released one (system prompt, placeholders, spacing)
    kept every tiny-checkpoint test green while the real model would see other prompts."""
    from qvl_core.testing.shrunk import REAL_FILES_ENV, real_files_dir

    real = real_files_dir("Qwen2.5-VL-7B-Instruct")
    if real is None:
        pytest.skip(f"released Qwen2.5-VL-7B-Instruct files absent (shared/real-model-files or ${REAL_FILES_ENV})")
    released = json.loads((real / "chat_template.json").read_text(encoding="utf-8"))["chat_template"]
    _, processor = loaded("qwen2_5_vl")
    messages = TEMPLATE_CASES[case]
    ours = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    theirs = processor.apply_chat_template(messages, chat_template=released, tokenize=False,
                                           add_generation_prompt=generation_prompt)
    assert ours == theirs


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_checkpoints_are_small(checkpoint, family):
    for answer in (None, JSON_ANSWER):
        folder = checkpoint(family, answer)
        total = sum(f.stat().st_size for f in folder.iterdir())
        assert total < MAX_TINY_BYTES, f"{folder.name}: {total} bytes"


# --- random weights through the real classes -------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_random_checkpoint_generates_with_an_image(loaded, family):
    model, processor = loaded(family)
    _, new_ids, inputs = _generate(model, processor, [_user(IMAGE_PART, _text("What is this?"))],
                                   images=[_image()], max_new_tokens=5, do_sample=False)
    assert 1 <= len(new_ids) <= 5
    t, h, w = inputs["image_grid_thw"][0].tolist()
    assert t == 1 and h % 2 == 0 and w % 2 == 0
    if family in QWEN3_PROCESSOR:  # below Qwen3-VL's 64-token minimum: scaled up on the 32 px grid
        assert (h * 16) * (w * 16) >= 65536
    else:  # 90x60 is already above the 4-token minimum: rounded to the 28 px grid, 84x56
        assert (h * 14, w * 14) == (56, 84)
    n_image_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image_tokens == t * h * w // 4


@pytest.mark.parametrize("family", FAMILIES)
def test_random_checkpoint_generates_with_a_video_and_its_fps(loaded, family):
    model, processor = loaded(family)
    frames = _frames(4)
    _, new_ids, inputs = _generate(model, processor, [_user(VIDEO_PART, _text("What happens?"))],
                                   videos=[frames], video_kwargs=_video_kwargs(frames), max_new_tokens=5,
                                   do_sample=False)
    assert 1 <= len(new_ids) <= 5
    assert inputs["video_grid_thw"][0, 0].item() == 2  # 4 frames in pairs (temporal patch 2)
    if family == "qwen2_5_vl":
        assert inputs["second_per_grid_ts"].tolist() == [pytest.approx(2 / VIDEO_FPS)]
    if family in QWEN3_PROCESSOR:
        prompt = processor.decode(inputs["input_ids"][0])
        assert re.findall(r"<([\d.]+) seconds>", prompt) == ["0.2", "1.2"]  # pair midpoints at 2 fps


# --- scripted answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_checkpoint_answers_exactly_with_an_image(loaded, family):
    model, processor = loaded(family, JSON_ANSWER)
    eos = processor.tokenizer.eos_token_id
    messages = [_user(IMAGE_PART, _text("Outline every cake in JSON."))]
    for gen in ({"do_sample": False}, SAMPLING):
        text, new_ids, _ = _generate(model, processor, messages, images=[_image()], max_new_tokens=40, **gen)
        assert text == JSON_ANSWER, gen
        assert new_ids[-1] == eos


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_checkpoint_ignores_the_input(loaded, family):
    """Text only, multi-turn with the answer itself in history, and video: always the same answer."""
    model, processor = loaded(family, JSON_ANSWER)
    text, _, _ = _generate(model, processor, [{"role": "user", "content": "Hello"}], max_new_tokens=40,
                           do_sample=False)
    assert text == JSON_ANSWER
    frames = _frames(4)
    history = [
        _user(IMAGE_PART, _text("First?")),
        {"role": "assistant", "content": JSON_ANSWER},
        _user(VIDEO_PART, _text("Now the video, 日本?")),
    ]
    text, _, _ = _generate(model, processor, history, images=[_image()], videos=[frames],
                           video_kwargs=_video_kwargs(frames), max_new_tokens=40, **SAMPLING)
    assert text == JSON_ANSWER


def test_scripted_checkpoint_reproduces_a_long_unicode_html_answer(loaded):
    assert len(HTML_ANSWER) > 2000
    model, processor = loaded("qwen2_5_vl", HTML_ANSWER)
    for gen in ({"do_sample": False}, {**SAMPLING, "repetition_penalty": 2.0}):
        text, new_ids, _ = _generate(model, processor, [_user(IMAGE_PART, _text("QwenVL HTML"))],
                                     images=[_image()], max_new_tokens=200, **gen)
        assert text == HTML_ANSWER, gen
        assert len(new_ids) < 100


def test_cli_builds_a_scripted_checkpoint(run_python, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    out = tmp_path / "cli"
    result = run_python("-m", "qvl_core.testing.tiny", str(out), "--family", "qwen2_vl", "--answer", "hi", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "qwen2_vl" and config["qvl_scripted_answer"] is True
    model = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(out)
    text, _, _ = _generate(model, processor, [{"role": "user", "content": "Say something"}], max_new_tokens=5,
                           do_sample=False)
    assert text == "hi"


def test_cli_rejects_two_answer_sources(run_python, tmp_path):
    answer_file = tmp_path / "answer.txt"
    answer_file.write_text("x", encoding="utf-8")
    result = run_python("-m", "qvl_core.testing.tiny", str(tmp_path / "o"), "--answer", "a", "--answer-file",
                        str(answer_file), timeout=60)
    assert result.returncode == 2 and "not allowed with" in result.stderr
