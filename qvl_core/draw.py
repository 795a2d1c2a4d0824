"""Detections and layout blocks onto pixels: boxes, point markers and tags drawn with PIL; gr.AnnotatedImage values.

Pure PIL (Gradio is not imported). Coordinates are ORIGINAL image pixels, as `parse_grounding` and
`extract_layout` return them, so the image passed in must be the original, not the resized model input.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from qvl_core.parse.grounding import Detection
from qvl_core.parse.layout import LayoutBlock
from qvl_core.parse.toolcall import AgentAction, ZoomCall

# Named limits and sizes (relative to the image's short side, so marks read the same on any image).
MAX_LABEL_CHARS = 40  # labels come from the model: long ones are cut with an ellipsis
LINE_WIDTH_FRACTION = 1 / 250  # box outline
POINT_RADIUS_FRACTION = 1 / 90  # point marker
FONT_SIZE_FRACTION = 1 / 32  # label text
MIN_FONT_SIZE, MAX_FONT_SIZE = 10, 64
POINT_BOX_FRACTION = 0.015  # side of the square an AnnotatedImage shows for a point
DEFAULT_LABEL = "object"
# Drawn results are for the eye: a 48 MP photo drawn at full size took 16 s to encode as WebP after a
# 14-token answer. `draw_for_display` draws on a copy whose long side is at most this; coordinates stay original.
MAX_DISPLAY_SIDE = 2048
_DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LAYOUT_LINE_FRACTION = 1 / 400  # layout box outline
LAYOUT_FONT_FRACTION = 1 / 70  # layout kind tag
LAYOUT_FILL_ALPHA, LAYOUT_TAG_ALPHA = 28, 220  # a light tint inside each block, a near-opaque tag

# Saturated mid-luminance colours: visible on white and on dark images alike, and far enough apart
# that neighbouring labels rarely look the same.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 190, 190), (240, 50, 230), (150, 160, 20), (0, 128, 128), (170, 110, 40),
    (128, 0, 0), (0, 0, 160), (128, 128, 0), (220, 90, 150), (40, 110, 60),
    (90, 90, 210), (200, 70, 20), (20, 150, 110), (160, 60, 100), (100, 120, 140),
)


def palette_color(label: str) -> tuple[int, int, int]:
    """A stable colour for a label (same label, same colour, in every run and process)."""
    digest = hashlib.blake2b(label.strip().lower().encode("utf-8", "replace"), digest_size=4).digest()
    return _PALETTE[int.from_bytes(digest, "big") % len(_PALETTE)]


def _ink_for(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `color` (relative luminance)."""
    r, g, b = color
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 150 else (255, 255, 255)


def caption(det: Detection) -> str:
    """What to show for a detection: its label, its text for text spotting, or "object"."""
    if det.text is not None:
        return f"text: {det.text}" if det.label is None else f"{det.label} · text: {det.text}"
    return det.label or DEFAULT_LABEL


def _color_key(det: Detection) -> str:
    # Text-spotting lines share one colour; colouring by content would give every line a different one.
    return det.label or ("text" if det.text is not None else DEFAULT_LABEL)


