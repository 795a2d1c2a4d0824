"""The one coordinate map, model space <-> original image pixels, for boxes, points and layout blocks alike.

The families write coordinates differently: Qwen2.5-VL in absolute pixels of the RESIZED input the model
saw, Qwen2-VL and Qwen3-VL normalised to 0..1000 over the whole image. Sizes are (width, height) everywhere.
Pure functions; no Gradio, no torch.
"""

from __future__ import annotations

import math
from numbers import Real

from qvl_core.families import FamilySpec, family_for

# Named limits.
NORM_RANGE = 1000  # Qwen2-VL / Qwen3-VL coordinates run 0..1000 over the whole image

Box = tuple[float, float, float, float]
Point = tuple[float, float]


def spec_of(family: FamilySpec | str) -> FamilySpec:
    """The family's spec, from the spec itself or its `model_type`."""
    return family if isinstance(family, FamilySpec) else family_for(family)


def _check_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    try:
        w, h = size
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (width, height), got {size!r}") from None
    if not (isinstance(w, Real) and isinstance(h, Real) and w > 0 and h > 0
            and math.isfinite(w) and math.isfinite(h)):
        raise ValueError(f"{name} must be a positive (width, height), got {size!r}")
    return w, h


def coordinate_scales(family: FamilySpec | str, input_size: tuple[int, int], image_size: tuple[int, int]) -> Point:
    """Original pixels per model unit, for x and y."""
    spec = spec_of(family)
    in_w, in_h = _check_size("input_size", input_size)
    w, h = _check_size("image_size", image_size)
    if spec.coords == "absolute":  # pixels of the resized input the model saw
        return w / in_w, h / in_h
    return w / NORM_RANGE, h / NORM_RANGE  # "norm1000"


def to_original(point: Point, *, family: FamilySpec | str, input_size: tuple[int, int],
                image_size: tuple[int, int]) -> Point:
    """A point as the model wrote it -> original image pixels (no clamping)."""
    sx, sy = coordinate_scales(family, input_size, image_size)
    return point[0] * sx, point[1] * sy


def to_model_space(point: Point, *, family: FamilySpec | str, input_size: tuple[int, int],
                   image_size: tuple[int, int]) -> Point:
    """Original image pixels -> the point as the model would write it (unrounded). Inverse of `to_original`."""
    sx, sy = coordinate_scales(family, input_size, image_size)
    return point[0] / sx, point[1] / sy
