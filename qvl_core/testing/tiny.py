"""Builds small Qwen-VL checkpoints (random or scripted weights) of the real architectures, offline."""

# What you get
# ------------
# `build_checkpoint(outdir, family=..., answer=None, size="tiny")` writes a folder that
# `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` load offline:
# config.json (real `model_type` / `architectures`, plus `qvl_random_weights` and, for scripted
# checkpoints, `qvl_scripted_answer`), model.safetensors (bf16, like the released checkpoints),
# generation_config.json, a byte-level BPE tokenizer with the Qwen special tokens, the chat template,
# and the image/video processor configs with the released defaults (patch 14 or 16, merge 2,
# temporal patch 2, the released min/max pixels), so grids and coordinates behave as in the real models.
#
# Scripted checkpoints (`answer=TEXT`)
# ------------------------------------
# The weights are constructed so that decoding emits exactly TEXT, then <|im_end|>, whatever the input.
# Why it works:
# 1. TEXT is cut into pieces of strictly increasing length (1, 2, 3, ... characters), so no two pieces
#    are equal and each gets its own token. The pieces are extra entries of the BPE vocabulary, written
#    in the byte-level alphabet, but no merge leads to them: encoding never produces them (a prompt, even
#    one that quotes TEXT, is tokenized into bytes only), while decoding maps them back to their exact
#    UTF-8 bytes (unicode, newlines, JSON, HTML). Added tokens would not do: the tokenizer would cut
#    them out of the prompt too, and a piece such as "\n" would then be the prompt's last token.
# 2. Embeddings are one-hot (hidden size >= vocabulary size) and every projection that writes into the
#    residual stream of the text model (attention o_proj, MLP down_proj) is zero, so at the last
#    position the final norm sees exactly the current token's one-hot vector. Image and video features
#    (and Qwen3-VL's deepstack features) only land on their own positions and reach the last position
#    only through attention, whose output projection is zero.
# 3. lm_head is a next-piece table: piece_i -> piece_i+1, last piece -> <|im_end|>, every other token
#    (the prompt's last token "\n", <|im_end|>, any byte) -> piece_1, with logit SCRIPT_LOGIT and 0
#    everywhere else. Repetition penalty <= 2 halves it at worst; temperature 1, top-k and top-p then
#    keep a single candidate whose probability is 1 - V * exp(-50): sampling is as exact as greedy.

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen3.5's tokenizer has these as added tokens that are NOT special (decoding with skip_special_tokens keeps
# them, and the tokenizer still cuts them out of any text as single tokens).
THINK_TOKENS = ("<think>", "</think>")
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
# Logit of the scripted next token (every other logit is 0). Must stay far ahead after
# repetition_penalty (divides positive logits, up to 2 supported) and temperature 1.
SCRIPT_LOGIT = 100.0
SIZES = ("tiny", "mid")
# Real-model values (config.json of the released instruct checkpoints).
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
QWEN2_PIXELS = {"shortest_edge": 4 * 28 * 28, "longest_edge": 16384 * 28 * 28}  # 3136, 12845056


@dataclass(frozen=True)
class TextSize:
    """Text-model shape; hidden size grows with the vocabulary (one-hot embeddings need H >= V)."""

    min_hidden: int
    layers: int
    head_dim: int
    intermediate: int


@dataclass(frozen=True)
class VisionSize:
    """Vision-tower shape, with the per-family layer index lists that fit this depth."""

    depth: int
    hidden: int
    heads: int
    intermediate: int
    # qwen2_5_vl: full-attention blocks (the others use windows); qwen3_vl: deepstack taps.
    fullatt: tuple[int, ...]
    deepstack: tuple[int, ...]


TEXT_SIZES = {
    "tiny": TextSize(min_hidden=128, layers=2, head_dim=32, intermediate=128),
    "mid": TextSize(min_hidden=1024, layers=8, head_dim=64, intermediate=2816),
}
VISION_SIZES = {
    "tiny": VisionSize(depth=2, hidden=32, heads=2, intermediate=64, fullatt=(1,), deepstack=(0,)),
    "mid": VisionSize(depth=8, hidden=512, heads=8, intermediate=1376, fullatt=(3, 7), deepstack=(2, 4, 6)),
}


