"""Real-files tier: a shrunken random-weight Qwen2.5-VL with the released tokenizer, template and processor files."""

from __future__ import annotations

import json
import re

import pytest
import torch
from PIL import Image

from qvl_core.engine.decoding import IncrementalDecoder
from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.local import ModelSession, _eos_ids
from qvl_core.engine.messages import Media, Turn, build_messages
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest, collect
from qvl_core.media.images import PixelBudget, prepare_image, smart_resize
from qvl_core.testing.shrunk import REAL_FILES_ENV, build_shrunk_checkpoint, real_files_dir

REAL = real_files_dir("Qwen2.5-VL-7B-Instruct")
pytestmark = pytest.mark.skipif(
    REAL is None, reason=f"released Qwen2.5-VL-7B-Instruct files absent (shared/real-model-files or ${REAL_FILES_ENV})")

# Ids of the released vocabulary (tokenizer_config.json), written out so a wrong file or a remapping shows.
IM_END, ENDOFTEXT = 151645, 151643
KEPT_IDS = {"<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
            "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651}
CONTROL_IDS = {"<|im_start|>": 151644, "<|vision_start|>": 151652, "<|vision_end|>": 151653,
               "<|vision_pad|>": 151654, "<|image_pad|>": 151655, "<|video_pad|>": 151656}


@pytest.fixture(scope="module")
def shrunk_dir(tmp_path_factory):
    return build_shrunk_checkpoint(REAL, tmp_path_factory.mktemp("shrunk-qwen2_5_vl"))


@pytest.fixture(scope="module")
def session(shrunk_dir) -> ModelSession:
    s = ModelSession(LoadOptions(model=str(shrunk_dir), device="cpu"))
    s.load()
    return s


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, str]:
    """Three images of odd sizes, written by the test run."""
    d = tmp_path_factory.mktemp("real-files-media")
    paths = {}
    for name, size, colour in (("a.png", (90, 60), (200, 30, 30)), ("b.png", (300, 200), (30, 30, 200)),
                               ("c.png", (57, 29), (30, 200, 30))):
        Image.new("RGB", size, colour).save(d / name)
        paths[name] = str(d / name)
    return paths


def _tokenizer(session: ModelSession):
    return session.loaded.processor.tokenizer


# ---- the checkpoint ---------------------------------------------------------------------------------------
def test_shrunk_checkpoint_keeps_the_released_ids_and_files(shrunk_dir, session):
    config = json.loads((shrunk_dir / "config.json").read_text())
    released = json.loads((REAL / "config.json").read_text())
    for key in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id", "vocab_size"):
        assert config.get(key, config["text_config"].get(key)) == released[key], key
    assert config["text_config"]["num_hidden_layers"] < released["num_hidden_layers"]
    for name in ("tokenizer.json", "chat_template.json", "preprocessor_config.json", "generation_config.json"):
        assert (shrunk_dir / name).read_bytes() == (REAL / name).read_bytes(), name
    lm = session.loaded
    assert lm.random_weights and lm.family.model_type == "qwen2_5_vl"
    assert len(_tokenizer(session)) == 151665 and lm.model.config.text_config.vocab_size == 152064


# ---- incremental decoding with the real vocabulary --------------------------------------------------------
def test_decoder_keeps_box_markers_and_drops_control_tokens_with_the_real_tokenizer(session):
    """Bug guarded: skip_special_tokens=True stripped Qwen2-VL's box markers; keeping every special token would
    leak <|im_end|>, <|endoftext|> and vision pads into answers. The released tokenizer registers all of them."""
    tok = _tokenizer(session)
    assert {tok.convert_tokens_to_ids(t) for t in (*KEPT_IDS, *CONTROL_IDS)} == {*KEPT_IDS.values(),
                                                                                 *CONTROL_IDS.values()}
    assert {*KEPT_IDS.values(), *CONTROL_IDS.values(), IM_END, ENDOFTEXT} <= set(tok.all_special_ids)
    answer = ("<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(120,40),(380,300)<|box_end|>"
              "<|quad_start|>(1,2),(3,4),(5,6),(7,8)<|quad_end|>")
    ids = tok.encode(answer, add_special_tokens=False)
    assert [i for i in ids if i in KEPT_IDS.values()] == list(KEPT_IDS.values())  # one id per marker
    control = list(CONTROL_IDS.values())
    seq = [*control[:3], *ids[:5], *control[3:], *ids[5:], IM_END, ENDOFTEXT]
    dec = IncrementalDecoder(tok)
    text = "".join(dec.add([i]) for i in seq) + dec.flush()
    assert text == answer
    assert dec.count == len(seq)


