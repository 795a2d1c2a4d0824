"""App settings from command-line flags, each with a QVL_* environment variable as its default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from . import documents, images, sampling, video
from .backend import BACKEND_KINDS, DEFAULT_API_TIMEOUT_S, BackendOptions
from .envvars import env_float, env_int
from .errors import UserError
from .loading import ATTN_CHOICES, DTYPE_CHOICES, QUANT_CHOICES, LoadOptions

DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "200mb"
DEFAULT_QUEUE_SIZE = 64
# Requests the GPU queue runs at once: 1 in process (one GPU), more against a server so that it can batch them.
DEFAULT_CONCURRENCY = {"transformers": 1, "openai": 16}
MAX_CONCURRENCY = 256
# Uploads and the files the tabs write are deleted this long after they were made (checked every tenth of it).
DEFAULT_CACHE_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Limits:
    """Input limits of one app. The module constants hold the defaults (their QVL_* variables already applied);
    `apply` makes these values the ones every check reads (call it once at startup, before building the UI)."""

    max_image_pixels: int = images.MAX_IMAGE_PIXELS
    max_pdf_pages: int = documents.MAX_PDF_PAGES
    max_video_seconds: float = video.DEFAULT_MAX_DURATION_S
    max_new_tokens: int = sampling.MAX_NEW_TOKENS_LIMIT

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if isinstance(value, bool) or not value > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}.")

    def apply(self) -> None:
        images.MAX_IMAGE_PIXELS = self.max_image_pixels  # read at call time by every image check (TIFF frames too)
        documents.MAX_PDF_PAGES = self.max_pdf_pages
        video.DEFAULT_MAX_DURATION_S = self.max_video_seconds
        sampling.MAX_NEW_TOKENS_LIMIT = self.max_new_tokens


@dataclass(frozen=True)
class ServeConfig:
    load: LoadOptions
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    auth: tuple[str, str] | None = None
    max_file_size: str = DEFAULT_MAX_FILE_SIZE
    queue_size: int = DEFAULT_QUEUE_SIZE
    limits: Limits = field(default_factory=Limits)
    cache_ttl_s: int = DEFAULT_CACHE_TTL_S
    # Hosts whose URLs may be fetched as media through the API; empty: URLs are refused.
    allow_url_media: tuple[str, ...] = ()
    backend: BackendOptions | None = None  # None: the in-process model described by `load`
    concurrency: int = 1  # requests the shared GPU queue runs at once (--concurrency)


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


def add_serve_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--concurrency", type=int, default=env_int("QVL_CONCURRENCY", 0) or None,
                   help="requests run at once through the shared GPU queue (env QVL_CONCURRENCY; default 1 in "
                        "process, 16 with --backend openai so the server can batch them)")
    p.add_argument("--host", default=_env("QVL_HOST", "127.0.0.1"), help="env QVL_HOST (0.0.0.0 to listen on all)")
    p.add_argument("--port", type=int, default=int(_env("QVL_PORT", str(DEFAULT_PORT)) or DEFAULT_PORT),
                   help="env QVL_PORT")
    p.add_argument("--share", action="store_true", default=_env("QVL_SHARE", "") in ("1", "true"),
                   help="create a public gradio.live link (env QVL_SHARE=1)")
    p.add_argument("--auth", default=_env("QVL_AUTH"), help="USER:PASS to require a login (env QVL_AUTH)")
    p.add_argument("--max-file-size", default=_env("QVL_MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                   help="largest upload, e.g. 200mb (env QVL_MAX_FILE_SIZE)")
    p.add_argument("--queue-size", type=int,
                   default=int(_env("QVL_QUEUE_SIZE", str(DEFAULT_QUEUE_SIZE)) or DEFAULT_QUEUE_SIZE),
                   help="requests that may wait for the GPU before new ones are refused (env QVL_QUEUE_SIZE)")
    add_limit_args(p)
    p.add_argument("--cache-ttl", type=int, default=env_int("QVL_CACHE_TTL", DEFAULT_CACHE_TTL_S),
                   help="seconds after which uploads and output files are deleted (env QVL_CACHE_TTL)")
    p.add_argument("--allow-url-media", default=_env("QVL_ALLOW_URL_MEDIA", ""),
                   help="comma-separated hosts whose media URLs the API may fetch; default none: URLs are refused "
                        "(env QVL_ALLOW_URL_MEDIA)")


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """Input limits; each default is the module constant, which its QVL_* variable has already set."""
    p.add_argument("--max-image-pixels", type=int, default=images.MAX_IMAGE_PIXELS,
                   help="images above this many pixels are refused before decoding (env QVL_MAX_IMAGE_PIXELS)")
    p.add_argument("--max-pdf-pages", type=int, default=documents.MAX_PDF_PAGES,
                   help="pages per document job (env QVL_MAX_PDF_PAGES)")
    p.add_argument("--max-video-seconds", type=float, default=video.DEFAULT_MAX_DURATION_S,
                   help="longer videos are refused (env QVL_MAX_VIDEO_SECONDS)")
    p.add_argument("--max-new-tokens-limit", type=int, default=sampling.MAX_NEW_TOKENS_LIMIT,
                   help="the highest max new tokens a request may ask for (env QVL_MAX_NEW_TOKENS)")


def load_options(ns: argparse.Namespace) -> LoadOptions:
    return LoadOptions(model=ns.model, device=ns.device, dtype=ns.dtype, attn=ns.attn, quantization=ns.quantization)


def backend_options(ns: argparse.Namespace) -> BackendOptions:
    return BackendOptions(load=load_options(ns), kind=ns.backend, api_base=ns.api_base, api_key=ns.api_key,
                          family=ns.family, api_timeout_s=ns.api_timeout, api_flavor=ns.api_flavor)


def concurrency_from(ns: argparse.Namespace) -> int:
    value = ns.concurrency or DEFAULT_CONCURRENCY[ns.backend]
    if not 1 <= value <= MAX_CONCURRENCY:
        raise UserError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}, got {value}.")
    return value


def serve_config(ns: argparse.Namespace) -> ServeConfig:
    auth = None
    if ns.auth:
        user, sep, password = ns.auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--auth must be USER:PASS (both non-empty).")
        auth = (user, password)
    if ns.queue_size < 1:
        raise UserError(f"--queue-size must be at least 1, got {ns.queue_size}.")
    if ns.cache_ttl < 1:
        raise UserError(f"--cache-ttl must be at least 1 second, got {ns.cache_ttl}.")
    hosts = tuple(h.strip().lower() for h in (ns.allow_url_media or "").split(",") if h.strip())
    return ServeConfig(load=load_options(ns), host=ns.host, port=ns.port, share=ns.share, auth=auth,
                       max_file_size=ns.max_file_size, queue_size=ns.queue_size, limits=limits_from(ns),
                       cache_ttl_s=ns.cache_ttl, allow_url_media=hosts, backend=backend_options(ns),
                       concurrency=concurrency_from(ns))


def limits_from(ns: argparse.Namespace) -> Limits:
    return Limits(max_image_pixels=ns.max_image_pixels, max_pdf_pages=ns.max_pdf_pages,
                  max_video_seconds=ns.max_video_seconds, max_new_tokens=ns.max_new_tokens_limit)
