"""Turns a request into what a model is given: chat messages, images at their exact model size, sampled videos."""

from __future__ import annotations

from dataclasses import replace

from qvl_core.engine.messages import MessagePlan, build_messages
from qvl_core.engine.sampling import validate_sampling
from qvl_core.engine.types import GenerationRequest
from qvl_core.families import FamilySpec
from qvl_core.media.images import PixelBudget, PreparedImage, open_image, prepare_image
from qvl_core.media.video import SampledVideo, VideoBudget, sample_frames
from qvl_core.settings import Limits


def request_image_budget(request: GenerationRequest, family: FamilySpec) -> PixelBudget:
    """The pixel budget a request asks for (the defaults where it names none); every backend resizes with it."""
    kwargs = {}
    if request.max_image_tokens is not None:
        kwargs["max_tokens"] = int(request.max_image_tokens)
    if request.min_image_tokens is not None:
        kwargs["min_tokens"] = int(request.min_image_tokens)
    return PixelBudget.from_tokens(family, **kwargs)


def video_budget(budget: VideoBudget, limits: Limits) -> VideoBudget:
    """`budget` with the app's duration limit (a budget may ask for a shorter one, never a longer one)."""
    own = budget.max_duration_s
    return replace(budget, max_duration_s=limits.max_video_seconds if own is None
                   else min(own, limits.max_video_seconds))


def prepare_media(request: GenerationRequest, family: FamilySpec, videos: tuple[SampledVideo, ...] | None = None,
                  *, limits: Limits) -> tuple[MessagePlan, tuple[PreparedImage, ...], tuple[SampledVideo, ...]]:
    """The messages, every image resized to its exact model size, every video sampled: what any backend sends.

    Every check against the app's `limits` happens here, for every backend: max new tokens, image pixels
    (a request's own `image_pixel_limit` instead: pages a document job rendered itself), video duration.
    `videos`, when given, are clips the caller already sampled, in the order of the conversation's videos.
    """
    validate_sampling(request.sampling, max_new_tokens=limits.max_new_tokens)
    plan = build_messages(request.turns, system=request.system, label_media=request.label_media)
    budget = request_image_budget(request, family)
    max_pixels = request.image_pixel_limit or limits.max_image_pixels
    images = tuple(prepare_image(open_image(m.path, max_pixels=max_pixels), family, budget) for m in plan.images)
    if videos is None:
        videos = tuple(sample_frames(m.path, family, video_budget(request.video, limits)) for m in plan.videos)
    elif len(videos) != len(plan.videos):
        raise ValueError(f"{len(videos)} pre-sampled videos for {len(plan.videos)} in the conversation")
    return plan, images, videos