def _truncate(s: str, limit: int = MAX_LABEL_CHARS) -> str:
    s = " ".join(s.split())  # newlines and tabs from the model would break the one-line tag
    return s if len(s) <= limit else s[: limit - 1].rstrip() + "…"


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size)  # FreeType build of Pillow >= 10.1
    except (TypeError, ImportError, OSError):
        pass  # older Pillow or no FreeType: try DejaVu, then the fixed-size bitmap font
    if _DEJAVU.is_file():
        try:
            return ImageFont.truetype(str(_DEJAVU), size)
        except (ImportError, OSError):
            pass  # no FreeType at all: fall through to the bitmap font
    return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, max_width: float) -> str:
    """`text` cut with an ellipsis until it fits `max_width` pixels (possibly to just the ellipsis)."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "…", font=font) > max_width:
        text = text[:-1]
    return text.rstrip() + "…"


def draw_detections(image: Image.Image, detections: list[Detection]) -> Image.Image:
    """A copy of `image` with every box outlined, every point marked and every label on a filled tag."""
    # convert() always returns a new image (a copy when the mode is already right): the input is never drawn on.
    out = image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB")
    w, h = out.size
    short = min(w, h)
    line = max(1, round(short * LINE_WIDTH_FRACTION))
    radius = max(2, round(short * POINT_RADIUS_FRACTION))
    font = _font(max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, round(short * FONT_SIZE_FRACTION))))
    draw = ImageDraw.Draw(out)
    tags: list[tuple[float, float, str, tuple[int, int, int]]] = []  # drawn last, on top of every mark

    for det in detections:
        color = palette_color(_color_key(det))
        if det.box is not None:
            x1, y1, x2, y2 = det.box
            draw.rectangle((x1, y1, x2, y2), outline=color, width=line)
            tags.append((x1, y1, caption(det), color))
        if det.point is not None:
            px, py = det.point
            draw.ellipse((px - radius, py - radius, px + radius, py + radius), fill=color,
                         outline=_ink_for(color), width=max(1, radius // 3))
            if det.box is None:
                tags.append((px + radius, py - radius, caption(det), color))

    pad = max(1, line)
    for x, y, text, color in tags:
        label = _fit(draw, _truncate(text), font, max(1, w - 2 * pad))
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        tag_w, tag_h = right - left + 2 * pad, bottom - top + 2 * pad
        tx = min(max(0.0, x), max(0.0, w - tag_w))  # keep the tag inside the image horizontally
        ty = y - tag_h if y - tag_h >= 0 else min(max(0.0, y), max(0.0, h - tag_h))  # above the box, else inside
        draw.rectangle((tx, ty, tx + tag_w, ty + tag_h), fill=color)
        draw.text((tx + pad - left, ty + pad - top), label, fill=_ink_for(color), font=font)
    return out


def display_copy(image: Image.Image, max_side: int = MAX_DISPLAY_SIDE) -> tuple[Image.Image, tuple[float, float]]:
    """`image` shrunk so its long side is at most `max_side` (never enlarged), and the (x, y) scale applied."""
    w, h = image.size
    if max(w, h) <= max_side:
        return image, (1.0, 1.0)
    size = (max(1, round(w * max_side / max(w, h))), max(1, round(h * max_side / max(w, h))))
    # reducing_gap: a fast integer reduce first, then a short resample (a 48 MP photo in a fraction of a second).
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0), (size[0] / w, size[1] / h)


def scaled(det: Detection, sx: float, sy: float) -> Detection:
    """`det` with its box and point in the pixels of an image scaled by (sx, sy)."""
    box = None if det.box is None else (det.box[0] * sx, det.box[1] * sy, det.box[2] * sx, det.box[3] * sy)
    point = None if det.point is None else (det.point[0] * sx, det.point[1] * sy)
    return replace(det, box=box, point=point)


def draw_for_display(image: Image.Image, detections: list[Detection], max_side: int = MAX_DISPLAY_SIDE) -> Image.Image:
    """`draw_detections` on a display-sized copy of the ORIGINAL `image` (detections in its pixels)."""
    shown, (sx, sy) = display_copy(image, max_side)
    return draw_detections(shown, [scaled(d, sx, sy) for d in detections])


def annotated_value(image: Image.Image, detections: list[Detection]
                    ) -> tuple[Image.Image, list[tuple[tuple[int, int, int, int], str]]]:
    """The value for `gr.AnnotatedImage`: (image, [((x1, y1, x2, y2), label), ...]) in integer pixels.

    Points become small squares around the point so they show up; text-spotting lines carry their text.
    """
    w, h = image.size
    half = max(1.0, POINT_BOX_FRACTION * min(w, h) / 2)
    boxes: list[tuple[tuple[int, int, int, int], str]] = []
    for det in detections:
        if det.box is not None:
            x1, y1, x2, y2 = det.box
        elif det.point is not None:
            px, py = det.point
            x1, y1, x2, y2 = px - half, py - half, px + half, py + half
        else:
            continue
        ix1, iy1 = _clip(round(x1), w), _clip(round(y1), h)
        ix2, iy2 = _clip(round(x2), w), _clip(round(y2), h)
        # A box thinner than a pixel after rounding still gets one pixel, so it stays visible.
        if ix2 <= ix1:
            ix1, ix2 = (ix1, ix1 + 1) if ix1 < w else (ix1 - 1, ix1)
        if iy2 <= iy1:
            iy1, iy2 = (iy1, iy1 + 1) if iy1 < h else (iy1 - 1, iy1)
        boxes.append(((ix1, iy1, ix2, iy2), _truncate(caption(det), MAX_LABEL_CHARS * 2)))
    return image, boxes


def _clip(v: int, hi: int) -> int:
    return min(max(v, 0), hi)


# --- Layout blocks (document pages) ---------------------------------------------------------------
KIND_COLORS: dict[str, tuple[int, int, int]] = {
    "heading": (214, 39, 40),
    "paragraph": (31, 119, 180),
    "list": (23, 190, 207),
    "table": (44, 160, 44),
    "formula": (148, 103, 189),
    "image": (255, 127, 14),
    "caption": (140, 86, 75),
    "chart": (227, 119, 194),
    "music-sheet": (188, 189, 34),
    "chemical-formula": (0, 128, 128),
    "footnote": (127, 127, 127),
    "page-header": (100, 100, 160),
    "page-footer": (100, 100, 160),
}
DEFAULT_KIND_COLOR = (90, 90, 90)


def draw_layout(image: Image.Image, blocks: list[LayoutBlock] | tuple[LayoutBlock, ...]) -> Image.Image:
    """A copy of the page with each block's box drawn in its kind's colour and a small kind tag."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out, "RGBA")
    short = min(out.size)
    line = max(1, round(short * LAYOUT_LINE_FRACTION))
    font = _font(max(MIN_FONT_SIZE, round(short * LAYOUT_FONT_FRACTION)))
    for b in blocks:
        if b.box is None:
            continue
        color = KIND_COLORS.get(b.kind, DEFAULT_KIND_COLOR)
        x1, y1, x2, y2 = b.box
        draw.rectangle((x1, y1, x2, y2), outline=(*color, 255), fill=(*color, LAYOUT_FILL_ALPHA), width=line)
        tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), b.kind, font=font)
        tw, th = tx2 - tx1 + 6, ty2 - ty1 + 4
        lx = min(max(0.0, x1), max(0.0, out.width - tw))
        ly = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((lx, ly, lx + tw, ly + th), fill=(*color, LAYOUT_TAG_ALPHA))
        draw.text((lx + 3 - tx1, ly + 2 - ty1), b.kind, fill=(255, 255, 255, 255), font=font)
    return out


