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
    MAX_PRESENCE_PENALTY,
    MAX_REPETITION_PENALTY,
    MAX_TEMPERATURE,
    MAX_TOP_K,
    SAMPLING_FIELDS,
    SAMPLING_PRESETS,
    SERVER_DEFAULTS,
    SamplingDefaults,
    SamplingParams,
    sampling_from_values,
)
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET, MAX_THINKING_BUDGET, ThinkingSupport
from qvl_core.engine.types import Chunk, GenerationStats, so_far
from qvl_core.errors import GenerationError, UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, MAX_IMAGE_TOKENS_LIMIT
from qvl_core.settings import as_number

log = logging.getLogger(__name__)

# Every GPU-bound event in every tab shares this queue: the GPU serves one request at a time.
GPU_QUEUE = "gpu"
# Coalesce streamed text: the browser does not need more than ~20 updates a second.
STREAM_INTERVAL_S = 0.05
# The clock `throttle` reads: a module attribute so that a test can script time instead of waiting on it.
stream_clock: Callable[[], float] = time.monotonic

T = TypeVar("T")


N_SAMPLING_VALUES = 7  # how many values `SamplingControls.components` hands a handler
MODEL_PRESET = "Model's defaults"  # the preset dropdown's choice that puts the model's own values back
# Grounding, Documents and Video QA start with thinking OFF on models that can switch it: their answers are parsed
# (boxes, HTML, fields, times), which reasoning first rarely improves, and a thinking model spends thousands of
# tokens (minutes on one GPU, per page of a document) before the first box or time. Chat keeps the model's default.
PARSED_TASK_THINKING = False


def model_sampling_defaults(session: object) -> SamplingDefaults:
    """The backend's own sampling settings (checkpoint or server); a stand-in without them: the server's."""
    get = getattr(session, "sampling_defaults", None)
    return get() if callable(get) else SERVER_DEFAULTS


def shown_sampling(defaults: SamplingDefaults) -> dict[str, float | int]:
    """What the sliders show for settings the user has not touched: the model's values, else the neutral ones."""
    resolved = DEFAULT_SAMPLING.resolved(defaults)
    return {k: getattr(resolved, k) for k in SAMPLING_FIELDS}


def sampling_note(defaults: SamplingDefaults, *values: float | None) -> str:
    """Where each sampling value comes from, for the small note under the sliders. `values`: the sliders'
    sampling fields in `SAMPLING_FIELDS` order."""
    shown = shown_sampling(defaults)
    origin = ("the checkpoint's generation_config" if defaults.source == "checkpoint"
              else "the server's defaults (not sent)")
    changed = [k for k, v in zip(SAMPLING_FIELDS, values, strict=True) if v is not None and v != shown[k]]
    kept = [k for k in SAMPLING_FIELDS if k not in changed]
    names = {k: k.replace("_", " ") for k in SAMPLING_FIELDS}
    parts = []
    if kept:
        parts.append(f"{', '.join(names[k] for k in kept)}: from {origin}")
    if changed:
        parts.append(f"{', '.join(names[k] for k in changed)}: changed by you")
    return "<small>" + " · ".join(parts) + "</small>"


