"""Command-line flags every entry point shares (model, backend, input limits); each has a QVL_* variable as default."""

from __future__ import annotations

import argparse
import os

from qvl_core.engine.backend import BACKEND_KINDS, DEFAULT_API_TIMEOUT_S, BackendOptions
from qvl_core.engine.loading import ATTN_CHOICES, DTYPE_CHOICES, QUANT_CHOICES, LoadOptions
from qvl_core.settings import LIMIT_FLAGS, Limits, env_float


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
    p.add_argument("--prefix-cache-mb", type=int, default=None,
                   help="memory for kept conversation prefixes (KV caches), so a follow-up prefills only what is "
                        "new; 0 = off (env QVL_PREFIX_CACHE_MB; default 4096 on CUDA, 1024 on CPU)")
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
                   help="qwen2-vl | qwen2.5-vl | qwen3-vl | qwen3.5 | qwen3.5-moe | qwen3.8-flash-next, for a "
                        "served model whose name or folder does not "
                        "tell (env QVL_FAMILY)")
    p.add_argument("--api-timeout", type=float, default=env_float("QVL_API_TIMEOUT", DEFAULT_API_TIMEOUT_S),
                   help="seconds to wait for the server's next token, the first one included (a long video "
                        "prefill can take minutes; env QVL_API_TIMEOUT)")
    p.add_argument("--api-flavor", default=_env("QVL_API_FLAVOR", "auto"),
                   choices=("auto", "vllm", "transformers", "openai"),
                   help="which server extensions to use (frame times for video, sampling fields); auto detects "
                        "vLLM and transformers serve (env QVL_API_FLAVOR)")


def add_limit_args(p: argparse.ArgumentParser) -> None:
    """Input limits (`Limits`); each default is the named default with its QVL_* variable applied, read now."""
    env = Limits.from_env()
    helps = {"max_image_pixels": "images above this many pixels are refused before decoding",
             "max_pdf_pages": "pages per document job",
             "max_video_seconds": "longer videos are refused",
             "max_new_tokens": "the highest max new tokens a request may ask for"}
    for name, (flag, var) in LIMIT_FLAGS.items():
        p.add_argument(flag, type=float if name == "max_video_seconds" else int,
                       default=getattr(env, name), help=f"{helps[name]} (env {var})")


def load_options(ns: argparse.Namespace) -> LoadOptions:
    return LoadOptions(model=ns.model, device=ns.device, dtype=ns.dtype, attn=ns.attn, quantization=ns.quantization,
                       prefix_cache_mb=getattr(ns, "prefix_cache_mb", None))


def backend_options(ns: argparse.Namespace, limits: Limits | None = None) -> BackendOptions:
    """The backend the flags describe, checking requests against `limits` (default: the QVL_* variables)."""
    return BackendOptions(load=load_options(ns), kind=ns.backend, api_base=ns.api_base, api_key=ns.api_key,
                          family=ns.family, api_timeout_s=ns.api_timeout, api_flavor=ns.api_flavor,
                          limits=limits or Limits.from_env())


def limits_from(ns: argparse.Namespace) -> Limits:
    """The one `Limits` of the flags `add_limit_args` added (validated: a message names the bad flag)."""
    return Limits(**{name: getattr(ns, _dest(flag)) for name, (flag, _var) in LIMIT_FLAGS.items()})


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")  # argparse's rule: --max-new-tokens-limit -> max_new_tokens_limit
