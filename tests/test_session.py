"""Tier 2: the real model classes on tiny checkpoints: streaming, media, cancellation, faults, bad input."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time

import pytest
import torch

from qvl_core.engine.loading import LoadOptions, read_family
from qvl_core.engine.local import ModelSession
from qvl_core.engine.messages import Turn, user_turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import GenerationError, ModelLoadError, UserError
from tests.conftest import as_model_writes

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]


def ask(text: str, files=(), max_new_tokens: int = 16, **kwargs) -> GenerationRequest:
    return GenerationRequest(turns=(user_turn(text, list(files)),),
                             sampling=SamplingParams(max_new_tokens=max_new_tokens), **kwargs)


@contextlib.contextmanager
def patched_forward(session: ModelSession, fn):
    """Replace the model's forward for one test, restoring it afterwards."""
    model = session.loaded.model
    original = model.forward
    # wraps() keeps forward's signature, which generate() inspects to validate its arguments.
    model.forward = functools.wraps(original)(fn(original))
    try:
        yield
    finally:
        model.forward = original


@pytest.mark.parametrize("family", FAMILIES)
def test_streams_an_answer_about_an_image(make_session, media_dir, family):
    s = make_session(family)
    chunks = list(s.stream(ask("What is in this picture?", [media_dir / "noise.png"])))
    stats = chunks[-1].stats
    assert stats is not None and all(c.stats is None for c in chunks[:-1])
    assert stats.finish_reason in ("stop", "length")
    assert stats.completion_tokens == chunks[-1].tokens <= 16
    assert stats.ttft_s is not None and stats.ttft_s > 0
    assert stats.peak_gpu_mb is None  # no GPU here: reported as unknown, never invented
    assert stats.image_original_sizes == ((400, 300),)
    w, h = stats.image_input_sizes[0]
    assert w % s.family.factor == 0 and h % s.family.factor == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_several_images_are_labelled_and_fully_tokenized(make_session, media_dir, family):
    s = make_session(family)
    req = ask("Compare them", [media_dir / "noise.png", media_dir / "red.jpg", media_dir / "transparent.png"],
              label_media=True)
    prepared = s.prepare(req)
    tok = s.loaded.processor.tokenizer
    prompt = tok.decode(prepared.inputs["input_ids"][0])
    assert "Picture 1: <|vision_start|>" in prompt and "Picture 3: <|vision_start|>" in prompt
    image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
    n_pad = int((prepared.inputs["input_ids"][0] == image_pad).sum())
    f = s.family.factor
    expected = sum((w // f) * (h // f) for w, h in (im.input_size for im in prepared.images))
    assert n_pad == expected
    assert [im.original_size for im in prepared.images] == [(400, 300), (1000, 500), (64, 64)]
    _text, stats = s.generate(req)
    assert stats.completion_tokens > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_video_carries_its_true_sampling_rate(make_session, media_dir, family):
    s = make_session(family)
    req = ask("What happens?", [media_dir / "count.avi"])
    prepared = s.prepare(req)
    video = prepared.videos[0]
    assert len(video.frames) == 8 and video.fps == pytest.approx(2.0)  # 4 s at 2 fps
    assert video.indices == [0, 5, 10, 15, 20, 25, 30, 35]
    grid_t = int(prepared.inputs["video_grid_thw"][0][0])
    assert grid_t == 4  # two frames per temporal patch
    if family == "qwen2_5_vl":
        # 2 frames per patch at 2 fps: each temporal step is exactly 1 s.
        assert prepared.inputs["second_per_grid_ts"] == pytest.approx([1.0])
    if family in ("qwen3_vl", "qwen3_5", "qwen3_5_moe"):  # Qwen3-VL's processor writes "<t seconds>"
        prompt = s.loaded.processor.tokenizer.decode(prepared.inputs["input_ids"][0])
        # Frame pairs are stamped with the mean time of the pair: (0 + 0.5) / 2, (1 + 1.5) / 2, ...
        assert "<0.2 seconds>" in prompt and "<3.2 seconds>" in prompt
    _text, stats = s.generate(req)
    assert stats.completion_tokens > 0


def test_multi_turn_conversation_with_media_in_history(make_session, media_dir):
    s = make_session("qwen2_5_vl")
    turns = (user_turn("Look", [media_dir / "red.jpg"]), Turn("assistant", "A red image."),
             user_turn("And now this one?", [media_dir / "noise.png"]))
    prepared = s.prepare(GenerationRequest(turns=turns))
    assert len(prepared.images) == 2
    prompt = s.loaded.processor.tokenizer.decode(prepared.inputs["input_ids"][0])
    assert prompt.count("<|im_start|>user") == 2 and "A red image.<|im_end|>" in prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_answer_comes_out_exactly(make_session, media_dir, family):
    answer = 'Here:\n```json\n[{"bbox_2d": [12, 30, 200, 180], "label": "café ✓ 日本"}]\n```'
    s = make_session(family, as_model_writes(family, answer))
    assert s.status().scripted and s.status().random_weights
    text, stats = s.generate(ask("Find it", [media_dir / "noise.png"], max_new_tokens=200))
    assert text == answer and stats.finish_reason == "stop"
    sampled = GenerationRequest(turns=(user_turn("again", [media_dir / "red.jpg"]),),
                                sampling=SamplingParams(max_new_tokens=200, temperature=1.0, top_p=0.9, top_k=50,
                                                        repetition_penalty=1.3, seed=7))
    assert s.generate(sampled)[0] == answer


def test_length_finish_reason(make_session):
    answer = "0123456789" * 20
    s = make_session("qwen2_5_vl", answer)
    text, stats = s.generate(ask("count", max_new_tokens=5))
    assert stats.finish_reason == "length" and stats.completion_tokens == 5
    assert answer.startswith(text) and 0 < len(text) < len(answer)


def test_closing_the_stream_cancels_within_a_step_and_frees_the_lock(make_session):
    s = make_session("qwen2_5_vl")
    stream = s.stream(ask("go on forever", max_new_tokens=20_000))
    seen = 0
    for chunk in stream:
        seen = chunk.tokens
        if seen >= 3:
            break
    stream.close()  # what Gradio does on Stop
    assert not s._gpu_lock.locked()
    assert not any(t.name == "qvl-generate" for t in threading.enumerate())
    # The next request starts at once and runs normally.
    _text, stats = s.generate(ask("next", max_new_tokens=4))
    assert stats.finish_reason in ("stop", "length")


class ContendedLock:
    """A lock that reports when a caller found it taken and had to wait (orders threads without sleeping)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(blocking=False):
            return True
        self.contended.set()
        return self._lock.acquire(blocking, timeout) if blocking else False

    def release(self) -> None:
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def test_one_users_stop_does_not_touch_another_generation(make_session, monkeypatch):
    """Guards against a stop flag shared by every request (one user's Stop cancelling the next generation).
    B must be waiting for the lock A holds when A stops: the order is forced, where a sleep(0.2) only hoped."""
    s = make_session("qwen2_5_vl")
    lock = ContendedLock()
    monkeypatch.setattr(s, "_gpu_lock", lock)
    results: dict[str, object] = {}
    first = s.stream(ask("A", max_new_tokens=20_000))
    next(first)  # A holds the GPU lock now

    def other():
        results["B"] = s.generate(ask("B", max_new_tokens=12))[1]

    t = threading.Thread(target=other)
    t.start()
    assert lock.contended.wait(timeout=120), "B never reached the GPU lock"  # B found it taken and waits
    first.close()  # A stops
    t.join(timeout=120)
    assert results["B"].finish_reason in ("stop", "length")
    assert results["B"].finish_reason != "cancelled"


def test_error_inside_generation_reaches_the_caller_and_the_model_stays_usable(make_session):
    s = make_session("qwen2_5_vl")
    calls = {"n": 0}

    def failing(original):
        def forward(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected fault in decode step")
            return original(*args, **kwargs)
        return forward

    with patched_forward(s, failing), pytest.raises(GenerationError, match="injected fault"):
        for _ in s.stream(ask("fail please", max_new_tokens=50)):
            pass
    assert not s._gpu_lock.locked()
    assert s.generate(ask("fine now", max_new_tokens=3))[1].completion_tokens > 0


def test_slow_prefill_is_not_a_timeout(make_session):
    """Regression: a streamer timeout turned a slow first token (long video prefill) into a failure."""
    s = make_session("qwen2_5_vl")
    calls = {"n": 0}

    def slow_first(original):
        def forward(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 1:
                time.sleep(1.5)
            return original(*args, **kwargs)
        return forward

    with patched_forward(s, slow_first):
        _text, stats = s.generate(ask("slow", max_new_tokens=3))
    assert stats.ttft_s >= 1.5 and stats.completion_tokens > 0


def test_out_of_memory_becomes_advice_and_the_model_stays_usable(make_session):
    s = make_session("qwen2_5_vl")

    def oom(original):
        def forward(*args, **kwargs):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward

    with patched_forward(s, oom), pytest.raises(UserError, match="ran out of memory.*max image tokens"):
        s.generate(ask("too big"))
    assert s.generate(ask("small", max_new_tokens=3))[1].completion_tokens > 0


# ---- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "message"), [
    ("empty.png", "'empty.png' is empty"),
    ("fake.png", "'fake.png' is not an image"),
    ("fake.mp4", "'fake.mp4' is not a video|no readable frames"),
    ("missing.png", "does not exist"),
])
def test_bad_media_is_named(make_session, media_dir, name, message):
    s = make_session("qwen2_5_vl")
    with pytest.raises(UserError, match=message):
        s.generate(ask("look", [media_dir / name]))
    assert not s._gpu_lock.locked()


@pytest.mark.parametrize(("side", "message"), [(12000, r"12000x12000 = 144\.0 MP, over the limit of 64 MP"),
                                              (30000, "over the limit of 64 MP")])
def test_decompression_bomb_is_refused_before_decoding(make_session, tmp_path, side, message):
    from PIL import Image

    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)  # 144 or 900 MP, a small file on disk
    assert bomb.stat().st_size < 300_000
    with pytest.raises(UserError, match=message):
        make_session("qwen2_5_vl").generate(ask("look", [bomb]))


def test_model_folder_that_does_not_exist():
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_family("/no/such/model/folder")


def test_unreachable_hub_model_says_how_to_pass_a_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="--model /path/to/folder"):
        read_family("Qwen/Qwen2.5-VL-not-cached-anywhere")


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(UserError, match="Unsupported model type 'gpt2'"):
        read_family(str(tmp_path))


def test_status_summary(make_session):
    st = make_session("qwen2_5_vl").status()
    assert st.family == "Qwen2.5-VL" and st.device == "cpu" and st.dtype == "float32" and st.attention == "sdpa"
    assert "Qwen2.5-VL" in st.summary() and st.gpu_memory_mb is None


def test_load_is_thread_safe_and_happens_once(ckpt_dir, monkeypatch):
    import qvl_core.engine.local as session_mod

    calls = {"n": 0}
    real = session_mod.load_model

    def counting(opt):
        calls["n"] += 1
        return real(opt)

    monkeypatch.setattr(session_mod, "load_model", counting)
    s = ModelSession(LoadOptions(model=str(ckpt_dir("qwen2_5_vl")), device="cpu"))
    threads = [threading.Thread(target=s.load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls["n"] == 1


def test_decoder_keeps_grounding_special_tokens_and_drops_control_tokens(make_session):
    """Regression: decoding with skip_special_tokens=True stripped Qwen2-VL's <|box_start|> markers.

    Also guards its own premise: the tiny tokenizer once registered only <|im_end|> and <|endoftext|> as special,
    so the box markers were never candidates for dropping and the test passed with the kept-token logic deleted.
    """
    from qvl_core.engine.decoding import KEPT_SPECIAL_TOKENS, IncrementalDecoder

    tok = make_session("qwen2_vl").loaded.processor.tokenizer
    # As in the released tokenizer: the kept markers are special tokens, so only the kept-token logic keeps them.
    assert {tok.convert_tokens_to_ids(t) for t in KEPT_SPECIAL_TOKENS} <= set(tok.all_special_ids)
    ids = [*tok.encode("the cat", add_special_tokens=False)]
    marked = ["<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>"]
    control = [tok.convert_tokens_to_ids(t) for t in ("<|vision_pad|>", "<|image_pad|>", "<|endoftext|>")]
    seq = [tok.convert_tokens_to_ids(marked[0]), *ids, tok.convert_tokens_to_ids(marked[1]), *control,
           tok.convert_tokens_to_ids(marked[2]), *tok.encode("(1,2),(3,4)", add_special_tokens=False),
           tok.convert_tokens_to_ids("<|box_end|>"), tok.convert_tokens_to_ids("<|im_end|>")]
    dec = IncrementalDecoder(tok)
    text = "".join(dec.add([i]) for i in seq) + dec.flush()
    assert text == "<|object_ref_start|>the cat<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|>"
    assert dec.count == len(seq)