def test_incremental_decoding_of_cjk_and_emoji_across_real_bpe_merges(session):
    """Bug guarded: a delta cut inside a multi-byte character streams U+FFFD (byte-level BPE splits CJK and emoji
    over tokens, which the byte-per-token tiny tokenizer never shows between merged tokens)."""
    tok = _tokenizer(session)
    text = "東京の天気は晴れです。中文测试：你好，世界！😀👍🏽 👨‍👩‍👧 🇯🇵 ✓ naïve café 한국어"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) < len(text.encode("utf-8"))  # real merges, not one token per byte
    # The premise: some token boundaries fall inside a character.
    assert any(tok.decode(ids[:n]).endswith("\ufffd") for n in range(1, len(ids)))
    dec = IncrementalDecoder(tok)
    deltas = [dec.add([i]) for i in ids] + [dec.flush()]
    assert not [d for d in deltas if "\ufffd" in d]
    assert "".join(deltas) == tok.decode(ids) == text


# ---- resize against the real processor ----------------------------------------------------------------------
ODD_SIZES = [(1, 1), (3, 5), (13, 27), (27, 29), (57, 29), (199, 1), (1, 150), (999, 1001), (1919, 1081),
             (4100, 3200)]  # (width, height); the last is above the released max pixels


@pytest.mark.parametrize("budget_kind", ["released", "app default"])
@pytest.mark.parametrize(("width", "height"), ODD_SIZES)
def test_our_resize_predicts_the_real_processor_grid(session, width, height, budget_kind):
    """Bug guarded: a resize that differs from the processor's by one token row shifts every grounding box."""
    lm = session.loaded
    if budget_kind == "released":
        released = json.loads((REAL / "preprocessor_config.json").read_text())
        budget, kwargs = PixelBudget(released["min_pixels"], released["max_pixels"]), {}
    else:
        budget = PixelBudget.from_tokens(lm.family)
        kwargs = {"size": {"shortest_edge": budget.min_pixels, "longest_edge": budget.max_pixels}}
    image = Image.new("RGB", (width, height))
    grid = lm.processor.image_processor(images=[image], return_tensors="pt", **kwargs)["image_grid_thw"]
    t, gh, gw = grid[0].tolist()
    patch = lm.model.config.vision_config.patch_size
    ours = smart_resize(height, width, factor=lm.family.factor, min_pixels=budget.min_pixels,
                        max_pixels=budget.max_pixels)
    assert (t, gh * patch, gw * patch) == (1, *ours)
    assert prepare_image(image, lm.family, budget).input_size == (gw * patch, gh * patch)


