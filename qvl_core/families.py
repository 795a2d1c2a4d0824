"""Everything that differs between Qwen-VL families, in one table keyed by `config.model_type`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qvl_core.errors import UserError

# How a family writes coordinates in its answers:
# "absolute": pixels on the resized input the model saw (Qwen2.5-VL);
# "norm1000": 0-1000 normalised to the image (Qwen2-VL, Qwen3-VL).
CoordConvention = Literal["absolute", "norm1000"]


@dataclass(frozen=True)
class FamilySpec:
    """Per-family constants. `factor` is the side of the square one visual token covers."""

    model_type: str
    display_name: str
    patch_size: int
    coords: CoordConvention
    # Qwen2-VL writes boxes with special tokens; the later families write JSON.
    box_syntax: Literal["special_tokens", "json"]
    merge_size: int = 2
    temporal_patch_size: int = 2
    # Whether the model encodes absolute time for video (second_per_grid_ts / timestamps).
    absolute_time: bool = True

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    @property
    def pixels_per_token(self) -> int:
        return self.factor * self.factor


FAMILIES: dict[str, FamilySpec] = {
    spec.model_type: spec
    for spec in (
        FamilySpec("qwen2_vl", "Qwen2-VL", patch_size=14, coords="norm1000",
                   box_syntax="special_tokens", absolute_time=False),
        FamilySpec("qwen2_5_vl", "Qwen2.5-VL", patch_size=14, coords="absolute", box_syntax="json"),
        FamilySpec("qwen3_vl", "Qwen3-VL", patch_size=16, coords="norm1000", box_syntax="json"),
        FamilySpec("qwen3_vl_moe", "Qwen3-VL (MoE)", patch_size=16, coords="norm1000", box_syntax="json"),
    )
}


def family_for(model_type: str) -> FamilySpec:
    """The spec for a `config.model_type`, or a UserError that lists what is supported."""
    try:
        return FAMILIES[model_type]
    except KeyError:
        supported = ", ".join(sorted(FAMILIES))
        raise UserError(
            f"Unsupported model type {model_type!r}: QVL Studio runs Qwen-VL models ({supported})."
        ) from None
