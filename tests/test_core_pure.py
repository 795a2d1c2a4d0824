"""Tier 1: pure functions (messages, conversation edits, limits, resize, frame sampling, config)."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qvl_core.engine.messages import Media, Turn, build_messages, media_kind
from qvl_core.engine.sampling import SamplingParams, sampling_from_values, validate_sampling
from qvl_core.errors import UserError
from qvl_core.families import FAMILIES, family_for
from qvl_core.media.images import PixelBudget, fit_aspect, prepare_image, smart_resize
from qvl_core.media.video import VideoBudget, frame_indices
from qvl_core.settings import DEFAULT_MAX_NEW_TOKENS_LIMIT as MAX_NEW_TOKENS_LIMIT
from qvl_core.tasks.conversation import MAX_MEDIA_PER_MESSAGE, Conversation
from ui.config import add_serve_args, serve_config


# ---- family table -------------------------------------------------------------------------------
@pytest.mark.parametrize(("model_type", "factor", "coords"), [
    ("qwen2_vl", 28, "norm1000"), ("qwen2_5_vl", 28, "absolute"), ("qwen3_vl", 32, "norm1000"),
    ("qwen3_5", 32, "norm1000"), ("qwen3_5_moe", 32, "norm1000"), ("qwen4_exp", 32, "norm1000"),
])
def test_family_table(model_type, factor, coords):
    spec = family_for(model_type)
    assert spec.factor == factor and spec.coords == coords


def test_unknown_family_names_what_is_supported():
    with pytest.raises(UserError, match="llava.*qwen2_5_vl"):
        family_for("llava")


# ---- sampling limits ----------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "message"), [
    ("max_new_tokens", 0, "max_new_tokens must be between 1"),
    ("max_new_tokens", MAX_NEW_TOKENS_LIMIT + 1, str(MAX_NEW_TOKENS_LIMIT)),
    ("max_new_tokens", 1.5, "whole number"),
    ("temperature", -0.1, "temperature must be between 0.0 and 2.0"),
    ("temperature", float("nan"), "temperature must be a number"),
    ("top_p", 0.0, "top_p must be above 0"),
    ("top_p", 1.5, "top_p must be between"),
    ("top_k", -1, "top_k must be between"),
    ("repetition_penalty", 0.5, "repetition_penalty must be between 1.0 and 2.0"),
    ("seed", -5, "seed must be between"),
    ("temperature", "hot", "temperature must be a number"),
    ("presence_penalty", 2.5, "presence_penalty must be between -2.0 and 2.0"),
    ("presence_penalty", float("inf"), "presence_penalty must be a number"),
])
def test_invalid_sampling_values_name_the_limit(field, value, message):
    with pytest.raises(UserError, match=message):
        validate_sampling(SamplingParams(**{field: value}), max_new_tokens=MAX_NEW_TOKENS_LIMIT)


def test_sampling_from_slider_values():
    p = sampling_from_values(max_new_tokens=128.0, temperature=0.7, top_k=40.0, seed=-1)
    assert p.max_new_tokens == 128 and p.top_k == 40 and p.seed is None and not p.greedy
    assert SamplingParams(temperature=0.0).greedy and not SamplingParams().greedy  # None: the model's own


# ---- resize ---------------------------------------------------------------------------------------
def test_smart_resize_matches_installed_transformers():
    """Our sizes must equal the processor's, or every grounding coordinate is off."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

    cases = [(1080, 1920, 28, 3136, 1280 * 784), (21, 4000, 28, 3136, 16384 * 784), (3000, 2000, 32, 4096, 1024 * 1024),
             (28, 28, 28, 3136, 12845056), (999, 1001, 28, 256 * 784, 1280 * 784), (50, 9000, 28, 3136, 1280 * 784)]
    for h, w, factor, lo, hi in cases:
        assert smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi) == \
            hf_smart_resize(h, w, factor=factor, min_pixels=lo, max_pixels=hi)


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 12000), w=st.integers(1, 12000), tokens=st.integers(32, 16384),
       family=st.sampled_from(sorted(FAMILIES)))
