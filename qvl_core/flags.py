"""Command-line flags every entry point shares (model, backend, input limits); each has a QVL_* variable as default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from qvl_core.engine import sampling
from qvl_core.engine.backend import BACKEND_KINDS, DEFAULT_API_TIMEOUT_S, BackendOptions
from qvl_core.engine.loading import ATTN_CHOICES, DTYPE_CHOICES, QUANT_CHOICES, LoadOptions
from qvl_core.errors import UserError
from qvl_core.media import documents, images
from qvl_core.media.video import plan as video_plan
from qvl_core.settings import env_float


@dataclass(frozen=True)
class Limits:
    """Input limits of one app. The module constants hold the defaults (their QVL_* variables already applied);
    `apply` makes these values the ones every check reads (call it once at startup, before building the UI)."""

    max_image_pixels: int = images.MAX_IMAGE_PIXELS
    max_pdf_pages: int = documents.MAX_PDF_PAGES
    max_video_seconds: float = video_plan.DEFAULT_MAX_DURATION_S
    max_new_tokens: int = sampling.MAX_NEW_TOKENS_LIMIT

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not value > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}.")

    def apply(self) -> None:
        images.MAX_IMAGE_PIXELS = self.max_image_pixels  # read at call time by every image check (TIFF frames too)
        documents.MAX_PDF_PAGES = self.max_pdf_pages
        video_plan.DEFAULT_MAX_DURATION_S = self.max_video_seconds
        sampling.MAX_NEW_TOKENS_LIMIT = self.max_new_tokens


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Flags for choosing and loading the model (shared by every command)."""
    p.add_argument("--model", default=_env("QVL_MODEL"),
                   help="Hub id or local folder (env QVL_MODEL; default: 7B on a big GPU, else 3B)")
    p.add_argument("--device", default=_env("QVL_DEVICE", "auto"), choices=("auto", "cuda", "cpu"),
                   help="env QVL_DEVICE")
    p.add_argument("--dtype", default=_env("QVL_DTYPE", "auto"), choices=DTYPE_CHOICES,
                   help="env QVL_DTYPE; auto = bf16 on CUDA, fp32 on CPU")
    p.add_argument("--attn", default=_env("QVL_ATTN", "auto"), choices=ATTN_CHOICES,
                   help="env QVL_ATTN; auto = flash_attention_2 when installed on CUDA, else sdpa")
    p.add_argument("--quantization", default=_env("QVL_QUANTIZATION", "none"), choices=QUANT_CHOICES,
                   help="weight-only quantization through torchao (env QVL_QUANTIZATION)")
    add_backend_args(p)


def add_backend_args(p: argparse.ArgumentParser) -> None:
    """Flags for serving through an OpenAI-compatible server instead of loading the model here."""
    p.add_argument("--backend", default=_env("QVL_BACKEND", "transformers"), choices=BACKEND_KINDS,
                   help="transformers: load the model in this process; openai: send requests to an "
                        "OpenAI-compatible server (vLLM, SGLang, transformers serve) at --api-base; --model is "
                        "then the served model name (env QVL_BACKEND)")
    p.add_argument("--api-base", default=_env("QVL_API_BASE"),
                   help="server URL for --backend openai, e.g. http://127.0.0.1:8000/v1 (env QVL_API_BASE)")
    p.add_argument("--api-key", default=_env("QVL_API_KEY"),
                   help="bearer key for the server, if it wants one (env QVL_API_KEY; never printed)")
    p.add_argument("--family", default=_env("QVL_FAMILY"),
                   help="qwen2-vl | qwen2.5-vl | qwen3-vl, for a served model whose name or folder does not "
                        "tell (env QVL_FAMILY)")
    p.add_argument("--api-timeout", type=float, default=env_float("QVL_API_TIMEOUT", DEFAULT_API_TIMEOUT_S),
                   help="seconds to wait for the server's next token, the first one included (a long video "
                        "prefill can take minutes; env QVL_API_TIMEOUT)")
    p.add_argument("--api-flavor", default=_env("QVL_API_FLAVOR", "auto"),
                   choices=("auto", "vllm", "transformers", "openai"),
                   help="which server extensions to use (frame times for video, sampling fields); auto detects "
                        "vLLM and transformers serve (env QVL_API_FLAVOR)")


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """Input limits; each default is the module constant, which its QVL_* variable has already set."""
    p.add_argument("--max-image-pixels", type=int, default=images.MAX_IMAGE_PIXELS,
                   help="images above this many pixels are refused before decoding (env QVL_MAX_IMAGE_PIXELS)")
    p.add_argument("--max-pdf-pages", type=int, default=documents.MAX_PDF_PAGES,
                   help="pages per document job (env QVL_MAX_PDF_PAGES)")
    p.add_argument("--max-video-seconds", type=float, default=video_plan.DEFAULT_MAX_DURATION_S,
                   help="longer videos are refused (env QVL_MAX_VIDEO_SECONDS)")
    p.add_argument("--max-new-tokens-limit", type=int, default=sampling.MAX_NEW_TOKENS_LIMIT,
                   help="the highest max new tokens a request may ask for (env QVL_MAX_NEW_TOKENS)")


def load_options(ns: argparse.Namespace) -> LoadOptions:
    return LoadOptions(model=ns.model, device=ns.device, dtype=ns.dtype, attn=ns.attn, quantization=ns.quantization)


def backend_options(ns: argparse.Namespace) -> BackendOptions:
    return BackendOptions(load=load_options(ns), kind=ns.backend, api_base=ns.api_base, api_key=ns.api_key,
                          family=ns.family, api_timeout_s=ns.api_timeout, api_flavor=ns.api_flavor)


def limits_from(ns: argparse.Namespace) -> Limits:
    return Limits(max_image_pixels=ns.max_image_pixels, max_pdf_pages=ns.max_pdf_pages,
                  max_video_seconds=ns.max_video_seconds, max_new_tokens=ns.max_new_tokens_limit)
