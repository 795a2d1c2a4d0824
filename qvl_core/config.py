"""App settings from command-line flags, each with a QVL_* environment variable as its default."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from .errors import UserError
from .loading import ATTN_CHOICES, DTYPE_CHOICES, QUANT_CHOICES, LoadOptions

DEFAULT_PORT = 7860
DEFAULT_MAX_FILE_SIZE = "200mb"
DEFAULT_QUEUE_SIZE = 64


@dataclass(frozen=True)
class ServeConfig:
    load: LoadOptions
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    share: bool = False
    auth: tuple[str, str] | None = None
    max_file_size: str = DEFAULT_MAX_FILE_SIZE
    queue_size: int = DEFAULT_QUEUE_SIZE


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


def add_serve_args(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
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


def load_options(ns: argparse.Namespace) -> LoadOptions:
    return LoadOptions(model=ns.model, device=ns.device, dtype=ns.dtype, attn=ns.attn, quantization=ns.quantization)


def serve_config(ns: argparse.Namespace) -> ServeConfig:
    auth = None
    if ns.auth:
        user, sep, password = ns.auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--auth must be USER:PASS (both non-empty).")
        auth = (user, password)
    if ns.queue_size < 1:
        raise UserError(f"--queue-size must be at least 1, got {ns.queue_size}.")
    return ServeConfig(load=load_options(ns), host=ns.host, port=ns.port, share=ns.share, auth=auth,
                       max_file_size=ns.max_file_size, queue_size=ns.queue_size)