def test_smart_resize_properties(h, w, tokens, family):
    # tokens >= 32: upscaling a tiny image may overshoot a smaller cap (the reference rounds up).
    spec = family_for(family)
    if max(h, w) / min(h, w) > 200:
        with pytest.raises(UserError, match="aspect ratio"):
            smart_resize(h, w, factor=spec.factor, min_pixels=4 * spec.pixels_per_token,
                         max_pixels=tokens * spec.pixels_per_token)
        return
    budget = PixelBudget.from_tokens(spec, max_tokens=tokens)
    nh, nw = smart_resize(h, w, factor=spec.factor, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels)
    assert nh % spec.factor == 0 and nw % spec.factor == 0
    # The reference keeps a short side of at least one token, which can exceed the cap on thin strips.
    assert nh * nw <= budget.max_pixels or min(nh, nw) == spec.factor
    # What prepare_image hands over is a fixed point: the processor's own resize is then a no-op.
    fh, fw = fit_aspect(nh, nw, factor=spec.factor)
    assert smart_resize(fh, fw, factor=spec.factor, min_pixels=budget.min_pixels,
                        max_pixels=max(budget.max_pixels, fh * fw)) == (fh, fw)


def test_rounding_past_the_aspect_limit_is_trimmed():
    """Regression: 5615x29 resized to 5628x28 (201:1), which the processor refuses."""
    from PIL import Image

    spec = family_for("qwen2_5_vl")
    prepared = prepare_image(Image.new("RGB", (5615, 29)), spec, PixelBudget.from_tokens(spec, max_tokens=201))
    w, h = prepared.input_size
    assert w / h <= 200 and w % 28 == 0 and h % 28 == 0


# ---- messages -------------------------------------------------------------------------------------
def test_build_messages_places_media_before_text_and_labels_across_turns():
    turns = (
        Turn("user", "compare", (Media("image", "a.png"), Media("image", "b.jpg"))),
        Turn("assistant", "They differ."),
        Turn("user", "and this clip?", (Media("video", "c.mp4"), Media("image", "d.png"))),
    )
    plan = build_messages(turns, system="Be brief.", label_media=True)
    assert plan.messages[0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    first = plan.messages[1]["content"]
    assert first == [{"type": "text", "text": "Picture 1: "}, {"type": "image"},
                     {"type": "text", "text": "Picture 2: "}, {"type": "image"}, {"type": "text", "text": "compare"}]
    last = plan.messages[3]["content"]
    assert [p.get("text") for p in last if p["type"] == "text"] == ["Video 1: ", "Picture 3: ", "and this clip?"]
    assert [m.path for m in plan.media] == ["a.png", "b.jpg", "c.mp4", "d.png"]
    assert [m.path for m in plan.videos] == ["c.mp4"]


def test_build_messages_without_labels_or_system():
    plan = build_messages((Turn("user", "hi", (Media("image", "x.png"),)),))
    assert plan.messages == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]


def test_assistant_raw_text_goes_to_the_model_unchanged():
    """The official demo fed HTML-formatted replies back as history; we never do."""
    raw = "Line 1\n<b>not markup</b> & $x^2$"
    plan = build_messages((Turn("user", "q"), Turn("assistant", raw), Turn("user", "again")))
    assert plan.messages[1]["content"] == [{"type": "text", "text": raw}]


@pytest.mark.parametrize(("name", "kind"), [("a.PNG", "image"), ("b.webp", "image"), ("c.MOV", "video"),
                                            ("d.mkv", "video")])
def test_media_kind(name, kind):
    assert media_kind(name) == kind


def test_unsupported_file_type_is_named():
    with pytest.raises(UserError, match=r"'notes\.pdf' is not a supported image or video"):
        media_kind("/tmp/notes.pdf")


# ---- conversation edits ----------------------------------------------------------------------------
def test_conversation_send_answer_retry_undo_edit():
    c = Conversation().send("hello", ["a.png"])
    assert c.awaiting_answer and c.turns[0].media[0].kind == "image"
    c = c.with_answer("partial", "stopped").with_answer("full", "12 tokens")
    assert [t.text for t in c.turns] == ["hello", "full"] and c.notes == ("", "12 tokens")
    c2 = c.send("more")
    assert c2.retry().turns == c2.turns  # nothing to drop, still answerable
    assert c2.with_answer("x").retry().turns == c2.turns
    undone, turn = c2.with_answer("x").undo()
    assert turn.text == "more" and undone.turns == c.turns
    edited = c2.with_answer("x").edit(0, "hi there")
    assert [t.text for t in edited.turns] == ["hi there"] and edited.awaiting_answer
    fixed = c2.with_answer("x").edit(1, "better answer")
    assert fixed.turns[1].text == "better answer" and len(fixed.turns) == 4
    assert c is not c2 and len(c.turns) == 2  # immutability: nothing changed in place


