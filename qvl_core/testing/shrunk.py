"""Shrinks a released checkpoint's config to random weights, keeping its real tokenizer, template and processor."""

# What you get
# ------------
# `build_shrunk_checkpoint(source, outdir)` reads the released non-weight files of a Qwen-VL checkpoint
# (config.json, the tokenizer files, chat_template.json, preprocessor_config.json, generation_config.json)
# and writes a folder that loads through the app's normal path: the released config with tiny hidden sizes,
# few layers and a small vision tower, random bf16 weights, and every other file copied unchanged. So the
# vocabulary (152k byte-level BPE entries with their merges), the special-token ids, the chat template, the
# pixel range and the generation defaults are the real ones; only the answers are noise.
#
# `real_files_dir(name)` finds those released files: $QVL_REAL_MODEL_FILES (the folder holding one folder per
# checkpoint, or a checkpoint folder itself), else `shared/real-model-files/` next to the repository. They are
# never part of the repository; tests that need them skip where they are absent.

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

REAL_FILES_ENV = "QVL_REAL_MODEL_FILES"
DEFAULT_REAL_FILES = Path(__file__).resolve().parents[2].parent / "shared" / "real-model-files"
# Copied unchanged: everything that decides how text and pixels become ids, and how generation stops.
KEPT_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "chat_template.json",
              "preprocessor_config.json", "generation_config.json")
# The shrunken text model: 32-wide with one 32-dim head keeps the 152k-row embedding and lm_head ~10 MB each
# in bf16. The released config's rotary sections are for head_dim 128 and are scaled to this head_dim.
TEXT_SHAPE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 1,
              "num_key_value_heads": 1}
RELEASED_HEAD_DIM = 128
# Per model_type: the vision-tower keys to shrink (the rest, patch/merge/window sizes, stay as released).
VISION_SHAPES: dict[str, dict[str, Any]] = {
    "qwen2_5_vl": {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                   "fullatt_block_indexes": [1]},
}


def real_files_dir(name: str = "Qwen2.5-VL-7B-Instruct") -> Path | None:
    """The folder of checkpoint `name`'s released non-weight files, or None where it is not on this machine."""
    env = os.environ.get(REAL_FILES_ENV)
    root = Path(env).expanduser() if env else DEFAULT_REAL_FILES
    for candidate in (root / name, root):
        if (candidate / "config.json").is_file() and (candidate / "tokenizer.json").is_file():
            return candidate
    return None


def build_shrunk_checkpoint(source: str | Path, outdir: str | Path, *, seed: int = 0) -> Path:
    """Write random weights for `source`'s config, shrunk, into `outdir` with `source`'s other files copied."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    src, out = Path(source), Path(outdir)
    missing = [name for name in ("config.json", *KEPT_FILES) if not (src / name).is_file()]
    if missing:
        raise ValueError(f"source folder {str(src)!r} lacks {', '.join(missing)}")
    released = AutoConfig.from_pretrained(src)
    if released.model_type not in VISION_SHAPES:
        raise ValueError(f"model_type must be one of {sorted(VISION_SHAPES)}, got {released.model_type!r}")
    config = type(released).from_dict(shrink_config(released.to_dict()))

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    # Saved in bf16 like the released weights; callers pick their dtype when loading.
    model = model.to(torch.bfloat16)
    for sub_config in (model.config.text_config, model.config.vision_config):
        sub_config.dtype = torch.bfloat16
    model.config.qvl_random_weights = True
    model.config.qvl_shrunk_from = src.name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in KEPT_FILES:  # after saving: the released generation_config.json replaces the one just written
        shutil.copyfile(src / name, out / name)
    return out


def shrink_config(config: dict[str, Any]) -> dict[str, Any]:
    """A released config (as `to_dict()` gives it) with tiny shapes; ids, vocabulary and pixel sizes unchanged."""
    layers = TEXT_SHAPE["num_hidden_layers"]
    text = {**config["text_config"], **TEXT_SHAPE}
    # Per-layer lists were sized for the released depth: keep their first layers.
    text["layer_types"] = list(text.get("layer_types") or [])[:layers] or None
    text["max_window_layers"] = min(text.get("max_window_layers") or layers, layers)
    head_dim = TEXT_SHAPE["hidden_size"] // TEXT_SHAPE["num_attention_heads"]
    rope = dict(text["rope_parameters"])
    rope["mrope_section"] = [s * head_dim // RELEASED_HEAD_DIM for s in rope["mrope_section"]]
    text["rope_parameters"] = rope
    vision = {**config["vision_config"], **VISION_SHAPES[config["model_type"]],
              "out_hidden_size": TEXT_SHAPE["hidden_size"]}
    return {**config, "text_config": text, "vision_config": vision}
