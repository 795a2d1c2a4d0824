"""One grounding request end to end: prompt + image -> streamed answer -> detections in original pixels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from qvl_core.engine.backend import Backend
from qvl_core.engine.messages import Media, Turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.engine.types import GenerationRequest, GenerationStats, so_far
from qvl_core.families import FamilySpec
from qvl_core.media.images import PixelBudget, fit_aspect, open_image, smart_resize, visual_tokens
from qvl_core.parse.grounding import Detection, count_from_answer, parse_grounding
from qvl_core.settings import MAX_PROMPT_CHARS, check_text

# Grounding answers are JSON lists: dense scenes need room (about 25 tokens per box).
DEFAULT_GROUNDING_MAX_NEW_TOKENS = 2048


@dataclass(frozen=True)
class GroundingResult:
    """Detections in ORIGINAL image pixels plus everything needed to check them."""

    detections: tuple[Detection, ...]
    raw: str
    prompt: str
    image_size: tuple[int, int]
    input_size: tuple[int, int]
    stated_count: int | None
    stats: GenerationStats
    reasoning: str = ""  # a thinking model's reasoning, never parsed: `raw` is the answer only

    def detections_json(self) -> list[dict]:
        """The documented download/API/CLI format: label, bbox_2d, point_2d, text (+ extra keys)."""
        return [d.to_json() for d in self.detections]

    @property
    def truncated(self) -> bool:
        return self.stats.finish_reason == "length"


@dataclass(frozen=True)
class GroundingStep:
    """Progress of one request: the raw answer so far (and reasoning so far), and the result once it is complete."""

    raw: str
    result: GroundingResult | None = None
    reasoning: str = ""


def planned_input_size(image_size: tuple[int, int], family: FamilySpec, max_tokens: int) -> tuple[tuple[int, int], int]:
    """What the model will see for an image of `image_size` under `max_tokens`: ((w, h), visual tokens)."""
    budget = PixelBudget.from_tokens(family, max_tokens=max_tokens)
    w, h = image_size
    new_h, new_w = fit_aspect(*smart_resize(h, w, factor=family.factor, min_pixels=budget.min_pixels,
                                            max_pixels=budget.max_pixels), factor=family.factor)
    return (new_w, new_h), visual_tokens((new_w, new_h), family)


def ground(session: Backend, image: str | Path, prompt: str, *, sampling: SamplingParams | None = None,
           max_image_tokens: int | None = None, thinking: bool | None = None,
           thinking_budget: int = DEFAULT_THINKING_BUDGET) -> Iterator[GroundingStep]:
    """Stream a grounding answer; the last step carries the parsed detections.

    The input size comes from the processor's own grid for this image (checked in the session), so the
    per-family coordinate map is exact, never guessed. `thinking` (None: the model's default) as in
    `GenerationRequest`; only the answer is parsed, so a draft box in the reasoning is never drawn.
    """
    check_text("The grounding prompt", prompt, MAX_PROMPT_CHARS)
    open_image(image, max_pixels=session.limits.max_image_pixels)  # fail fast, before queueing for the GPU
    request = GenerationRequest(
        # An image by its content, whatever its name says: a PNG called .mp4 would otherwise go as a video and
        # leave no image size to map the boxes with.
        turns=(Turn("user", prompt, (Media("image", str(image)),)),),
        sampling=sampling or SamplingParams(max_new_tokens=DEFAULT_GROUNDING_MAX_NEW_TOKENS),
        max_image_tokens=max_image_tokens, thinking=thinking, thinking_budget=thinking_budget,
    )
    with contextlib.closing(session.stream(request)) as stream:
        for raw, reasoning, chunk in so_far(stream):  # the answer only in raw: reasoning is kept apart
            if chunk.stats is None:
                yield GroundingStep(raw, reasoning=reasoning)
                continue
            stats = chunk.stats
            input_size, image_size = stats.image_input_sizes[0], stats.image_original_sizes[0]
            detections = parse_grounding(raw, family=session.family, input_size=input_size, image_size=image_size)
            result = GroundingResult(tuple(detections), raw, prompt, image_size, input_size, count_from_answer(raw),
                                     stats, reasoning)
            yield GroundingStep(raw, result, reasoning)
