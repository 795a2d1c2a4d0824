"""Pieces every tab shares: the GPU queue id, sampling controls, stats footers, error mapping, stream throttling."""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr

from qvl_core.engine.sampling import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_SAMPLING,
    MAX_REPETITION_PENALTY,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    SamplingParams,
    sampling_from_values,
)
from qvl_core.engine.types import Chunk, GenerationStats
from qvl_core.errors import GenerationError, UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, MAX_IMAGE_TOKENS_LIMIT

log = logging.getLogger(__name__)

# Every GPU-bound event in every tab shares this queue: the GPU serves one request at a time.
GPU_QUEUE = "gpu"
# Coalesce streamed text: the browser does not need more than ~20 updates a second.
STREAM_INTERVAL_S = 0.05
# The clock `throttle` reads: a module attribute so that a test can script time instead of waiting on it.
stream_clock: Callable[[], float] = time.monotonic

T = TypeVar("T")


@dataclass
class SamplingControls:
    """The sampling sliders of one tab, in the order `to_sampling` expects them."""

    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    repetition_penalty: gr.Slider
    seed: gr.Number

    @classmethod
    def render(cls, *, limit: int, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> SamplingControls:
        """The sliders at the defaults of `DEFAULT_SAMPLING` (`max_new_tokens`: the tab's task default), the
        max-new-tokens slider ending at the app's `limit` (`Limits.max_new_tokens`)."""
        values = default_sampling_values(min(max_new_tokens, limit))
        return cls(
            max_new_tokens=gr.Slider(1, limit, value=values[0], step=1, label="Max new tokens"),
            temperature=gr.Slider(0, MAX_TEMPERATURE, value=values[1], step=0.05,
                                  label="Temperature", info="0 = greedy (deterministic)"),
            top_p=gr.Slider(0.05, 1.0, value=values[2], step=0.01, label="Top-p"),
            top_k=gr.Slider(0, MAX_TOP_K, value=values[3], step=1, label="Top-k", info="0 = off"),
            repetition_penalty=gr.Slider(1.0, MAX_REPETITION_PENALTY, value=values[4], step=0.01,
                                         label="Repetition penalty"),
            seed=gr.Number(value=values[5], precision=0, label="Seed", info="-1 = random"),
        )

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.seed]


def gpu_event(concurrency: int = 1) -> dict[str, Any]:
    """Event settings that put a handler in the one GPU queue, `concurrency` requests at a time: 1 for the model
    in this process, more for a serving engine, which batches whatever it is sent."""
    return {"concurrency_id": GPU_QUEUE, "concurrency_limit": concurrency}


def default_sampling_values(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple:
    """`DEFAULT_SAMPLING` as control values, in `to_sampling`'s order (seed None is the UI's -1)."""
    d = DEFAULT_SAMPLING
    return (max_new_tokens, d.temperature, d.top_p, d.top_k, d.repetition_penalty, -1 if d.seed is None else d.seed)


def api_sampling_inputs(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[gr.Number]:
    """An API endpoint's sampling parameters, in `to_sampling`'s order, defaulting to `DEFAULT_SAMPLING`."""
    values = default_sampling_values(max_new_tokens)
    names = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
    return [api_number(v, n) for n, v in zip(names, values, strict=True)]


def api_number(value: float, label: str) -> gr.Number:
    """An API endpoint's number input that hands the handler what was sent: Gradio's own rounding
    (precision=0) fails on NaN, inf or text before the handler runs, with an error that says nothing; the
    handler checks the value and names the field (`as_number`, `SamplingParams`)."""
    return gr.Number(value, precision=None, label=label)


def to_sampling(max_new_tokens: float, temperature: float, top_p: float, top_k: float,
                repetition_penalty: float, seed: float | None) -> SamplingParams:
    """Slider values -> validated SamplingParams (UserError names the bad value)."""
    return sampling_from_values(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k, repetition_penalty=repetition_penalty, seed=seed)


def image_tokens_slider(value: int = DEFAULT_MAX_IMAGE_TOKENS) -> gr.Slider:
    return gr.Slider(16, MAX_IMAGE_TOKENS_LIMIT, value=value, step=16, label="Max visual tokens per image",
                     info="The resolution the model sees: one token covers 28x28 px (32x32 on Qwen3-VL).")


def format_stats(stats: GenerationStats) -> str:
    """The small footer under an answer: tokens, time to first token, speed, and why it ended."""
    parts = [f"{stats.completion_tokens} tokens"]
    if stats.ttft_s is not None:
        parts.append(f"first token {stats.ttft_s:.2f} s")
    if stats.decode_tps is not None:
        parts.append(f"{stats.decode_tps:.1f} tok/s")
    if stats.peak_gpu_mb is not None:
        parts.append(f"peak {stats.peak_gpu_mb / 1024:.1f} GiB")
    reason = {"length": "stopped at the token limit", "cancelled": "stopped by you"}.get(stats.finish_reason)
    if reason:
        parts.append(reason)
    return " · ".join(parts)


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&$=:\"'])")


def plain_markdown(text: str) -> str:
    """`text` shown literally inside Markdown: every Markdown, HTML and LaTeX character backslash-escaped and
    line breaks as spaces. For text the model (or a file name) wrote that goes into a status line: a field
    named `<img src=http://…>` or `![k](http://…)` would otherwise load from another host."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split()))


def to_gr_error(exc: Exception) -> gr.Error:
    """User-fixable errors are shown verbatim; anything else gets a short message and a server log."""
    if isinstance(exc, (UserError, GenerationError)):
        return gr.Error(str(exc), print_exception=False)
    log.exception("unexpected error in a handler", exc_info=exc)
    return gr.Error(f"Something went wrong ({type(exc).__name__}); the app is still running. Details are in "
                    "the server log.", print_exception=False)


def throttle(steps: Iterator[T], *, urgent: Callable[[T], bool],
             interval: float = STREAM_INTERVAL_S) -> Iterator[T]:
    """Pass `steps` on at most once every `interval` seconds, the first at once; `urgent` ones always.

    Every tab re-renders its whole answer on each step it shows, so showing every token costs the square of
    the answer's length. A step held back is superseded by the next one (each carries everything so far), and
    the last step is never held back. Closing this iterator closes `steps` (that is how Stop reaches the
    generation).
    """
    last_emit = -math.inf
    held: list[T] = []  # the newest step not shown yet (at most one)
    close = getattr(steps, "close", None)
    try:
        for step in steps:
            now = stream_clock()
            if urgent(step) or now - last_emit >= interval:
                last_emit = now
                held.clear()
                yield step
            else:
                held[:] = [step]
        yield from held
    finally:
        if close is not None:
            close()


def throttled(stream: Iterator[Chunk], interval: float = STREAM_INTERVAL_S) -> Iterator[tuple[str, Chunk]]:
    """Yield (text so far, last chunk) through `throttle`; the final chunk (with stats) always.

    Closing this iterator closes the model stream (that is how Stop reaches the generation).
    """
    def so_far() -> Iterator[tuple[str, Chunk]]:
        text = ""
        with contextlib.closing(stream):
            for chunk in stream:
                text += chunk.text
                yield text, chunk

    return throttle(so_far(), urgent=lambda step: step[1].stats is not None, interval=interval)