@dataclass
class SamplingControls:
    """The sampling sliders of one tab, in the order `to_sampling` expects them, and the model's defaults."""

    max_new_tokens: gr.Slider
    temperature: gr.Slider
    top_p: gr.Slider
    top_k: gr.Slider
    repetition_penalty: gr.Slider
    seed: gr.Number
    presence_penalty: gr.Slider
    preset: gr.Dropdown
    note: gr.Markdown
    defaults: SamplingDefaults = SERVER_DEFAULTS

    @classmethod
    def render(cls, *, limit: int, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               defaults: SamplingDefaults = SERVER_DEFAULTS) -> SamplingControls:
        """The sliders at the model's own values (`defaults`: the backend's `sampling_defaults()`), the
        max-new-tokens slider at the tab's task default and ending at the app's `limit` (`Limits.max_new_tokens`).
        Three to a row, so six sliders never wrap unevenly at desktop widths."""
        shown = shown_sampling(defaults)
        seed = -1 if DEFAULT_SAMPLING.seed is None else DEFAULT_SAMPLING.seed
        with gr.Row(equal_height=True):
            preset = gr.Dropdown([MODEL_PRESET, *SAMPLING_PRESETS], value=MODEL_PRESET, label="Sampling preset",
                                 info="The model cards' recommended settings")
            max_new = gr.Slider(1, limit, value=min(max_new_tokens, limit), step=1, label="Max new tokens")
            seed_box = gr.Number(value=seed, precision=0, label="Seed", info="-1 = random")
        with gr.Row(equal_height=True):
            temperature = gr.Slider(0, MAX_TEMPERATURE, value=shown["temperature"], step=0.01,
                                    label="Temperature", info="0 = greedy (deterministic)")
            top_p = gr.Slider(0.05, 1.0, value=shown["top_p"], step=0.01, label="Top-p")
            top_k = gr.Slider(0, MAX_TOP_K, value=shown["top_k"], step=1, label="Top-k", info="0 = off")
        with gr.Row(equal_height=True):
            repetition = gr.Slider(1.0, MAX_REPETITION_PENALTY, value=shown["repetition_penalty"], step=0.01,
                                   label="Repetition penalty")
            presence = gr.Slider(-MAX_PRESENCE_PENALTY, MAX_PRESENCE_PENALTY, value=shown["presence_penalty"],
                                 step=0.05, label="Presence penalty", info="per token already written")
            note = gr.Markdown(sampling_note(defaults, *shown.values()), elem_classes=["sampling-note"])
        controls = cls(max_new, temperature, top_p, top_k, repetition, seed_box, presence, preset, note, defaults)
        controls._wire()
        return controls

    def _wire(self) -> None:
        fields = [self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.presence_penalty]
        defaults = self.defaults

        def apply_preset(name: str) -> list:
            values = shown_sampling(defaults) | SAMPLING_PRESETS.get(name, {})
            return [values[k] for k in SAMPLING_FIELDS]

        self.preset.input(apply_preset, [self.preset], fields, queue=False, api_visibility="private")
        for field in fields:
            field.change(lambda *v: sampling_note(defaults, *v), fields, [self.note], queue=False,
                         api_visibility="private")

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.max_new_tokens, self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.seed,
                self.presence_penalty]


def model_thinking(session: object) -> ThinkingSupport:
    """What the backend's model does with thinking (read from its template); a stand-in without it: nothing."""
    status = getattr(session, "status", None)
    return getattr(status(), "thinking", ThinkingSupport()) if callable(status) else ThinkingSupport()


def thinking_info(support: ThinkingSupport, *, parsed: bool = False) -> str:
    """The switch's info line: why it is fixed, or what it does and (for parsed tasks) why it starts off."""
    if not support.can_think:
        return "This model does not think: its chat template has no reasoning block."
    if not support.switchable:
        return "This model always thinks: its chat template cannot turn reasoning off."
    if parsed:
        return ("Off by default here: the answer is parsed, which reasoning rarely improves, and reasoning costs "
                "minutes. The reasoning is shown apart and never parsed.")
    return f"Reason before answering (the model's default: {'on' if support.default_on else 'off'})."


@dataclass
class ThinkingControls:
    """A tab's Thinking switch and thinking budget, in the order `to_thinking` expects them."""

    switch: gr.Checkbox
    budget: gr.Number

    @classmethod
    def render(cls, support: ThinkingSupport, *, parsed: bool = False) -> ThinkingControls:
        """The switch at the model's default (Chat) or at PARSED_TASK_THINKING (`parsed` tasks), fixed with the
        reason where the template decides; the budget hidden for a model that cannot think."""
        value = support.enabled(PARSED_TASK_THINKING if parsed else None)
        with gr.Row(equal_height=True):
            switch = gr.Checkbox(value, label="Thinking", interactive=support.switchable,
                                 info=thinking_info(support, parsed=parsed), elem_classes=["qvl-thinking"])
            budget = gr.Number(DEFAULT_THINKING_BUDGET, precision=0, minimum=1, maximum=MAX_THINKING_BUDGET,
                               label="Thinking budget (tokens)", visible=support.can_think,
                               info="Then the reasoning is closed and the model answers")
        return cls(switch, budget)

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.switch, self.budget]


def to_thinking(on: bool | None, budget: float | None) -> tuple[bool | None, int]:
    """Switch and budget values -> (GenerationRequest.thinking, .thinking_budget); the request checks the range.
    An empty budget is the default; None for the switch leaves it to the model."""
    budget = DEFAULT_THINKING_BUDGET if budget is None else int(as_number("thinking_budget", budget, whole=True))
    return (None if on is None else bool(on)), budget


