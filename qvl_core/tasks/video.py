"""One video question end to end: prompt + clip -> streamed answer -> time spans in seconds of the file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from qvl_core.engine.backend import Backend
from qvl_core.engine.inputs import video_budget
from qvl_core.engine.messages import Media, Turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.engine.types import GenerationRequest, GenerationStats, so_far
from qvl_core.errors import UserError
from qvl_core.families import FamilySpec
from qvl_core.media.video import SampledVideo, VideoBudget, probe, sample_frames
from qvl_core.parse.timespans import TimeSpan, parse_time_spans
from qvl_core.settings import MAX_PROMPT_CHARS, check_text

PRESETS = ("Describe", "When does … happen?", "Chapters", "Read the text", "Custom")
PRESETS_NEEDING_TEXT = ("When does … happen?", "Custom")
DEFAULT_VIDEO_MAX_NEW_TOKENS = 1024


def build_video_prompt(preset: str, text: str, family: FamilySpec) -> str:
    """The prompt for a preset (the Qwen cookbook's wording where there is one)."""
    text = check_text("The question", text or "", MAX_PROMPT_CHARS).strip()
    if preset in PRESETS_NEEDING_TEXT and not text:
        what = "the event to find" if preset != "Custom" else "a question"
        raise UserError(f"The {preset!r} preset needs {what}.")
    if preset == "Describe":
        return "Describe what happens in this video in detail, in order." + (f" {text}" if text else "")
    if preset == "When does … happen?":
        return f"Give the query: '{text}', when does the described content occur in the video?"
    if preset == "Chapters":
        return ("Localize a series of activity events in the video, output the start and end timestamp for each "
                "event, and describe each event with sentences. Provide the result in json format with 'mm:ss.ff' "
                "format for time depiction.")
    if preset == "Read the text":
        return ("Read all the text that appears in the video, in order of appearance, and give the time in "
                "seconds when each piece of text is shown.")
    if preset == "Custom":
        return text
    raise ValueError(f"unknown preset {preset!r}; expected one of {PRESETS}")


@dataclass(frozen=True)
class VideoAnswer:
    """The model's answer with its time spans in seconds of the FILE (trim offset applied)."""

    raw: str
    prompt: str
    spans: tuple[TimeSpan, ...]
    video: SampledVideo
    clock_offset: float
    stats: GenerationStats
    reasoning: str = ""  # a thinking model's reasoning, never parsed: `raw` is the answer only

    def spans_json(self) -> list[dict]:
        return [s.to_json() for s in self.spans]


@dataclass(frozen=True)
class VideoStep:
    """Progress of one question: the answer so far (and reasoning so far), and the parsed answer at the end."""

    raw: str
    answer: VideoAnswer | None = None
    reasoning: str = ""


def clock_offset(video: SampledVideo) -> float:
    """Seconds to add to the model's times to get times in the file.

    Every family's clock starts at the clip's start: Qwen2.5-VL's temporal positions count from the first
    frame, and the frame metadata we hand the processor stamps Qwen3-VL's frames from the clip start too.
    """
    return float(video.start)


def shift_spans(spans: list[TimeSpan], offset: float, duration: float | None) -> tuple[TimeSpan, ...]:
    if not offset:
        return tuple(spans)
    out = []
    for s in spans:
        end = None if s.end is None else s.end + offset
        if duration is not None and end is not None:
            end = min(end, duration)
        out.append(replace(s, start=s.start + offset, end=end))
    return tuple(out)


def ask_video(session: Backend, video: str | Path, prompt: str, *, budget: VideoBudget | None = None,
              start: float | None = None, end: float | None = None, sampling: SamplingParams | None = None,
              thinking: bool | None = None, thinking_budget: int = DEFAULT_THINKING_BUDGET) -> Iterator[VideoStep]:
    """Sample the clip once (the same sampler as Chat), stream the answer, then parse its times (the answer's
    only: a time weighed in the reasoning is not one). `thinking` (None: the model's default) as in
    `GenerationRequest`."""
    check_text("The video question (prompt)", prompt, MAX_PROMPT_CHARS)  # before the clip is decoded
    budget = video_budget(budget or VideoBudget(), session.limits)  # the app's duration limit
    if probe(video).duration <= 0:  # FFmpeg reads a picture as one frame lasting 0 s (Chat takes it as such)
        raise UserError(f"{Path(video).name!r} is not a video this app can read: it is one still picture with no "
                        "duration (an image renamed?). Choose an mp4, mov, mkv, webm or avi video.")
    sampled = sample_frames(video, session.family, budget, start=start, end=end)
    request = GenerationRequest(
        turns=(Turn("user", prompt, (Media("video", str(video)),)),),
        sampling=sampling or SamplingParams(max_new_tokens=DEFAULT_VIDEO_MAX_NEW_TOKENS),
        video=budget, thinking=thinking, thinking_budget=thinking_budget,
    )
    with contextlib.closing(session.stream(request, videos=(sampled,))) as stream:
        for raw, reasoning, chunk in so_far(stream):  # the answer only in raw: reasoning is kept apart
            if chunk.stats is None:
                yield VideoStep(raw, reasoning=reasoning)
                continue
            duration = sampled.duration
            offset = clock_offset(sampled)
            spans = shift_spans(parse_time_spans(raw, duration=duration - offset), offset, duration)
            yield VideoStep(raw, VideoAnswer(raw, prompt, spans, sampled, offset, chunk.stats, reasoning), reasoning)