@pytest.mark.parametrize(("text", "files", "message"), [
    ("", [], "Type a message"),
    ("x" * 100_001, [], "over the limit of 100000"),
    ("hi", [f"{i}.png" for i in range(MAX_MEDIA_PER_MESSAGE + 1)], "over the limit of 10 per message"),
    ("hi", ["data.csv"], "not a supported image or video"),
])
def test_conversation_refuses_bad_messages(text, files, message):
    with pytest.raises(UserError, match=message):
        Conversation().send(text, files)


def test_retry_with_nothing_to_retry():
    with pytest.raises(UserError, match="no message to retry"):
        Conversation().retry()


# ---- video frame sampling ----------------------------------------------------------------------------
@pytest.mark.parametrize(("total", "fps", "budget", "expected_n"), [
    (300, 30.0, VideoBudget(), 20),  # 10 s at 2 fps
    (3000, 30.0, VideoBudget(max_frames=16), 16),
    (5, 25.0, VideoBudget(), 4),  # short clip: min 4 frames, never more than it has
    (3, 25.0, VideoBudget(), 2),  # even count
    (1, 25.0, VideoBudget(), 2),  # a single frame is repeated to fill the temporal patch
    (95, 30.0, VideoBudget(), 6),  # 3.17 s * 2 = 6.3 -> 6
])
def test_frame_indices_even_clamped_and_spread(total, fps, budget, expected_n):
    idx = frame_indices(total, fps, budget)
    assert len(idx) == expected_n and len(idx) % 2 == 0
    assert idx == sorted(idx) and idx[0] == 0 and idx[-1] <= total - 1
    if total >= expected_n:
        assert len(set(idx)) == len(idx)
        # Each frame sits where the model assumes it: k / sample_fps seconds, within one source frame.
        sample_fps = expected_n / total * fps
        assert all(abs(i / fps - k / sample_fps) < 1 / fps for k, i in enumerate(idx))


def test_integral_rate_ratio_gives_exact_times():
    """2 fps from a 10 fps clip must take every 5th frame exactly (0.0, 0.5, 1.0 ... s)."""
    assert frame_indices(80, 10.0, VideoBudget()) == list(range(0, 80, 5))


@pytest.mark.parametrize(("kwargs", "message"), [({"fps": 0}, "fps must be between"),
                                                 ({"max_frames": 10_000}, "Max frames must be between")])
def test_video_budget_limits(kwargs, message):
    with pytest.raises(UserError, match=message):
        VideoBudget(**kwargs)


# ---- config -----------------------------------------------------------------------------------------
def _serve(argv):
    p = argparse.ArgumentParser()
    add_serve_args(p)
    return serve_config(p.parse_args(argv))


def test_serve_flags_and_env(monkeypatch):
    monkeypatch.setenv("QVL_PORT", "9999")
    monkeypatch.setenv("QVL_MODEL", "/models/x")
    cfg = _serve(["--auth", "ann:secret", "--dtype", "bfloat16"])
    assert cfg.port == 9999 and cfg.load.model == "/models/x" and cfg.auth == ("ann", "secret")
    assert cfg.load.dtype == "bfloat16"


def test_bad_auth_is_explained():
    with pytest.raises(UserError, match="USER:PASS"):
        _serve(["--auth", "nopassword"])


def test_limits_from_environment(monkeypatch):
    from qvl_core.settings import env_float, env_int

    monkeypatch.setenv("QVL_MAX_IMAGE_PIXELS", "1000000")
    assert env_int("QVL_MAX_IMAGE_PIXELS", 5) == 1_000_000
    monkeypatch.setenv("QVL_MAX_VIDEO_SECONDS", "lots")
    with pytest.raises(UserError, match="QVL_MAX_VIDEO_SECONDS must be a number"):
        env_float("QVL_MAX_VIDEO_SECONDS", 1.0)
    monkeypatch.setenv("QVL_MAX_IMAGE_PIXELS", "-3")
    with pytest.raises(UserError, match="must be positive"):
        env_int("QVL_MAX_IMAGE_PIXELS", 5)
    monkeypatch.delenv("QVL_MAX_IMAGE_PIXELS")
    assert env_int("QVL_MAX_IMAGE_PIXELS", 5) == 5
