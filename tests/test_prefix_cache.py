"""Follow-ups reuse the conversation's prefix (issue 14): the reuse rule and the bounded store (pure), and on every
family's tiny random checkpoint, greedy answers with reuse equal to those without, turn by turn, for a follow-up,
retry, edit, undo, a new image later, a video, a system-prompt change and a Stop mid-answer; one conversation's
cache never serves another; the Chat footer says what was reused."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from qvl_core.engine.prefix_cache import PrefixCache, PrefixEntry, reuse_length
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest
from qvl_core.tasks.conversation import Conversation

ASSETS = Path(__file__).resolve().parent.parent / "assets"
SHAPES, RECEIPT, CLOCK = str(ASSETS / "shapes.png"), str(ASSETS / "receipt.png"), str(ASSETS / "clock.mp4")
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]
GREEDY = SamplingParams(max_new_tokens=10, temperature=0.0)
VISION = {90, 91}


# ---- pure: what can be reused, and the budget ------------------------------------------------------------
A, B = [(1, "picture-A")], [(1, "picture-B")]  # a picture whose placeholders start at position 1


@pytest.mark.parametrize(("cached", "new", "croppable", "media", "expected"), [
    ([1, 2, 3, 4], [1, 2, 3, 4, 5, 6], True, ([], []), 4),  # a follow-up extends the cached sequence
    ([1, 2, 3, 4], [1, 2, 9, 9, 9], True, ([], []), 2),  # a retry or edit: up to where they agree
    ([1, 2, 3, 4], [1, 2, 3, 4], True, ([], []), 3),  # the same prompt again: one token is left to prefill
    ([1, 2, 3, 4], [7, 2, 3, 4, 5], True, ([], []), 0),  # a changed system prompt: nothing in common
    ([1, 2, 3, 4], [1, 2, 3, 4, 90, 90, 5], True, ([], [(4, "x")]), 0),  # a new image after the prefix
    ([1, 90, 90, 4], [1, 90, 90, 7, 8], True, (A, A), 3),  # the same picture inside the reused part is fine
    ([1, 90, 90, 4], [1, 90, 90, 4, 5], True, (A, B), 0),  # same placeholders, another picture: nothing
    ([1, 90, 90, 4], [1, 90, 8, 8], True, (A, B), 0),  # a cut inside a picture
    ([1, 2, 3, 4], [1, 2, 3, 4, 5], False, ([], []), 4),  # linear attention: an exact extension continues it
    ([1, 2, 3, 4], [1, 2, 3, 9, 5], False, ([], []), 0),  # ... anything else cannot roll back its state
    ([], [1, 2], True, ([], []), 0),
])
def test_reuse_length_table(cached, new, croppable, media, expected):
    got = reuse_length(cached, new, croppable=croppable, vision_ids=VISION, cached_media=media[0],
                       new_media=media[1])
    assert got == expected


def test_media_positions_count_tokens_not_runs():
    """A Qwen3-VL video's placeholders are split into runs by its frames' timestamps: still one medium."""
    from qvl_core.engine.prefix_cache import media_positions

    ids = [1, 90, 90, 2, 91, 91, 7, 91, 91, 3, 90, 4]  # an image, a video (2 runs), an image
    got = media_positions(ids, {90: [(2, "img1"), (1, "img2")], 91: [(4, "vid")]})
    assert got == [(1, "img1"), (4, "vid"), (10, "img2")]


@dataclass
class _FakeCache:
    croppable: bool = True

    @property
    def is_croppable(self) -> bool:
        return self.croppable


def _entry(n_bytes: int) -> PrefixEntry:
    return PrefixEntry([1, 2], _FakeCache(), None, n_bytes)


def test_the_store_keeps_the_most_recent_within_its_budget():
    store = PrefixCache(budget_mb=1)
    mb = 2**20
    assert store.put("a", _entry(mb // 2)) and store.put("b", _entry(mb // 2))
    assert store.take("a") is not None  # a request takes its entry while it runs...
    assert "a" not in store
    store.put("a", _entry(mb // 2))  # ...and puts it back as the most recent
    store.put("c", _entry(mb // 2))  # over budget: b, the least recently used, goes
    assert "b" not in store and "a" in store and "c" in store
    assert not store.put("huge", _entry(2 * mb)) and "huge" not in store  # alone over the budget: dropped
    store.forget("a")
    assert store.stats().entries == 1 and store.stats().used_bytes == mb // 2
    store.clear()
    assert store.stats().entries == 0
    assert not PrefixCache(0).enabled
    with pytest.raises(ValueError, match="budget_mb"):
        PrefixCache(-1)


# ---- tiny checkpoints: the same tokens with and without reuse ---------------------------------------------
@pytest.fixture
def pair(make_session):
    """(warm, cold): one loaded tiny model, with a prefix store and without one."""
    from qvl_core.engine.local import ModelSession

    def make(family: str):
        shared = make_session(family)
        warm = ModelSession(shared.options, loaded=shared.loaded, prefix_cache=PrefixCache(256))
        cold = ModelSession(shared.options, loaded=shared.loaded, prefix_cache=PrefixCache(0))
        return warm, cold

    return make


def _answer(session, conv: Conversation, system: str | None = None, stop_after: int | None = None):
    request = GenerationRequest(turns=conv.turns, sampling=GREEDY, system=system, conversation_id=conv.key)
    text, stats = "", None
    with contextlib.closing(session.stream(request)) as stream:
        for i, chunk in enumerate(stream):
            text += chunk.text
            stats = chunk.stats or stats
            if stop_after is not None and i + 1 >= stop_after:
                break  # Stop: the consumer closes the stream mid-answer
    return text, stats


def _both(warm, cold, conv: Conversation, **kwargs) -> tuple[str, int]:
    """The warm session's answer and how much it reused, after checking that the cold session says the same."""
    text, stats = _answer(warm, conv, **kwargs)
    cold_text, _ = _answer(cold, Conversation(conv.turns, key=conv.key), **kwargs)
    assert text == cold_text, (text, cold_text)
    return text, (stats.reused_tokens if stats else 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_answers_are_the_same_with_and_without_reuse(pair, family):
    warm, cold = pair(family)
    conv = Conversation().send("Describe this picture", [SHAPES])
    text, reused = _both(warm, cold, conv)
    assert reused == 0  # nothing kept yet
    conv = conv.with_answer(text).send("And its colours?")  # a follow-up
    text, reused = _both(warm, cold, conv)
    assert reused > 0
    conv = conv.with_answer(text)
    retried = conv.retry()  # retry: the same prompt again
    text, reused = _both(warm, cold, retried)
    assert reused > 0
    edited = retried.edit(len(retried.turns) - 1, "And its shapes?")  # edit the last message
    text, reused = _both(warm, cold, edited)
    # Qwen3.5's linear-attention state cannot go back into the edited message: its snapshot ends after it.
    assert (reused == 0) if family.startswith("qwen3_5") else (reused > 0)
    undone, _ = edited.with_answer(text).undo()  # undo, then a message with a new image
    later = undone.send("And this one?", [RECEIPT])
    text, _ = _both(warm, cold, later)
    conv = later.with_answer(text).send("Which is larger?")
    _text, reused = _both(warm, cold, conv)
    assert reused > 0
    _, reused = _both(warm, cold, conv, system="Answer in French.")  # a changed system prompt: nothing reused
    assert reused == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_a_stop_mid_answer_then_a_follow_up(pair, family):
    warm, cold = pair(family)
    conv = Conversation().send("Describe this picture", [SHAPES])
    partial, _ = _answer(warm, conv, stop_after=3)
    conv = conv.with_answer(partial).send("Go on.")
    _text, reused = _both(warm, cold, conv)
    assert reused > 0


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_a_video_conversation(pair, family):
    warm, cold = pair(family)
    conv = Conversation().send("What happens?", [CLOCK])
    text, _ = _both(warm, cold, conv)
    _text, reused = _both(warm, cold, conv.with_answer(text).send("When does it turn blue?"))
    assert reused > 0


def test_one_conversations_cache_never_serves_another(pair):
    """Two conversations with the same first message: the second is prefilled in full, as it would be cold."""
    warm, cold = pair("qwen2_5_vl")
    first = Conversation().send("Describe this picture", [SHAPES])
    second = Conversation().send("Describe this picture", [SHAPES])
    assert first.key != second.key and first.key and Conversation().key == ""
    text, _ = _both(warm, cold, first)
    other, reused = _both(warm, cold, second)
    assert reused == 0 and other == text
    warm.forget(first.key)
    assert first.key not in warm.prefix and second.key in warm.prefix


def test_the_chat_footer_says_what_was_reused(make_session):
    from ui.tabs.chat import ChatTab

    tab = ChatTab(make_session("qwen2_5_vl"))
    conv, _, _ = tab.add_message({"text": "Describe this", "files": [SHAPES]}, Conversation())
    *_, (conv, _shown) = tab.answer(conv, "", 8, 0.0, 1.0, 0, 1.0, -1, None, 1280, 2.0, 64, False)
    assert "reused" not in conv.notes[-1]
    conv, _, _ = tab.add_message({"text": "And then?", "files": []}, conv)
    *_, (conv, _shown) = tab.answer(conv, "", 8, 0.0, 1.0, 0, 1.0, -1, None, 1280, 2.0, 64, False)
    assert "reused" in conv.notes[-1] and "prompt tokens" in conv.notes[-1]
    tab.forget(conv)
    assert conv.key not in tab.session.prefix


def test_the_budget_flag_reaches_the_session(make_session):
    import argparse
    from dataclasses import replace

    from qvl_core.engine.local import ModelSession
    from qvl_core.errors import UserError
    from qvl_core.flags import add_model_args, load_options

    p = argparse.ArgumentParser()
    add_model_args(p)
    assert load_options(p.parse_args(["--prefix-cache-mb", "0"])).prefix_cache_mb == 0
    assert load_options(p.parse_args([])).prefix_cache_mb is None  # the device's default
    with pytest.raises(UserError, match="--prefix-cache-mb must be a whole number from 0"):
        load_options(p.parse_args(["--prefix-cache-mb", "-1"]))
    shared = make_session("qwen2_5_vl")
    assert not ModelSession(replace(shared.options, prefix_cache_mb=0), loaded=shared.loaded).prefix.enabled
    assert ModelSession(replace(shared.options, prefix_cache_mb=7), loaded=shared.loaded).prefix.budget_bytes == 7 << 20
