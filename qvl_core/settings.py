"""The app's input limits (`Limits`) and reading numbers from QVL_* variables, with messages naming the flag."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from qvl_core.errors import UserError


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UserError(f"Environment variable {name} must be a number, got {raw!r}.") from None
    if value <= 0:
        raise UserError(f"Environment variable {name} must be positive, got {raw!r}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"Environment variable {name} must be a number, got {raw!r}.") from None
    if not value > 0:
        raise UserError(f"Environment variable {name} must be positive, got {raw!r}.")
    return value


# ---- Input limits of one app ------------------------------------------------------------------------------
# ~8000x8000 pixels of the ORIGINAL file, checked from the header before decoding; above: a decompression bomb.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
DEFAULT_MAX_PDF_PAGES = 50  # pages per document job (PDF pages or TIFF frames)
DEFAULT_MAX_VIDEO_SECONDS = 3 * 3600.0
# The highest max_new_tokens a request may ask for: a dense document page needs thousands; the context bounds the rest.
DEFAULT_MAX_NEW_TOKENS_LIMIT = 32768

# Each limit's flag and environment variable, named in every message about it.
LIMIT_FLAGS = {
    "max_image_pixels": ("--max-image-pixels", "QVL_MAX_IMAGE_PIXELS"),
    "max_pdf_pages": ("--max-pdf-pages", "QVL_MAX_PDF_PAGES"),
    "max_video_seconds": ("--max-video-seconds", "QVL_MAX_VIDEO_SECONDS"),
    "max_new_tokens": ("--max-new-tokens-limit", "QVL_MAX_NEW_TOKENS"),
}


@dataclass(frozen=True)
class Limits:
    """The input limits of one app or command, built once (flags, QVL_* variables) and handed to the backend,
    whose every check reads them from here; nothing rewrites a module's constant."""

    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES
    max_video_seconds: float = DEFAULT_MAX_VIDEO_SECONDS
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS_LIMIT

    def __post_init__(self) -> None:
        for name, (flag, env) in LIMIT_FLAGS.items():
            value = getattr(self, name)
            kind = float if name == "max_video_seconds" else int
            if isinstance(value, bool) or not isinstance(value, (int, kind)):
                raise UserError(f"{flag} must be a {'number' if kind is float else 'whole number'}, got {value!r} "
                                f"(env {env}).")
            if not (value > 0 and math.isfinite(value)):
                raise UserError(f"{flag} must be positive, got {value!r} (env {env}).")

    @classmethod
    def from_env(cls) -> Limits:
        """The defaults with their QVL_* variables applied, read now (not at import)."""
        return cls(max_image_pixels=env_int("QVL_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
                   max_pdf_pages=env_int("QVL_MAX_PDF_PAGES", DEFAULT_MAX_PDF_PAGES),
                   max_video_seconds=env_float("QVL_MAX_VIDEO_SECONDS", DEFAULT_MAX_VIDEO_SECONDS),
                   max_new_tokens=env_int("QVL_MAX_NEW_TOKENS", DEFAULT_MAX_NEW_TOKENS_LIMIT))
