"""Turns a request into what a model is given: chat messages, images at their exact model size, sampled videos."""

from __future__ import annotations

from qvl_core.engine.messages import MessagePlan, build_messages
from qvl_core.engine.types import GenerationRequest
from qvl_core.families import FamilySpec
from qvl_core.media.images import PixelBudget, PreparedImage, open_image, prepare_image
from qvl_core.media.video import SampledVideo, sample_frames


def request_image_budget(request: GenerationRequest, family: FamilySpec) -> PixelBudget:
    """The pixel budget a request asks for (the defaults where it names none); every backend resizes with it."""
    kwargs = {}
    if request.max_image_tokens is not None:
        kwargs["max_tokens"] = int(request.max_image_tokens)
    if request.min_image_tokens is not None:
        kwargs["min_tokens"] = int(request.min_image_tokens)
    return PixelBudget.from_tokens(family, **kwargs)


def prepare_media(request: GenerationRequest, family: FamilySpec, videos: tuple[SampledVideo, ...] | None = None
                  ) -> tuple[MessagePlan, tuple[PreparedImage, ...], tuple[SampledVideo, ...]]:
    """The messages, every image resized to its exact model size, every video sampled: what any backend sends.

    `videos`, when given, are clips the caller already sampled, in the order of the conversation's videos.
    """
    plan = build_messages(request.turns, system=request.system, label_media=request.label_media)
    budget = request_image_budget(request, family)
    images = tuple(prepare_image(open_image(m.path), family, budget) for m in plan.images)
    if videos is None:
        videos = tuple(sample_frames(m.path, family, request.video) for m in plan.videos)
    elif len(videos) != len(plan.videos):
        raise ValueError(f"{len(videos)} pre-sampled videos for {len(plan.videos)} in the conversation")
    return plan, images, videos
