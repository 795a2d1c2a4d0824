"""Everything that differs between Qwen-VL families, in one table keyed by `config.model_type`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qvl_core.errors import UserError

# The packages whose kernels run Qwen3.5's linear-attention layers fast on CUDA: import name -> PyPI name.
LINEAR_ATTENTION_PACKAGES = {"fla": "flash-linear-attention", "causal_conv1d": "causal-conv1d"}

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
    # Qwen3.5's text model is hybrid: Gated-DeltaNet linear-attention layers (three per full-attention layer)
    # keep a recurrent/conv state, so its cache can be extended but not cropped, and on CUDA those layers need
    # LINEAR_ATTENTION_PACKAGES for fast kernels (transformers falls back to plain PyTorch without them).
    linear_attention: bool = False
    # False: only a serving engine can run it (`--backend openai`); the in-process loader refuses it.
    in_process: bool = True
    # How the thinking models write reasoning: the template opens it (the generation prompt ends in `<think>\n`),
    # the model closes it. Both are ordinary added tokens, not special ones, so decoding keeps them. Whether
    # a model thinks, and by default, is read from its template, never from here.
    think_open: str = "<think>"
    think_close: str = "</think>"

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
        # Qwen3.5 / 3.6 / 3.8-27B: Qwen3-VL's processor (16 px patches, `<t seconds>` video time, 0-1000 JSON
        # boxes) in front of a hybrid linear/full-attention text model.
        FamilySpec("qwen3_5", "Qwen3.5", patch_size=16, coords="norm1000", box_syntax="json",
                   linear_attention=True),
        FamilySpec("qwen3_5_moe", "Qwen3.5 (MoE)", patch_size=16, coords="norm1000", box_syntax="json",
                   linear_attention=True),
        # Qwen3.8-Flash-Next: a 125B MoE plus a ~95 GB n-gram embedding table, too big for one GPU in bf16.
        FamilySpec("qwen4_exp", "Qwen3.8-Flash-Next", patch_size=16, coords="norm1000", box_syntax="json",
                   linear_attention=True, in_process=False),
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


def in_process_family(model_type: str) -> FamilySpec:
    """The spec for a model the app loads itself; a UserError for unknown or served-only families."""
    spec = family_for(model_type)
    if not spec.in_process:
        raise UserError(
            f"{spec.display_name} ({model_type}) is too big to load in this process on one GPU: serve it with "
            "vLLM or SGLang and connect with --backend openai --api-base URL (its family is read from the "
            "config, or pass --family)."
        )
    return spec


def linear_attention_note(spec: FamilySpec, device: str, installed: set[str]) -> str:
    """Pure: why the linear-attention layers run slowly here, or ''. Only CUDA has the fast kernels."""
    if not spec.linear_attention or device != "cuda":
        return ""
    missing = [pypi for module, pypi in LINEAR_ATTENTION_PACKAGES.items() if module not in installed]
    if not missing:
        return ""
    return f"linear attention in plain PyTorch (slow): pip install {' '.join(missing)}"
