"""Image files in, model-sized images out: validation, decompression-bomb guard and smart resize."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from qvl_core.errors import UserError
from qvl_core.families import FamilySpec

# Named limits. The pixel limit of an uploaded file is the app's `Limits.max_image_pixels`, passed to `open_image`.
MAX_ASPECT_RATIO = 200  # the model's resizer refuses more extreme shapes
# Visual-token budget per image (one token covers factor x factor pixels).
DEFAULT_MIN_IMAGE_TOKENS = 4
DEFAULT_MAX_IMAGE_TOKENS = 1280  # model card's suggestion for bounded speed and memory
MAX_IMAGE_TOKENS_LIMIT = 16384  # the processor's own ceiling
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


@dataclass(frozen=True)
class PixelBudget:
    """Min/max pixels the model may see for one image, after resizing."""

    min_pixels: int
    max_pixels: int

    @classmethod
    def from_tokens(cls, family: FamilySpec, *, min_tokens: int = DEFAULT_MIN_IMAGE_TOKENS,
                    max_tokens: int = DEFAULT_MAX_IMAGE_TOKENS) -> PixelBudget:
        if not 1 <= max_tokens <= MAX_IMAGE_TOKENS_LIMIT:
            raise UserError(f"Max image tokens must be between 1 and {MAX_IMAGE_TOKENS_LIMIT}, got {max_tokens}.")
        min_tokens = max(1, min(min_tokens, max_tokens))
        return cls(min_tokens * family.pixels_per_token, max_tokens * family.pixels_per_token)


@dataclass(frozen=True)
class PreparedImage:
    """An image resized exactly to what the model sees, with both sizes as (width, height)."""

    image: Image.Image
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def smart_resize(height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """(height, width) the Qwen-VL processor resizes to: multiples of `factor` within the pixel range.

    Mirrors the processor's computation so our sizes match `image_grid_thw` exactly;
    a test checks it against the installed transformers.
    """
    if height <= 0 or width <= 0:
        raise UserError(f"Image has no pixels ({width}x{height}).")
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise UserError(
            f"Image aspect ratio {ratio:.0f}:1 ({width}x{height}) is beyond the limit of "
            f"{MAX_ASPECT_RATIO}:1 the model accepts; crop it first."
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return max(h_bar, factor), max(w_bar, factor)


def open_image(path: str | os.PathLike[str], *, max_pixels: int, limit_name: str = "QVL_MAX_IMAGE_PIXELS"
               ) -> Image.Image:
    """Decode an image file to RGB, EXIF-rotated. Refuses bombs (over `max_pixels`: the app's
    `Limits.max_image_pixels` for uploads) by reading the header first; messages name `limit_name`."""
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise UserError(f"Image file {name!r} does not exist.")
    if p.stat().st_size == 0:
        raise UserError(f"Image file {name!r} is empty.")
    try:
        with warnings.catch_warnings():
            # Our own limit (below) decides, with a message that names it; PIL's warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(p)
            w, h = img.size
            if w * h > max_pixels:
                raise UserError(
                    f"Image {name!r} is {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of "
                    f"{max_pixels / 1e6:.0f} MP ({limit_name})."
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except UserError:
        raise
    except Image.DecompressionBombError as exc:  # far beyond our limit: PIL refuses before we see the size
        raise UserError(f"Image {name!r} is over the limit of {max_pixels / 1e6:.0f} MP "
                        f"({limit_name}): {exc}") from None
    except UnidentifiedImageError as exc:
        raise UserError(f"File {name!r} is not an image this app can read ({type(exc).__name__}).") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"Image {name!r} is damaged or truncated: {exc}.") from None
    if img.mode != "RGB":
        img = _to_rgb(img)
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    # Transparent areas become white, as a page or sticker would look, not black.
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img.convert("RGB")


def prepare_image(img: Image.Image, family: FamilySpec, budget: PixelBudget) -> PreparedImage:
    """Resize to the exact size the model will see (the processor's resize is then a no-op)."""
    w, h = img.size
    new_h, new_w = fit_aspect(*smart_resize(h, w, factor=family.factor, min_pixels=budget.min_pixels,
                                            max_pixels=budget.max_pixels), factor=family.factor)
    resized = img if (new_w, new_h) == (w, h) else img.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return PreparedImage(resized, (w, h), (new_w, new_h))


def fit_aspect(height: int, width: int, *, factor: int) -> tuple[int, int]:
    """Trim the long side by whole tokens until the ratio is within MAX_ASPECT_RATIO.

    Rounding can push a 193:1 image to 201:1, which the processor would then refuse; one token less on
    the long side fixes it (coordinates still map exactly: each axis has its own scale).
    """
    while max(height, width) > MAX_ASPECT_RATIO * min(height, width):
        if height > width:
            height -= factor
        else:
            width -= factor
    return height, width


def visual_tokens(input_size: tuple[int, int], family: FamilySpec) -> int:
    """How many visual tokens an image of `input_size` (already resized) costs."""
    return (input_size[0] // family.factor) * (input_size[1] // family.factor)
