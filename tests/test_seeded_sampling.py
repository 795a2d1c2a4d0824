"""Tier 2: sampling draws from a per-request generator: reproducible by seed, the global RNG left alone."""

from __future__ import annotations

import contextlib
import functools

import torch

from qvl_core.engine import local
from qvl_core.engine.messages import user_turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.types import GenerationRequest


def sampled(text: str, seed: int | None, max_new_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(turns=(user_turn(text),), sampling=SamplingParams(
        max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, top_k=50, repetition_penalty=1.0, seed=seed))


@contextlib.contextmanager
def on_second_step(session, action):
    """Run `action` once, inside the model's second forward call (mid-generation), then restore forward."""
    model = session.loaded.model
    original = model.forward
    calls = {"n": 0}

    @functools.wraps(original)
    def forward(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            action()
        return original(*args, **kwargs)

    model.forward = forward
    try:
        yield
    finally:
        model.forward = original


def test_same_seed_same_answer_and_seeds_differ(make_session):
    """A seeded sampled request is reproducible, and the seed actually matters (it samples, not greedy)."""
    s = make_session("qwen2_5_vl")
    first = s.generate(sampled("tell me", seed=7))[0]
    assert s.generate(sampled("tell me", seed=7))[0] == first
    others = {s.generate(sampled("tell me", seed=seed))[0] for seed in (1, 2, 3)}
    assert others - {first}


def test_seeded_and_unseeded_requests_leave_the_global_rng_untouched(make_session):
    """Regression: each seeded request called torch.manual_seed, reseeding the whole process's RNG."""
    s = make_session("qwen2_5_vl")
    for seed in (7, None):
        before = torch.get_rng_state()
        s.generate(sampled("tell me", seed=seed))
        assert torch.equal(torch.get_rng_state(), before)


def test_interleaved_seeded_requests_do_not_disturb_each_other(make_session):
    """Regression: a second seeded request starting mid-generation (another model, another thread's draws)
    reseeded the global RNG the first one was sampling from, so the first one's answer changed."""
    a, b = make_session("qwen2_5_vl"), make_session("qwen3_vl")
    alone_a = a.generate(sampled("first", seed=11))[0]
    alone_b = b.generate(sampled("second", seed=22))[0]
    inner: dict[str, str] = {}

    def other_requests():
        inner["b"] = b.generate(sampled("second", seed=22))[0]
        torch.rand(1000)  # and someone else drawing from the global RNG

    with on_second_step(a, other_requests):
        together_a = a.generate(sampled("first", seed=11))[0]
    assert inner["b"] == alone_b
    assert together_a == alone_a


def test_greedy_stays_greedy(make_session):
    """Greedy requests take no sampling processors: the same answer whatever the seed."""
    s = make_session("qwen2_5_vl")
    greedy = [s.generate(GenerationRequest(turns=(user_turn("hi"),), sampling=SamplingParams(
        max_new_tokens=8, seed=seed)))[0] for seed in (None, 1, 2)]
    assert len(set(greedy)) == 1


def test_peak_memory_is_reset_on_every_device(monkeypatch):
    """Regression: the peak was reset on the current device only, but summed over all of them."""
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: calls.append(device))
    local._reset_peak_memory()
    assert calls == [0, 1, 2]