@dataclass(frozen=True)
class Recipe:
    """What a family's released checkpoint looks like, reduced to what a small build needs."""

    model_type: str
    processor_class: str
    patch_size: int
    image_mean: list[float]
    image_std: list[float]
    image_size: dict[str, int]
    video_size: dict[str, int]
    video_processor_class: str
    default_system: bool  # Qwen2/2.5 templates add a default system prompt; Qwen3-VL's do not.
    mrope_section: tuple[int, int, int]  # as released; scaled to the build's rotary frequencies
    rope_theta: float
    max_position_embeddings: int
    mrope_interleaved: bool = False  # Qwen3-VL interleaves t/h/w frequencies instead of blocks
    tokenizer_class: str = "Qwen2Tokenizer"
    # Qwen3.5: the thinking chat template and the <think> tokens; a hybrid text model (three Gated-DeltaNet
    # linear-attention layers per full-attention layer) that rotates only a quarter of each head.
    thinking: bool = False
    hybrid: bool = False
    moe: bool = False
    partial_rotary_factor: float = 1.0


RECIPES = {
    r.model_type: r
    for r in (
        Recipe("qwen2_vl", "Qwen2VLProcessor", 14, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
               QWEN2_PIXELS, QWEN2_PIXELS, "Qwen2VLVideoProcessor", True, (16, 24, 24), 1e6, 32768),
        Recipe("qwen2_5_vl", "Qwen2_5_VLProcessor", 14, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
               QWEN2_PIXELS, QWEN2_PIXELS, "Qwen2VLVideoProcessor", True, (16, 24, 24), 1e6, 128000),
        # Qwen3-VL's processor files: images 64..16384 tokens of 32x32 px, videos bounded over all frames.
        Recipe("qwen3_vl", "Qwen3VLProcessor", 16, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5],
               {"shortest_edge": 65536, "longest_edge": 16777216},
               {"shortest_edge": 4096, "longest_edge": 25165824}, "Qwen3VLVideoProcessor", False,
               (24, 20, 20), 5e6, 262144, mrope_interleaved=True),
        # Qwen3.5 (dense and MoE): Qwen3-VL's processor files; head_dim 256 rotated at 0.25 -> 32 frequencies.
        *(Recipe(model_type, "Qwen3VLProcessor", 16, [0.5, 0.5, 0.5], [0.5, 0.5, 0.5],
                 {"shortest_edge": 65536, "longest_edge": 16777216},
                 {"shortest_edge": 4096, "longest_edge": 25165824}, "Qwen3VLVideoProcessor", False,
                 (11, 11, 10), 1e7, 262144, mrope_interleaved=True, tokenizer_class="Qwen3_5Tokenizer",
                 thinking=True, hybrid=True, moe=model_type.endswith("_moe"), partial_rotary_factor=0.25)
          for model_type in ("qwen3_5", "qwen3_5_moe")),
    )
}
# Qwen3.5's text model: one full-attention layer after every three linear-attention layers.
FULL_ATTENTION_INTERVAL = 4


@dataclass(frozen=True)
class MoeSize:
    """Experts of the MoE builds (every layer routes; one shared expert beside the routed ones)."""

    experts: int
    per_token: int
    intermediate: int