# ---- the released chat template ------------------------------------------------------------------------------
CONVERSATIONS = {
    "labelled, default system": (
        lambda im: [Turn("user", "What differs between these?", (Media("image", im["a.png"]),
                                                                  Media("image", im["b.png"]))),
                    Turn("assistant", "The left one is red; the right one is blue."),
                    Turn("user", "And this one? 日本語で。", (Media("image", im["c.png"]),))],
        None, True,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>"
        "Picture 2: <|vision_start|><|image_pad|><|vision_end|>What differs between these?<|im_end|>\n"
        "<|im_start|>assistant\nThe left one is red; the right one is blue.<|im_end|>\n"
        "<|im_start|>user\nPicture 3: <|vision_start|><|image_pad|><|vision_end|>And this one? 日本語で。<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
    "own system, text-only follow-up": (
        lambda im: [Turn("user", "Colour?", (Media("image", im["c.png"]),)), Turn("assistant", "Green."),
                    Turn("user", "Shape?")],
        "Answer in one word.", False,
        "<|im_start|>system\nAnswer in one word.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Colour?<|im_end|>\n"
        "<|im_start|>assistant\nGreen.<|im_end|>\n"
        "<|im_start|>user\nShape?<|im_end|>\n"
        "<|im_start|>assistant\n",
    ),
}


@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_released_template_renders_the_app_messages(session, images, case):
    """Bug guarded: messages that only our own tiny template understands (a wrong part type, a missing
    system prompt, labels in the wrong place) would reach the real model malformed."""
    make_turns, system, labels, expected = CONVERSATIONS[case]
    turns = tuple(make_turns(images))
    lm = session.loaded
    plan = build_messages(turns, system=system, label_media=labels)
    assert lm.processor.apply_chat_template(plan.messages, tokenize=False, add_generation_prompt=True) == expected

    # Through the app's own preparation: each placeholder expands to one pad per merged 28x28 patch.
    prepared = session.prepare(GenerationRequest(turns=turns, system=system, label_media=labels))
    prompt = _tokenizer(session).decode(prepared.inputs["input_ids"][0])
    runs = re.findall(r"<\|vision_start\|>((?:<\|image_pad\|>)*)<\|vision_end\|>", prompt)
    assert [len(r) // len("<|image_pad|>") for r in runs] == [
        (w // 28) * (h // 28) for w, h in (im.input_size for im in prepared.images)]
    assert re.sub(r"(<\|image_pad\|>)+", "<|image_pad|>", prompt) == expected


# ---- generation defaults and stopping ---------------------------------------------------------------------------
def test_released_generation_defaults_reach_the_loaded_model(session):
    lm = session.loaded
    gc = lm.model.generation_config
    assert (gc.do_sample, gc.temperature, gc.repetition_penalty) == (True, 1e-6, 1.05)
    assert list(gc.eos_token_id) == [IM_END, ENDOFTEXT]
    assert _tokenizer(session).eos_token_id == IM_END and _tokenizer(session).pad_token_id == ENDOFTEXT
    assert _eos_ids(lm) == {IM_END, ENDOFTEXT}


@pytest.mark.parametrize("eos", [IM_END, ENDOFTEXT])
def test_each_released_eos_id_ends_a_generation(session, images, eos):
    """Bug guarded: stopping only on the tokenizer's <|im_end|> runs a model that says <|endoftext|> on to
    max_new_tokens (the released generation_config lists both)."""
    lm = session.loaded
    tok = _tokenizer(session)
    script = [*tok.encode(" done", add_special_tokens=False), eos]
    step = {"n": 0}

    def force_next_token(module, args, output):
        # Replace the random logits so greedy decoding emits the script, then keeps repeating its first token.
        target = script[step["n"]] if step["n"] < len(script) else script[0]
        step["n"] += 1
        forced = torch.full_like(output, -1e4)
        forced[..., target] = 1e4
        return forced

    handle = lm.model.lm_head.register_forward_hook(force_next_token)
    try:
        request = GenerationRequest(turns=(Turn("user", "Say done.", (Media("image", images["a.png"]),)),),
                                    sampling=SamplingParams(max_new_tokens=8))
        text, stats = collect(session.stream(request))
    finally:
        handle.remove()
    assert (text, stats.completion_tokens, stats.finish_reason) == (" done", len(script), "stop")


# ---- the command line, end to end (a child process: conftest marks it `app` through qvl_cli) ----------------------
def test_cli_chat_runs_on_the_shrunk_checkpoint(qvl_cli, shrunk_dir, images):
    out = qvl_cli("chat", images["b.png"], "-p", "What colour is this?", "--model", str(shrunk_dir),
                  "--device", "cpu", "--max-new-tokens", "6", "--seed", "0")
    assert out.returncode == 0, out.stderr
    stats = re.search(r"\[(\d+) tokens, (stop|length)", out.stderr)
    assert stats, out.stderr
    assert 1 <= int(stats.group(1)) <= 6
    # Random weights say anything, but control tokens never reach the screen.
    assert not [t for t in ("<|im_end|>", "<|endoftext|>", "<|image_pad|>", "<|vision_start|>") if t in out.stdout]