def gpu_event(concurrency: int = 1) -> dict[str, Any]:
    """Event settings that put a handler in the one GPU queue, `concurrency` requests at a time: 1 for the model
    in this process, more for a serving engine, which batches whatever it is sent."""
    return {"concurrency_id": GPU_QUEUE, "concurrency_limit": concurrency}


def default_sampling_values(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> tuple:
    """`DEFAULT_SAMPLING` as control values, in `to_sampling`'s order (None: the model's own; seed None is -1)."""
    d = DEFAULT_SAMPLING
    return (max_new_tokens, d.temperature, d.top_p, d.top_k, d.repetition_penalty, -1 if d.seed is None else d.seed,
            d.presence_penalty)


def api_sampling_inputs(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> list[gr.Number]:
    """An API endpoint's sampling parameters, in `to_sampling`'s order, defaulting to `DEFAULT_SAMPLING`."""
    values = default_sampling_values(max_new_tokens)[:6]  # the API's presence penalty: the model's (positions kept)
    names = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
    return [api_number(v, n) for n, v in zip(names, values, strict=True)]


def api_number(value: float, label: str) -> gr.Number:
    """An API endpoint's number input that hands the handler what was sent: Gradio's own rounding
    (precision=0) fails on NaN, inf or text before the handler runs, with an error that says nothing; the
    handler checks the value and names the field (`as_number`, `SamplingParams`)."""
    return gr.Number(value, precision=None, label=label)


def to_sampling(max_new_tokens: float, temperature: float | None, top_p: float | None, top_k: float | None,
                repetition_penalty: float | None, seed: float | None, presence_penalty: float | None = None, *,
                defaults: SamplingDefaults | None = None) -> SamplingParams:
    """Slider (or API) values -> validated SamplingParams (UserError names the bad value). With the model's
    `defaults`, a value still at what the sliders show for it is left to the model (None): only changes are sent,
    so a served model keeps the server's own defaults."""
    values = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
              "presence_penalty": presence_penalty}
    if defaults is not None:
        shown = shown_sampling(defaults)
        values = {k: None if v is not None and v == shown[k] else v for k, v in values.items()}
    return sampling_from_values(max_new_tokens=max_new_tokens, seed=seed, **values)


def image_tokens_slider(value: int = DEFAULT_MAX_IMAGE_TOKENS) -> gr.Slider:
    return gr.Slider(16, MAX_IMAGE_TOKENS_LIMIT, value=value, step=16, label="Max visual tokens per image",
                     info="The resolution the model sees: one token covers 28x28 px (32x32 on Qwen3-VL).")


def format_stats(stats: GenerationStats) -> str:
    """The small footer under an answer: tokens, time to first token, speed, and why it ended."""
    parts = [f"{stats.completion_tokens} tokens"]
    if stats.ttft_s is not None:
        parts.append(f"first token {stats.ttft_s:.2f} s")
    if stats.reused_tokens:  # the conversation's kept prefix served these: only the rest was prefilled
        parts.append(f"reused {stats.reused_tokens:,} of {stats.prompt_tokens:,} prompt tokens")
    if stats.decode_tps is not None:
        parts.append(f"{stats.decode_tps:.1f} tok/s")
    if stats.peak_gpu_mb is not None:
        parts.append(f"peak {stats.peak_gpu_mb / 1024:.1f} GiB")
    reason = {"length": "stopped at the token limit", "cancelled": "stopped by you"}.get(stats.finish_reason)
    if reason:
        parts.append(reason)
    if stats.reasoning_tokens:
        parts.insert(1, f"{stats.reasoning_tokens} of them reasoning")
    if stats.thinking_note:  # the budget or the loop guard closed the reasoning
        parts.append(stats.thinking_note)
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


def throttled_thinking(stream: Iterator[Chunk], interval: float = STREAM_INTERVAL_S
                       ) -> Iterator[tuple[str, str, Chunk]]:
    """`throttled` with the reasoning so far too: (answer so far, reasoning so far, last chunk). A step held
    back drops its chunk, so both texts are summed before the throttle."""
    def steps() -> Iterator[tuple[str, str, Chunk]]:
        with contextlib.closing(stream):
            yield from so_far(stream)

    return throttle(steps(), urgent=lambda step: step[2].stats is not None, interval=interval)