# --- Agent actions (screenshots) ------------------------------------------------------------------
ACTION_COLOR = (230, 25, 75)  # the marker, arrow and tag of the action to take
FINAL_COLOR = (0, 110, 60)  # the banner of terminate / answer
ZOOM_COLOR = (0, 130, 200)
MARKER_RADIUS_FRACTION = 1 / 40  # click ring, relative to the short side
SCROLL_ARROW_FRACTION = 1 / 6  # a scroll arrow's length, relative to the short side
MAX_ACTION_TEXT_CHARS = 80  # typed text / keys shown beside the marker


def _action_caption(action: AgentAction) -> str:
    """What the tag beside the marker says: the action and its text, keys, button or duration."""
    detail = (action.text if action.text is not None else "+".join(action.keys) if action.keys
              else action.button or (f"{action.time:g} s" if action.time is not None else "")
              or (f"{action.pixels:+g} px" if action.pixels is not None else ""))
    return _truncate(f"{action.action}: {detail}" if detail else action.action, MAX_ACTION_TEXT_CHARS)


def _arrow(draw: ImageDraw.ImageDraw, start: tuple[float, float], end: tuple[float, float], color, width: int) -> None:
    draw.line((start, end), fill=color, width=width)
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    head = max(6.0, width * 4.0)
    for turn in (2.6, -2.6):
        draw.line((end, (end[0] + head * math.cos(angle + turn), end[1] + head * math.sin(angle + turn))),
                  fill=color, width=width)


def _tag(draw: ImageDraw.ImageDraw, at: tuple[float, float], text: str, color, font, size) -> None:
    """A filled tag with `text`, just right of and above `at`, kept inside the image."""
    w, h = size
    label = _fit(draw, text, font, max(1, w - 4))
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    tw, th = right - left + 6, bottom - top + 6
    tx = min(max(0.0, at[0]), max(0.0, w - tw))
    ty = min(max(0.0, at[1] - th), max(0.0, h - th))
    draw.rectangle((tx, ty, tx + tw, ty + th), fill=color)
    draw.text((tx + 3 - left, ty + 3 - top), label, fill=_ink_for(color), font=font)


