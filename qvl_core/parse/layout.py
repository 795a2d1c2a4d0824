"""QwenVL HTML in, layout blocks in original page pixels out: LayoutBlock, parse_bbox, map_box, extract_layout."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from bs4 import Tag

from qvl_core.families import FamilySpec, family_for
from qvl_core.parse.coords import Box, coordinate_scales
from qvl_core.parse.html import HEADINGS, MAX_WALK_DEPTH, SKIP_TAGS, block_kind, element_text, parse_tree
from qvl_core.parse.thinking import answer_part

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BBOX_SEP = re.compile(r"[\s,;()\[\]]+")
# Elements reported even without a data-bbox (box=None), so no text block goes missing from the list.
_LAYOUT_TAGS = frozenset({*HEADINGS, "p", "ul", "ol", "dl", "table", "figure", "img", "pre", "blockquote",
                          "header", "footer", "figcaption", "math"})


@dataclass(frozen=True)
class LayoutBlock:
    """One region of a page: `box` in ORIGINAL page pixels (x1, y1, x2, y2), or None when the model gave none.

    `depth` is 0 for a block no other reported block contains, 1 for one nested in it (an `<img>` inside a
    `div.image`), and so on; views that want one box per region draw depth 0 only.
    """

    kind: str
    box: Box | None
    text: str
    tag: str
    page: int | None = None
    depth: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (box as a list)."""
        d = asdict(self)
        d["box"] = list(self.box) if self.box is not None else None
        return d


def parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    """'x1 y1 x2 y2' (commas, brackets tolerated) -> four finite numbers, or None when it is not exactly four."""
    tokens = [t for t in _BBOX_SEP.split(str(value or "")) if t]
    if len(tokens) != 4 or not all(_NUMBER.fullmatch(t) for t in tokens):
        return None  # "x1 y1 x2 y2" placeholders, polygons, words
    nums = [float(t) for t in tokens]
    if not all(math.isfinite(n) for n in nums):
        return None
    return nums[0], nums[1], nums[2], nums[3]


def map_box(raw: tuple[float, float, float, float], *, family: FamilySpec | str, input_size: tuple[int, int],
            image_size: tuple[int, int]) -> Box:
    """A box in the family's convention -> original image pixels, corners ordered, clamped to the image."""
    sx, sy = coordinate_scales(family, input_size, image_size)  # the same per-family map as grounding
    w, h = image_size
    x1, y1, x2, y2 = raw
    xs = sorted((min(max(x1 * sx, 0.0), float(w)), min(max(x2 * sx, 0.0), float(w))))
    ys = sorted((min(max(y1 * sy, 0.0), float(h)), min(max(y2 * sy, 0.0), float(h))))
    return round(xs[0], 2), round(ys[0], 2), round(xs[1], 2), round(ys[1], 2)


def extract_layout(html: str, *, family: FamilySpec | str, input_size: tuple[int, int],
                   image_size: tuple[int, int], page: int | None = None) -> list[LayoutBlock]:
    """Every element of a QwenVL HTML answer that is a layout region, in document order.

    Reported: each element with its own `data-bbox` at any depth (an `<img data-bbox>` inside a
    `div.image` too: `depth` tells them apart), plus outermost layout elements without one (headings,
    paragraphs, lists, tables, figures, elements with a QwenVL class) with `box=None`. A `data-bbox` that is
    not four numbers gives `box=None`. Never raises on arbitrary text (plain text gives []).
    """
    html = answer_part(html)  # a draft layout inside a thinking model's reasoning is not the page
    if isinstance(family, str):
        family = family_for(family)
    if min(*input_size, *image_size) <= 0:
        raise ValueError(f"input_size {input_size} and image_size {image_size} must be positive (width, height)")
    blocks: list[LayoutBlock] = []

    def visit(el: Tag, depth: int, level: int) -> None:
        if level > MAX_WALK_DEPTH:
            return
        for child in el.children:
            if not isinstance(child, Tag) or child.name in SKIP_TAGS:
                continue
            has_box = child.has_attr("data-bbox")
            kind = block_kind(child)
            is_layout = child.name in _LAYOUT_TAGS or kind != child.name
            if has_box or (depth == 0 and is_layout):
                raw = parse_bbox(child.get("data-bbox")) if has_box else None  # type: ignore[arg-type]
                box = map_box(raw, family=family, input_size=input_size, image_size=image_size) if raw else None
                blocks.append(LayoutBlock(kind, box, element_text(child), child.name, page, depth))
                visit(child, depth + 1, level + 1)
            else:
                visit(child, depth, level + 1)

    visit(parse_tree(html), 0, 0)
    return blocks