MOE_SIZES = {"tiny": MoeSize(experts=4, per_token=2, intermediate=32),
             "mid": MoeSize(experts=8, per_token=2, intermediate=256)}


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def _byte_alphabet() -> dict[int, str]:
    """GPT-2 byte-level alphabet: printable Latin-1 bytes map to themselves, the rest to U+0100 and up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


BYTE_ALPHABET = _byte_alphabet()


def _to_vocab_string(text: str) -> str:
    return "".join(BYTE_ALPHABET[b] for b in text.encode("utf-8"))


def split_answer(text: str, taken: set[str]) -> list[str]:
    """Cut `text` into pieces of strictly increasing length whose vocab strings are not in `taken`.

    Lengths go 1, 2, 3, ... characters; a piece that would collide with an existing token (a single
    byte, a special token's text) grows by a character. A remainder not longer than the last piece
    is merged into it, so lengths stay strictly increasing and every piece is distinct.
    """
    if not text:
        raise ValueError("answer must be a non-empty string")
    pieces: list[str] = []
    pos, length = 0, 1
    while pos < len(text):
        end = min(pos + length, len(text))
        while end < len(text) and _to_vocab_string(text[pos:end]) in taken:
            end += 1
        pieces.append(text[pos:end])
        pos, length = end, end - pos + 1
        if 0 < len(text) - pos < length:  # the rest would not be strictly longer: merge it
            pieces[-1] += text[pos:]
            pos = len(text)
    # The last piece was not checked after growing at the end; merge back until it is fresh.
    while len(pieces) > 1 and _to_vocab_string(pieces[-1]) in taken:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return pieces


def _piece_vocab_string(piece: str, taken: set[str]) -> str:
    """The vocab string of a piece. `split_answer` avoids collisions except for a one-character answer
    that is a single byte: a control or space byte is stored as its raw character, which is outside the
    byte alphabet (the ByteLevel decoder emits such a token's raw UTF-8), so it stays a distinct token;
    a printable byte reuses that byte's token (fine unless a prompt ends with that very character)."""
    encoded = _to_vocab_string(piece)
    return piece if encoded in taken and encoded != piece else encoded


def build_tokenizer(pieces: list[str], *, chat_template: str, added: tuple[str, ...] = (),
                    tokenizer_class: str = "Qwen2Tokenizer"):
    """A Qwen2Tokenizer (or Qwen3_5Tokenizer) over the 256 bytes, the Qwen special tokens, the `added` ordinary
    tokens (Qwen3.5's <think> and </think>) and the answer pieces.

    No merges: ordinary text always encodes to single bytes, and the piece entries are only ever
    produced by the model. NFC normalization and the Qwen pre-tokenizer regex match the real
    tokenizer (transformers rebuilds Qwen2Tokenizer from vocab + merges with them on load anyway).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    cls = tokenizer_class_from_name(tokenizer_class)
    # The class's own pre-tokenizer regex: transformers rebuilds the tokenizer with it on load anyway.
    pretokenize_regex = importlib.import_module(cls.__module__).PRETOKENIZE_REGEX
    vocab = {BYTE_ALPHABET[b]: b for b in range(256)}
    # Specials right after the bytes: their ids do not depend on the answer.
    for token in (*SPECIAL_TOKENS, *added):
        vocab[token] = len(vocab)
    taken = set(vocab)
    for piece in pieces:
        key = _piece_vocab_string(piece, taken)
        if key not in vocab:
            vocab[key] = len(vocab)

    backend = Tokenizer(BPE(vocab=vocab, merges=[], fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pretokenize_regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in added])
    tokenizer = cls(
        tokenizer_object=backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        # As the released tokenizer_config.json lists them: every Qwen special token but <|endoftext|> (already the
        # pad token) is an additional special token, so `all_special_ids` holds all 14 of them, box markers too.
        extra_special_tokens=[t for t in SPECIAL_TOKENS if t != "<|endoftext|>"],
        # Cleanup would eat spaces before punctuation in decoded answers.
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
        errors="replace",
    )
    tokenizer.chat_template = chat_template
    return tokenizer, [vocab[_piece_vocab_string(p, taken)] for p in pieces]


# ---------------------------------------------------------------------------------------------
# Chat template
# ---------------------------------------------------------------------------------------------

_TEMPLATE_SYSTEM = (
    "{%- if not messages or messages[0]['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
)
_TEMPLATE_BODY = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- set kind = part.get('type', '') -%}"
    "{%- if kind == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif kind == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)


def chat_template(default_system: bool) -> str:
    """The Qwen-VL ChatML template; one image/video placeholder per part, expanded by the processor."""
    return (_TEMPLATE_SYSTEM if default_system else "") + _TEMPLATE_BODY


# Qwen3.5's template, reduced to what the app uses (no tools): it behaves like the released one on
# - `enable_thinking` (default on for Qwen3.5 >= 4B, Qwen3.6, Qwen3.8; off for Qwen3.5-0.8B/2B): the generation
#   prompt ends in "<think>\n" when on (the model writes only the reasoning and "</think>"), and holds an already
#   closed empty block "<think>\n\n</think>\n\n" when off;
# - an assistant message's reasoning: its `reasoning_content` field when given, else the text before "</think>"
#   (the text after it is the answer); kept only for turns after the last user message or with
#   `preserve_thinking` (Qwen3.6+), written back as "<think>\n...\n</think>\n\n" before the answer.
_THINKING_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- set kind = part.get('type', '') -%}"
    "{%- if kind == 'image' or 'image' in part or 'image_url' in part -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif kind == 'video' or 'video' in part -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- set content = render(message['content']) -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- set reasoning = '' -%}"
    "{%- if message.get('reasoning_content') is string -%}"
    "{%- set reasoning = message['reasoning_content'] -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- set keep = (preserve_thinking is defined and preserve_thinking) or loop.index0 > ns.last_user -%}"
    "{%- if keep and (loop.last or reasoning) -%}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') -}}"
    "{%- else -%}"
    "{{- '<|im_start|>assistant\\n' + content -}}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is THINK_OFF_TEST -%}"
    "{{- THINK_OFF_PROMPT -}}"
    "{%- else -%}"
    "{{- THINK_DEFAULT_PROMPT -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)
_THINK_ON = "'<think>\\n'"
_THINK_OFF = "'<think>\\n\\n</think>\\n\\n'"


def thinking_chat_template(thinking_default: bool = True) -> str:
    """Qwen3.5's template (see above). `thinking_default` False is the 0.8B/2B variant: thinks only when asked."""
    if thinking_default:
        test, other, default = "false", _THINK_OFF, _THINK_ON
    else:
        test, other, default = "true", _THINK_ON, _THINK_OFF
    return (_THINKING_TEMPLATE.replace("THINK_OFF_TEST", test).replace("THINK_OFF_PROMPT", other)
            .replace("THINK_DEFAULT_PROMPT", default))


# ---------------------------------------------------------------------------------------------
# Model config and weights
# ---------------------------------------------------------------------------------------------


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _vision_config(recipe: Recipe, size: VisionSize, text_hidden: int) -> dict[str, Any]:
    common = {
        "depth": size.depth,
        "num_heads": size.heads,
        "in_channels": 3,
        "patch_size": recipe.patch_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": 0.02,
    }
    if recipe.model_type == "qwen2_vl":
        return {**common, "embed_dim": size.hidden, "mlp_ratio": 4, "hidden_size": text_hidden,
                "hidden_act": "quick_gelu"}
    if recipe.model_type == "qwen2_5_vl":
        # window_size is in pixels (112 = 4 merged tokens), tokens_per_second as released.
        return {**common, "hidden_size": size.hidden, "intermediate_size": size.intermediate,
                "out_hidden_size": text_hidden, "hidden_act": "silu", "window_size": 112,
                "fullatt_block_indexes": list(size.fullatt), "tokens_per_second": 2}
    # qwen3_vl, qwen3_5: learned 48x48 position grid (2304, interpolated to each image); Qwen3-VL also taps
    # deepstack features at layers < depth (Qwen3.5 has none).
    vision = {**common, "hidden_size": size.hidden, "intermediate_size": size.intermediate,
              "out_hidden_size": text_hidden, "hidden_act": "gelu_pytorch_tanh", "num_position_embeddings": 2304}
    if recipe.model_type == "qwen3_vl":
        vision["deepstack_visual_indexes"] = list(size.deepstack)
    return vision


def scale_sections(released: tuple[int, ...], total: int) -> list[int]:
    """Split `total` rotary frequencies over (t, h, w) in the released ratios (largest remainders round up)."""
    whole = sum(released)
    shares = [s * total / whole for s in released]
    sections = [int(x) for x in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: sections[i] - shares[i])
    for i in by_remainder[: total - sum(sections)]:
        sections[i] += 1
    return sections


def _text_config(recipe: Recipe, size: TextSize, vocab_size: int, hidden: int, ids: dict[str, int]):
    heads = hidden // size.head_dim
    # mrope sections split the rotary frequencies (half the rotated dims) over (t, h, w).
    mrope = scale_sections(recipe.mrope_section, int(size.head_dim * recipe.partial_rotary_factor) // 2)
    config = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": size.intermediate,
        "num_hidden_layers": size.layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "hidden_act": "silu",
        "max_position_embeddings": recipe.max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": recipe.rope_theta, "mrope_section": mrope},
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "use_cache": True,
    }
    if recipe.mrope_interleaved:
        config["rope_parameters"]["mrope_interleaved"] = True
    if recipe.hybrid:
        config["rope_parameters"]["partial_rotary_factor"] = recipe.partial_rotary_factor
        # Real layer pattern (linear, linear, linear, full, ...), so at least one of each; tiny linear heads.
        layers = _round_up(size.layers, FULL_ATTENTION_INTERVAL)
        config.update(
            num_hidden_layers=layers, head_dim=size.head_dim, attention_bias=False,
            layer_types=["full_attention" if (i + 1) % FULL_ATTENTION_INTERVAL == 0 else "linear_attention"
                         for i in range(layers)],
            linear_conv_kernel_dim=4, linear_num_key_heads=2, linear_num_value_heads=4,
            linear_key_head_dim=size.head_dim // 2, linear_value_head_dim=size.head_dim // 2,
        )
    elif recipe.model_type == "qwen3_vl":
        config.update(head_dim=size.head_dim, attention_bias=False)
    else:
        config.update(use_sliding_window=False)
    return config


def _moe_config(size: MoeSize) -> dict[str, Any]:
    return {"num_experts": size.experts, "num_experts_per_tok": size.per_token,
            "moe_intermediate_size": size.intermediate, "shared_expert_intermediate_size": size.intermediate}


def _script_weights(model, piece_ids: list[int], ids: dict[str, int]) -> None:
    """Turn the text model into the next-piece table described at the top of this module."""
    import torch

    language_model = model.model.language_model
    embed = language_model.embed_tokens.weight
    vocab, hidden = embed.shape
    if hidden < vocab:
        raise ValueError(f"scripted weights need hidden size >= vocab size, got {hidden} < {vocab}")
    with torch.no_grad():
        embed.zero_()
        embed[:, :vocab].copy_(torch.eye(vocab))
        # Every projection into the residual stream: attention o_proj, linear attention out_proj, MLP and shared
        # expert down_proj (modules), and the MoE experts' stacked down_proj (a parameter).
        for name, param in language_model.named_parameters():
            if name.removesuffix(".weight").removesuffix(".bias").endswith(("o_proj", "out_proj", "down_proj")):
                param.zero_()
        # The final RMSNorm scales a one-hot vector to 1 / sqrt(1/H + eps) at its hot index, times its weight
        # (or 1 + weight: Qwen3.5's norm is zero-centred). Measure what it gives instead of assuming a form.
        norm = language_model.norm
        norm.weight.fill_(1.0)
        scale = float(norm(torch.eye(1, hidden))[0, 0])
        weight = SCRIPT_LOGIT / scale
        successor = {token: piece_ids[0] for token in range(vocab)}
        successor.update(zip(piece_ids, [*piece_ids[1:], ids["<|im_end|>"]], strict=True))
        head = model.lm_head.weight
        head.zero_()
        for token, nxt in successor.items():
            head[nxt, token] = weight


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def build_checkpoint(
    outdir: str | Path,
    *,
    family: str = "qwen2_5_vl",
    answer: str | None = None,
    size: str = "tiny",
    seed: int = 0,
    thinking_default: bool = True,
) -> Path:
    """Write a random-weight (or, with `answer`, scripted) checkpoint of `family` into `outdir`.

    Qwen3.5 families get the thinking template (`thinking_default` False: the 0.8B/2B variant that thinks only
    when `enable_thinking=True`); a scripted answer is what the model writes after the generation prompt, so
    a thinking answer is "reasoning</think>\n\nanswer" (the prompt already opened the block).

    Load it like a released one (`AutoModelForImageTextToText` / `AutoProcessor`, any dtype). What works
    with the processor of transformers 5.23 (checked on these checkpoints, same classes as the real ones):

    - Images: `processor(text=[prompt], images=[pil_image], return_tensors="pt")`. Per-call pixel bounds:
      `images_kwargs={"size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}}` (or `size=` for
      every modality); the old `min_pixels=` / `max_pixels=` call kwargs still work but warn (FutureWarning).
    - Videos that are already sampled (a list of PIL frames or a uint8 (T, H, W, 3) array):
      `processor(text=[prompt], videos=[frames], do_sample_frames=False, video_metadata=[{"fps": video_fps,
      "total_num_frames": n_total, "frames_indices": indices}], return_tensors="pt")`, where `indices` are
      the frames' positions in the source (or `range(T)` with `fps` the sampling rate and `n_total = T`).
      The processor takes the sampled rate as `len(indices) / n_total * fps`: Qwen2.5-VL turns it into
      `second_per_grid_ts = 2 / rate` (temporal positions step by `tokens_per_second * that`), and
      Qwen3-VL writes "<t seconds>" before each frame pair from `index / fps`. Pitfalls: without
      metadata the rate is taken as 24 fps (not 2); a bare `fps=` kwarg only drives frame sampling and is
      otherwise ignored; Qwen3-VL samples again unless `do_sample_frames=False`, and fails without
      `frames_indices`. Per-call bounds: `videos_kwargs={"size": {...}}` (per frame for Qwen2/2.5-VL, over
      all frames for Qwen3-VL); `cap_pixels_per_frame=False` (or True) silences a per-call warning.
    """
    if family not in RECIPES:
        raise ValueError(f"family must be one of {sorted(RECIPES)}, got {family!r}")
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size!r}")
    if answer is not None and not answer:
        raise ValueError("answer must be a non-empty string (or None for random weights)")
    if not thinking_default and not RECIPES[family].thinking:
        raise ValueError(f"thinking_default applies to thinking families only, not {family!r}")

    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, GenerationConfig
    from transformers.models.auto.processing_auto import processor_class_from_name
    from transformers.models.auto.video_processing_auto import video_processor_class_from_name
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor

    recipe = RECIPES[family]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    if recipe.thinking:
        template, added = thinking_chat_template(thinking_default), THINK_TOKENS
    else:
        template, added = chat_template(recipe.default_system), ()

    taken = {BYTE_ALPHABET[b] for b in range(256)} | set(SPECIAL_TOKENS) | set(added)
    pieces = split_answer(answer, taken) if answer is not None else []
    tokenizer, piece_ids = build_tokenizer(pieces, chat_template=template, added=added,
                                           tokenizer_class=recipe.tokenizer_class)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    text_size, vision_size = TEXT_SIZES[size], VISION_SIZES[size]
    vocab_size = _round_up(len(tokenizer), 64)
    hidden = max(text_size.min_hidden, _round_up(vocab_size, 4 * text_size.head_dim))
    text_config = _text_config(recipe, text_size, vocab_size, hidden, ids)
    if recipe.moe:
        text_config = {**text_config, **_moe_config(MOE_SIZES[size])}
        del text_config["intermediate_size"]  # every layer routes: the experts' sizes replace it
    config = AutoConfig.for_model(
        family,
        text_config=text_config,
        vision_config=_vision_config(recipe, vision_size, hidden),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    if pieces:
        _script_weights(model, piece_ids, ids)
    # Saved in bf16 like the released checkpoints; callers pick their dtype when loading.
    model = model.to(torch.bfloat16)
    for sub_config in (model.config.text_config, model.config.vision_config):
        sub_config.dtype = torch.bfloat16
    model.config.qvl_random_weights = True
    if pieces:
        model.config.qvl_scripted_answer = True
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        pad_token_id=ids["<|endoftext|>"],
    )
    model.save_pretrained(out)

    pixel = {"patch_size": recipe.patch_size, "temporal_patch_size": 2, "merge_size": 2,
             "image_mean": recipe.image_mean, "image_std": recipe.image_std}
    image_processor = Qwen2VLImageProcessor(size=dict(recipe.image_size), **pixel)
    video_processor = video_processor_class_from_name(recipe.video_processor_class)(
        size=dict(recipe.video_size), **pixel)
    processor = processor_class_from_name(recipe.processor_class)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        chat_template=template)
    processor.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: `python -m qvl_core.tiny OUTDIR [--family F] [--answer TEXT | --answer-file PATH] ...`."""
    parser = argparse.ArgumentParser(prog="python -m qvl_core.tiny", description=__doc__)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--family", choices=sorted(RECIPES), default="qwen2_5_vl")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--answer", help="scripted answer: the checkpoint always replies exactly this")
    group.add_argument("--answer-file", type=Path, help="read the scripted answer from this UTF-8 file")
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-thinking-default", dest="thinking_default", action="store_false",
                        help="Qwen3.5 families: a template that thinks only when asked (like Qwen3.5-0.8B/2B)")
    args = parser.parse_args(argv)
    answer = args.answer_file.read_text(encoding="utf-8") if args.answer_file else args.answer
    try:
        path = build_checkpoint(args.outdir, family=args.family, answer=answer, size=args.size, seed=args.seed,
                                thinking_default=args.thinking_default)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