def draw_action(image: Image.Image, action: AgentAction | None, *, start: tuple[float, float] | None = None,
                problem: str | None = None, max_side: int = MAX_DISPLAY_SIDE) -> Image.Image:
    """A display-sized copy of the ORIGINAL screenshot with the action drawn (points in its pixels).

    A ring and cross at a click, an arrow for a swipe (coordinate -> coordinate2) or a drag (from `start`, the
    pointer's last position, when known), a scroll arrow, typed text or keys beside the marker, and a banner for
    terminate / answer / wait and any action without a point. `problem`: a banner saying why there is no action.
    """
    shown, (sx, sy) = display_copy(image.convert("RGB"), max_side)
    out = shown.copy() if shown is image else shown
    draw = ImageDraw.Draw(out)
    w, h = out.size
    short = min(w, h)
    width = max(2, round(short * LINE_WIDTH_FRACTION * 1.5))
    font = _font(max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, round(short * FONT_SIZE_FRACTION))))

    def scale(p: tuple[float, float] | None) -> tuple[float, float] | None:
        return None if p is None else (p[0] * sx, p[1] * sy)

    if action is None:
        _tag(draw, (0, h), _truncate(f"no action: {problem or 'the answer had none'}", MAX_ACTION_TEXT_CHARS * 2),
             (90, 90, 90), font, (w, h))
        return out
    p1, p2, p0 = scale(action.coordinate), scale(action.coordinate2), scale(start)
    caption = _action_caption(action)
    if p1 is None:  # key, type without a point, wait, terminate, answer, system_button, open
        _tag(draw, (0, h), caption, FINAL_COLOR if action.final else ACTION_COLOR, font, (w, h))
        return out
    radius = max(4, round(short * MARKER_RADIUS_FRACTION))
    if p2 is not None:
        _arrow(draw, p1, p2, ACTION_COLOR, width)
    if action.action == "left_click_drag" and p0 is not None:
        _arrow(draw, p0, p1, ACTION_COLOR, width)
    if action.action in ("scroll", "hscroll"):
        length = short * SCROLL_ARROW_FRACTION * (1 if (action.pixels or 0) >= 0 else -1)
        # Positive pixels scroll up (the content moves down): the arrow points the way the view moves.
        end = (p1[0] + length, p1[1]) if action.action == "hscroll" else (p1[0], p1[1] - length)
        _arrow(draw, p1, end, ACTION_COLOR, width)
    x, y = p1
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=ACTION_COLOR, width=width)
    draw.line((x - radius * 1.6, y, x + radius * 1.6, y), fill=ACTION_COLOR, width=max(1, width // 2))
    draw.line((x, y - radius * 1.6, x, y + radius * 1.6), fill=ACTION_COLOR, width=max(1, width // 2))
    _tag(draw, (x + radius, y - radius), caption, ACTION_COLOR, font, (w, h))
    return out


def draw_zoom(image: Image.Image, zooms: list[ZoomCall] | tuple[ZoomCall, ...], max_side: int = MAX_DISPLAY_SIDE
              ) -> Image.Image:
    """A display-sized copy of the ORIGINAL image with each zoom region outlined and numbered."""
    shown, (sx, sy) = display_copy(image.convert("RGB"), max_side)
    out = shown.copy() if shown is image else shown
    draw = ImageDraw.Draw(out)
    short = min(out.size)
    width = max(2, round(short * LINE_WIDTH_FRACTION))
    font = _font(max(MIN_FONT_SIZE, min(MAX_FONT_SIZE, round(short * FONT_SIZE_FRACTION))))
    for n, z in enumerate(zooms, 1):
        x1, y1, x2, y2 = z.box[0] * sx, z.box[1] * sy, z.box[2] * sx, z.box[3] * sy
        draw.rectangle((x1, y1, x2, y2), outline=ZOOM_COLOR, width=width)
        _tag(draw, (x1, y1), f"zoom {n}" + (f": {z.label}" if z.label else ""), ZOOM_COLOR, font, out.size)
    return out
