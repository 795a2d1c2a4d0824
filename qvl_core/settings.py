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


# ---- Text limits: every text a person sends, checked before any work (tokenizing 1 MB took minutes) --------
MAX_MESSAGE_CHARS = 100_000  # one chat message
MAX_SYSTEM_CHARS = 20_000  # a system prompt
MAX_PROMPT_CHARS = 20_000  # a task's prompt or question: grounding text, video question, an edited prompt
MAX_FIELD_SPEC_CHARS = 20_000  # the fields to extract, as a list or a JSON schema
MAX_FIELD_NAME_CHARS = 200  # one field name (each reaches the model, and the status line, verbatim)
MAX_PAGE_RANGE_CHARS = 1_000  # "1-5, 7, 9-12": a range of 50 pages is far shorter


def check_text(what: str, text: str, limit: int) -> str:
    """`text` unchanged, or a UserError naming the field, its length and the limit, or its invalid character.

    A lone surrogate (JSON may carry "\\ud800") cannot be encoded, so the tokenizer would fail on it later with
    a TypeError that names nothing.
    """
    if not isinstance(text, str):
        raise UserError(f"{what} must be text, got {type(text).__name__}.")
    if len(text) > limit:
        raise UserError(f"{what} is {len(text)} characters, over the limit of {limit}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UserError(f"{what} holds an invalid character (a lone surrogate U+{ord(text[exc.start]):04X} at "
                        f"character {exc.start + 1}): send valid Unicode text.") from None
    return text


def as_number(what: str, value: object, *, whole: bool = False) -> float | int:
    """A loosely typed API or slider value as a number (an integral float for a whole one), else a UserError
    naming the field: NaN, inf, text or a list used to fail inside int() with a message naming nothing."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (whole and value != int(value)):  # type: ignore[arg-type]
        raise UserError(f"{what} must be a {'whole number' if whole else 'number'}, got {value!r}.")
    return int(value) if whole else float(value)  # type: ignore[arg-type]
