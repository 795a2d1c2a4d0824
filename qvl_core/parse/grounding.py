"""Model answers in, detections in original-image pixels out; plus the grounding prompts per family.

Pure functions only (no Gradio, no torch). The families write coordinates differently (mapped back by
`coords.coordinate_scales`), and Qwen2-VL writes boxes with special tokens instead of JSON. `parse_grounding`
takes any answer text, finds every shape the models are seen to emit, maps it back to the original image and
never raises on odd text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from string import Template
from typing import Any

import json_repair

from qvl_core.errors import UserError
from qvl_core.families import FamilySpec
from qvl_core.parse.coords import Box, Point, coordinate_scales, spec_of
from qvl_core.parse.jsonscan import MAX_JSON_DEPTH, Segment, json_segments
from qvl_core.parse.thinking import answer_part
from qvl_core.settings import MAX_PROMPT_CHARS, check_text

# Named limits.
MAX_NUMBER_CHARS = 40  # longer "numbers" are noise, not coordinates
MAX_FALLBACK_LABEL_CHARS = 120  # labels guessed from prose around plain-text boxes are cut here
MAX_PLAIN_LINE_CHARS = 300  # a longer line is prose, not "x1,y1,x2,y2 label"
MAX_STOPPED_BOX_CHARS = 200  # a Qwen2-VL box left open by a stop string is looked for this far from the end


@dataclass(frozen=True)
class Detection:
    """One thing the model located, in ORIGINAL image pixels (x right, y down)."""

    label: str | None
    box: Box | None  # x1, y1, x2, y2 with x1 < x2 and y1 < y2
    point: Point | None  # x, y
    text: str | None  # text spotting (`text_content`)
    extra: dict = field(default_factory=dict)  # any other keys the model emitted (colour, type...)

    def to_json(self) -> dict:
        """A JSON-ready dict in the models' own key names, coordinates rounded to 0.1 px."""
        out: dict[str, Any] = {
            "label": self.label,
            "bbox_2d": [_round_px(v) for v in self.box] if self.box is not None else None,
            "point_2d": [_round_px(v) for v in self.point] if self.point is not None else None,
            "text": self.text,
        }
        out.update({k: v for k, v in self.extra.items() if k not in out})
        return out


def _round_px(v: float) -> float | int:
    r = round(v, 1)
    return int(r) if r == int(r) else r


# --------------------------------------------------------------------------------------------------
# Raw findings in model space, each with where it sits in the text (to keep the answer's order).


@dataclass(frozen=True)
class _Raw:
    pos: tuple[int, int]
    label: str | None = None
    box: Box | None = None
    point: Point | None = None
    text: str | None = None
    extra: dict = field(default_factory=dict)


_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_NUM_RE = re.compile(_NUM)


def _number(v: Any) -> float | None:
    """A coordinate from JSON: a number or a numeric string; None for anything else (bools included)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        try:
            f = float(v)
        except OverflowError:  # a 400-digit integer
            return None
    elif isinstance(v, str) and len(v) <= MAX_NUMBER_CHARS:
        try:
            f = float(v.strip().rstrip("px").strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _numbers(v: Any) -> list[float] | None:
    """A flat list of coordinates from a list of numbers, a list of pairs, or a string of numbers."""
    if isinstance(v, str):
        found = _NUM_RE.findall(v[: MAX_NUMBER_CHARS * 8])
        nums = [_number(s) for s in found]
    elif isinstance(v, list | tuple):
        if len(v) == 1 and isinstance(v[0], list | tuple):  # [[x1, y1, x2, y2]]
            return _numbers(v[0])
        if v and all(isinstance(p, list | tuple) for p in v):  # [[x1, y1], [x2, y2], ...]
            if not all(len(p) == 2 for p in v):
                return None
            nums = [_number(c) for p in v for c in p]
        else:
            nums = []
            for c in v:
                # ["120, 45", "130, 50"]: models write a point as one string "x, y"; each such string gives all
                # its numbers (read one by one, only the first points survived).
                found = _number(c)
                nums += [found] if found is not None or not isinstance(c, str) else _string_numbers(c)
    elif isinstance(v, dict):  # {"x1": .., "y1": .., "x2": .., "y2": ..} or {"x": .., "y": ..}
        keys = {str(k).lower(): val for k, val in v.items()}
        order = ("x1", "y1", "x2", "y2") if "x1" in keys else ("x", "y")
        if not all(k in keys for k in order):
            return None
        nums = [_number(keys[k]) for k in order]
    else:
        return None
    if any(n is None for n in nums):
        return None
    return nums  # type: ignore[return-value]


_NUMS_STRING_RE = re.compile(rf"\s*[\[(]?\s*{_NUM}(?:\s*[,\s]\s*{_NUM})*\s*[\])]?\s*")


def _string_numbers(s: str) -> list[float | None]:
    """Every number of a string that holds only numbers ("120, 45", "(120 45)"); [None] for anything else."""
    if len(s) > MAX_NUMBER_CHARS * 8 or not _NUMS_STRING_RE.fullmatch(s):
        return [None]
    return [_number(n) for n in _NUM_RE.findall(s)]


def _as_box(v: Any) -> Box | None:
    """Exactly 4 numbers, or an even count of at least 4 (corner pairs or a polygon): its bounding box."""
    nums = _numbers(v)
    if nums is None or len(nums) < 4 or len(nums) % 2:
        return None  # fewer than 4 numbers is a half-written box: never guess the rest
    if len(nums) == 4:
        return nums[0], nums[1], nums[2], nums[3]
    xs, ys = nums[0::2], nums[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _as_points(v: Any) -> list[Point] | None:
    """One point ([x, y], "x, y"), or several under one key ([[x, y], ...], ["x, y", ...]); None if unreadable."""
    nums = _numbers(v)
    if not nums or len(nums) % 2:
        return None
    return [(nums[i], nums[i + 1]) for i in range(0, len(nums), 2)]


def _as_text(v: Any) -> str | None:
    if v is None:
        return None
    s = (v if isinstance(v, str) else str(v)).strip()
    return s or None


# --------------------------------------------------------------------------------------------------
# JSON: find top-level [...] / {...} segments in the text, hand each to json_repair.

_BOX_KEYS = ("bbox_2d", "bbox", "box", "box_2d", "bbox2d")
_POINT_KEYS = ("point_2d", "point", "point2d", "points", "points_2d")
# First present wins; "label" is what the models use, the others appear in real answers to looser prompts
# (bilingual "name_en"/"name_zh", a "description" in place of a name).
_LABEL_KEYS = ("label", "name", "name_en", "category", "class", "name_zh", "description")
_TEXT_KEYS = ("text_content", "text")


def _loads(source: str) -> Any:
    try:
        return json_repair.loads(source)
    except (ValueError, RecursionError):
        # json_repair is built not to raise, but Python's own limits can (int digit limit, deep nesting):
        # such a segment is not a grounding answer.
        return None


def _segment_values(text: str, seg: Segment) -> Iterator[tuple[int, Any]]:
    """(position, parsed JSON) for each list item of a segment, or for the whole segment if it has none.

    Items are parsed one by one, so a badly broken item cannot take its neighbours with it. A segment cut
    off by the token limit gives only its complete items: left whole, json_repair would "complete" the
    half-written last item into a wrong box ([5, 6 -> [5, 6]; [5, 6, 7, 8 where 8 was going to be 812).
    """
    if seg.too_deep:
        return
    if seg.items:
        for a, b in seg.items:
            yield a, _loads(text[a:b])
    elif seg.closed:
        yield seg.start, _loads(text[seg.start:seg.end])


def _items(value: Any, depth: int = 0) -> Iterator[dict]:
    """Every dict carrying a box or point key, through lists and wrapping dicts ({"objects": [...]})."""
    if depth > MAX_JSON_DEPTH:
        return
    if isinstance(value, list):
        for v in value:
            yield from _items(v, depth + 1)
    elif isinstance(value, dict):
        keys = {str(k).strip().lower() for k in value}
        if keys & {*_BOX_KEYS, *_POINT_KEYS}:
            yield value
        else:
            for v in value.values():
                if isinstance(v, list | dict):
                    yield from _items(v, depth + 1)


def _raw_from_item(item: dict, pos: tuple[int, int]) -> list[_Raw]:
    norm = {str(k).strip().lower(): k for k in item}

    def take(keys: tuple[str, ...]) -> tuple[str | None, Any]:
        for key in keys:
            if key in norm and item[norm[key]] is not None:
                return norm[key], item[norm[key]]
        return None, None

    box_key, box_v = take(_BOX_KEYS)
    point_key, point_v = take(_POINT_KEYS)
    label_key, label_v = take(_LABEL_KEYS)
    text_key, text_v = take(_TEXT_KEYS)
    box = _as_box(box_v) if box_key is not None else None
    points = _as_points(point_v) if point_key is not None else None
    # A coordinate key with a value we cannot read is a broken item: drop it whole rather than keep half.
    if (box_key is not None and box is None) or (point_key is not None and points is None):
        return []
    if box is None and points is None:
        return []
    used = {box_key, point_key, label_key, text_key}
    extra = {str(k): v for k, v in item.items() if k not in used}
    if points is None or (box is not None and len(points) > 1):
        return [_Raw(pos, _as_text(label_v), box, points[0] if points else None, _as_text(text_v), extra)]
    # Several points under one key: one finding each, same label (the sort that follows keeps their order).
    return [_Raw(pos, _as_text(label_v), box, point, _as_text(text_v), dict(extra)) for point in points]


def _raw_json(text: str) -> tuple[list[_Raw], list[tuple[int, int]]]:
    raws: list[_Raw] = []
    spans: list[tuple[int, int]] = []  # segments that hold objects (not prose like "[1]")
    for seg in json_segments(text):
        if "{" in text[seg.start:seg.end]:
            spans.append((seg.start, seg.end))
        for pos, value in _segment_values(text, seg):
            for idx, item in enumerate(_items(value)):
                raws += _raw_from_item(item, (pos, idx))
    return raws, spans


# --------------------------------------------------------------------------------------------------
# XML points (Qwen2.5-VL): <points x1="284" y1="305" x2=".." y2=".." alt="phrase">phrase</points>

_XML_POINT_RE = re.compile(r"<(points?)\b([^<>]*)>(?:([^<]*)</\1\s*>)?", re.IGNORECASE)
_ATTR_RE = re.compile(r"([A-Za-z_][\w-]*)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s\"'>]+))")
_COORD_ATTR_RE = re.compile(r"([xy])(\d*)", re.IGNORECASE)


def _raw_xml_points(text: str) -> tuple[list[_Raw], list[tuple[int, int]]]:
    raws: list[_Raw] = []
    spans: list[tuple[int, int]] = []
    for m in _XML_POINT_RE.finditer(text):
        attrs: dict[str, str] = {}
        for a in _ATTR_RE.finditer(m.group(2)):
            val = a.group(2) if a.group(2) is not None else a.group(3) if a.group(3) is not None else a.group(4)
            attrs[a.group(1).lower()] = val.rstrip("/")
        xs: dict[int, float | None] = {}
        ys: dict[int, float | None] = {}
        for key, val in attrs.items():
            cm = _COORD_ATTR_RE.fullmatch(key)
            if cm:
                index = int(cm.group(2)) if cm.group(2) else 0
                (xs if cm.group(1) == "x" else ys)[index] = _number(val)
        label = _as_text(attrs.get("alt")) or _as_text(m.group(3))
        spans.append(m.span())
        for n, index in enumerate(sorted(xs)):
            x, y = xs[index], ys.get(index)
            if x is not None and y is not None:
                raws.append(_Raw((m.start(), n), label, point=(x, y)))
    return raws, spans


# --------------------------------------------------------------------------------------------------
# Qwen2-VL special tokens: <|object_ref_start|>cat<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>

_SPECIAL_RE = re.compile(
    r"<\|object_ref_start\|>(?P<ref>.*?)<\|object_ref_end\|>"
    r"|<\|box_start\|>(?P<box>.*?)<\|box_end\|>"
    r"|<\|quad_start\|>(?P<quad>.*?)<\|quad_end\|>",
    re.DOTALL,
)
# What may stand between a label and its second, third... box and still leave the label in force.
_LABEL_CARRIES_RE = re.compile(r"[\s,;]*(?:and\s*)?")


# A box whose `<|box_end|>` was eaten by a stop string: both corners written, then only the end of the answer.
_STOPPED_BOX_RE = re.compile(
    rf"<\|box_start\|>\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*,?\s*\(\s*{_NUM}\s*,\s*{_NUM}\s*\)"
    r"\s*(?:<\|im_end\|>|<\|endoftext\|>)?\s*\Z"
)


def _raw_special_tokens(text: str) -> tuple[list[_Raw], list[tuple[int, int]]]:
    raws: list[_Raw] = []
    spans: list[tuple[int, int]] = []
    label: str | None = None
    last_end = 0
    length = len(text)
    stopped = _STOPPED_BOX_RE.search(text, max(0, length - MAX_STOPPED_BOX_CHARS))
    if stopped is not None:  # complete it; a corner cut short by the token limit never matches (no closing ")")
        text = text[:stopped.end()] + "<|box_end|>"
    for m in _SPECIAL_RE.finditer(text):
        spans.append(m.span())
        if m.group("ref") is not None:
            label = _as_text(m.group("ref"))
        else:
            if not _LABEL_CARRIES_RE.fullmatch(text, last_end, m.start()):
                label = None  # a box with no ref label of its own
            is_box = m.group("box") is not None
            nums = [_number(s) for s in _NUM_RE.findall(m.group("box") if is_box else m.group("quad"))]
            want = 4 if is_box else 8
            if len(nums) == want and all(n is not None for n in nums):
                box = _as_box(nums)
                if box is not None:
                    raws.append(_Raw((m.start(), 0), label, box=box))
        last_end = m.end()
    # A box cut off by the token limit (<|box_start|> and no <|box_end|>) is not for the fallbacks either.
    for marker in ("<|box_start|>", "<|quad_start|>"):
        cut = text.rfind(marker)
        if cut >= 0 and text.find(marker.replace("start", "end"), cut) < 0:
            spans.append((cut, len(text)))
    return raws, [(a, min(b, length)) for a, b in spans]


# --------------------------------------------------------------------------------------------------
# Fallbacks, used only when nothing structured was found:
# - Qwen2-VL decoded with skip_special_tokens=True: "the cat(120,40),(380,300)";
# - plain text lines "x1,y1,x2,y2 label", "[x1 y1 x2 y2] label", "label: x1, y1, x2, y2".

_PAIRS_RE = re.compile(
    rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*(?:,\s*)?\(\s*({_NUM})\s*,\s*({_NUM})\s*\)"
)
_SEP = r"(?:\s*,\s*|\s+)"
_FOUR = rf"[\[(]?\s*({_NUM}){_SEP}({_NUM}){_SEP}({_NUM}){_SEP}({_NUM})\s*[\])]?"
_BULLET = r"(?:[-*•]\s+|\d+[.)]\s+)?"
# Matched against stripped lines of at most MAX_PLAIN_LINE_CHARS (keeps the regexes' backtracking small).
_LINE_NUMS_FIRST_RE = re.compile(rf"{_BULLET}{_FOUR}(?:\s*[:|–-])?(?:\s+(?P<label>[^\d\s+.-].*?))?[.;]?")
_LINE_LABEL_FIRST_RE = re.compile(rf"{_BULLET}(?P<label>[^:=\"{{}}\[\]]+?)\s*[:=]\s*{_FOUR}[.;,]?")
_LABEL_STRIP = " \t\"'`*_:;,.|–-()[]"


def _clean_label(s: str | None) -> str | None:
    if s is None:
        return None
    s = s.strip(_LABEL_STRIP)
    s = re.sub(r"^(?:and|or)\s+", "", s, flags=re.IGNORECASE).strip(_LABEL_STRIP)
    if len(s) > MAX_FALLBACK_LABEL_CHARS:
        s = s[-MAX_FALLBACK_LABEL_CHARS:].strip(_LABEL_STRIP)
    return s or None


def _raw_plain(text: str) -> tuple[list[_Raw], list[tuple[int, int]]]:
    raws: list[_Raw] = []
    spans: list[tuple[int, int]] = []
    label: str | None = None
    last_end = 0
    for m in _PAIRS_RE.finditer(text):
        gap = text[last_end:m.start()]
        if not _LABEL_CARRIES_RE.fullmatch(gap):
            # The label is the prose just before the box, within its line and sentence.
            label = _clean_label(re.split(r"[\n.;:!?]", gap)[-1])
        nums = [_number(g) for g in m.groups()]
        if all(n is not None for n in nums):
            raws.append(_Raw((m.start(), 0), label, box=(nums[0], nums[1], nums[2], nums[3])))
        spans.append(m.span())
        last_end = m.end()
    if raws:
        return raws, spans
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        m = None
        if 0 < len(stripped) <= MAX_PLAIN_LINE_CHARS:
            m = _LINE_NUMS_FIRST_RE.fullmatch(stripped) or _LINE_LABEL_FIRST_RE.fullmatch(stripped)
        if m:
            nums = [_number(g) for g in m.groups()[-4:]] if m.re is _LINE_LABEL_FIRST_RE else [
                _number(g) for g in m.groups()[:4]]
            if all(n is not None for n in nums):
                raws.append(_Raw((offset, 0), _clean_label(m.group("label")),
                                 box=(nums[0], nums[1], nums[2], nums[3])))
                spans.append((offset, offset + len(line)))
        offset += len(line)
    return raws, spans


def _blank(text: str, spans: list[tuple[int, int]]) -> str:
    """The text with the given spans replaced by spaces (positions kept)."""
    chars = list(text)
    for a, b in spans:
        chars[a:b] = " " * (b - a)
    return "".join(chars)


def _find_raw(text: str) -> tuple[list[_Raw], list[tuple[int, int]]]:
    """All findings in model space, in answer order, and the spans of structured output."""
    raws: list[_Raw] = []
    spans: list[tuple[int, int]] = []
    for finder in (_raw_json, _raw_xml_points, _raw_special_tokens):
        found, found_spans = finder(text)
        raws += found
        spans += found_spans
    if not raws:
        # Plain-text shapes are guesses; only look for them where nothing structured was written, and not
        # inside JSON we dropped (a truncated pretty-printed item must not come back as a "plain" line).
        raws, plain_spans = _raw_plain(_blank(text, spans))
        spans += plain_spans
    raws.sort(key=lambda r: r.pos)
    return raws, spans


# --------------------------------------------------------------------------------------------------
# Public parser.


def parse_grounding(text: str, *, family: FamilySpec | str, input_size: tuple[int, int],
                    image_size: tuple[int, int]) -> list[Detection]:
    """Every box/point in a model answer, mapped to ORIGINAL image pixels, clamped, in answer order.

    `input_size` is the (width, height) the model saw after resizing, `image_size` the original's.
    Reversed corners are swapped; boxes with no area after clamping, and non-finite numbers, are dropped;
    exact repeats (models looping) are dropped. Text without coordinates gives [].
    """
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}")
    text = answer_part(text)  # a draft box inside a thinking model's reasoning is never drawn
    sx, sy = coordinate_scales(family, input_size, image_size)
    w, h = image_size
    out: list[Detection] = []
    seen: set[tuple] = set()
    raws, _ = _find_raw(text)
    for raw in raws:
        box = point = None
        if raw.box is not None:
            x1, y1, x2, y2 = (raw.box[0] * sx, raw.box[1] * sy, raw.box[2] * sx, raw.box[3] * sy)
            x1, x2 = sorted((_clamp(x1, w), _clamp(x2, w)))
            y1, y2 = sorted((_clamp(y1, h), _clamp(y2, h)))
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 - x1 <= 0 or y2 - y1 <= 0:
                continue
            box = (x1, y1, x2, y2)
        if raw.point is not None:
            px, py = raw.point[0] * sx, raw.point[1] * sy
            if not (math.isfinite(px) and math.isfinite(py)):
                continue
            point = (_clamp(px, w), _clamp(py, h))
        key = (raw.label, box, point, raw.text)
        if key in seen:
            continue
        seen.add(key)
        out.append(Detection(raw.label, box, point, raw.text, dict(raw.extra)))
    return out


def _clamp(v: float, hi: float) -> float:
    return min(max(v, 0.0), float(hi))


# --------------------------------------------------------------------------------------------------
# Counting answers: "... and then answer how many items are there".

_WORD_NUMBERS = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split())
}
_COUNT_TOKEN = r"(\d+|" + "|".join(_WORD_NUMBERS) + r")"
_COUNT_PATTERNS = (
    re.compile(rf"\b{_COUNT_TOKEN}\b[^.\n\d]{{0,40}}\bin total\b", re.IGNORECASE),
    re.compile(rf"\btotal(?:\s+(?:of|count|number(?:\s+of\s+\w+)?))?(?:\s+(?:is|are|was|were))?\s*[:=]?\s*"
               rf"{_COUNT_TOKEN}\b", re.IGNORECASE),
    re.compile(rf"\b(?:are|is|were|was|count|counted|see|found)\s+(?:about\s+|approximately\s+|exactly\s+)?"
               rf"{_COUNT_TOKEN}\b", re.IGNORECASE),
    re.compile(rf"\b{_COUNT_TOKEN}\b", re.IGNORECASE),
)


def count_from_answer(text: str) -> int | None:
    """The number the model stated after its boxes ("There are 5 cakes."), or None if it stated none."""
    if not isinstance(text, str):
        return None
    text = answer_part(text)
    _, spans = _find_raw(text)
    # Fences and the structured output itself are not the answer; what follows the last of them is.
    fence_ends = [m.end() for m in re.finditer(r"```", text)]
    cut = max([b for _, b in spans] + fence_ends + [0])
    tail = text[cut:]
    for pattern in _COUNT_PATTERNS:
        m = pattern.search(tail)
        if m:
            token = m.group(1).lower()
            return int(token) if token.isdigit() else _WORD_NUMBERS[token]
    return None


# --------------------------------------------------------------------------------------------------
# Prompts (the Qwen cookbooks' prompts), one table: preset -> prompt style -> template.

PRESETS = ("Detect", "Locate", "Point", "Count", "Text spotting", "Custom")
# Presets built around the user's text; Count and Text spotting also work without it.
PRESETS_NEEDING_TEXT = frozenset({"Detect", "Locate", "Point", "Custom"})

# How a family wants to be asked, from its traits in the family table:
# "qwen2": special-token boxes, 0..1000; "qwen2_5": JSON, absolute pixels; "qwen3": JSON, 0..1000.
_PROMPT_STYLE = {
    ("special_tokens", "norm1000"): "qwen2",
    ("special_tokens", "absolute"): "qwen2",
    ("json", "absolute"): "qwen2_5",
    ("json", "norm1000"): "qwen3",
}

_JSON_BOXES = '{"bbox_2d": [x1, y1, x2, y2], "label": "category"}'
_JSON_POINTS = '{"point_2d": [x, y], "label": "object"}'
_JSON_TEXT = '{"bbox_2d": [x1, y1, x2, y2], "text_content": "text"}'

# Qwen2-VL answers grounding requests in plain language with its own special tokens
# (<|object_ref_start|>..<|box_start|>(x1,y1),(x2,y2)<|box_end|>), so its prompts ask in plain words and
# do not ask for JSON. It was not trained to point: its "Point" prompt asks for a box (the UI draws it).
_TEMPLATES: dict[str, dict[str, str]] = {
    "Detect": {
        "qwen2": "Detect every instance of the following categories in the image and output the bounding box "
                 "of each one: $text.",
        "qwen2_5": "Locate every instance of the following categories in the image: $text. Output the bbox "
                   f"coordinates of each one in JSON format, as a list of {_JSON_BOXES}.",
        "qwen3": "Locate every instance of the following categories in the image: $text. Output the bbox "
                 f"coordinates of each one in JSON format, as a list of {_JSON_BOXES}.",
    },
    "Locate": {
        "qwen2": "Output the bounding box of $text.",
        "qwen2_5": "Locate $text, output its bbox coordinates using JSON format.",
        "qwen3": "Locate $text, output its bbox coordinates using JSON format.",
    },
    "Point": {
        "qwen2": "Output the bounding box of $text.",
        "qwen2_5": "point to $text, output its coordinates in XML format <points x y>object</points>",
        "qwen3": f"Point to $text in the image, output its point coordinates in JSON format, as a list of "
                 f"{_JSON_POINTS}.",
    },
    "Count": {
        "qwen2": "Output the bounding box of every $text in the image, and then answer how many there are.",
        "qwen2_5": "Please first output bbox coordinates and names of every $text in this image in JSON format, "
                   "and then answer how many there are in the image.",
        "qwen3": "Please first output bbox coordinates and names of every $text in this image in JSON format, "
                 "and then answer how many there are in the image.",
    },
    "Text spotting": {
        "qwen2": "Read all the text in the image line by line, and output the bounding box of each line with "
                 "its text.",
        "qwen2_5": "Spotting all the text in the image with line-level, and output in JSON format.",
        "qwen3": f"Spotting all the text in the image with line-level, and output in JSON format, as a list of "
                 f"{_JSON_TEXT}.",
    },
}
_COUNT_EVERYTHING = "item"  # what Count counts when the user names nothing (the cookbook's own prompt)


def _categories(text: str) -> str:
    """'cat,  dog;;cat' -> 'cat, dog' (order kept, repeats dropped)."""
    parts = [p.strip() for p in re.split(r"[,;\n]", text)]
    return ", ".join(dict.fromkeys(p for p in parts if p))


def build_prompt(preset: str, text: str, family: FamilySpec | str) -> str:
    """The user message for a grounding preset, worded the way this family was trained to answer.

    Raises UserError naming the preset when it needs text and got none; ValueError for an unknown preset.
    """
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    spec = spec_of(family)
    text = check_text("What to find", text, MAX_PROMPT_CHARS) if isinstance(text, str) else ""
    if preset == "Detect":
        text = _categories(text)
    if preset in PRESETS_NEEDING_TEXT and not text.strip():
        what = "the categories to detect" if preset == "Detect" else "what to look for"
        raise UserError(f"The {preset!r} preset needs text: type {what}.")
    if preset == "Custom":
        return text
    style = _PROMPT_STYLE.get((spec.box_syntax, spec.coords), "qwen3")
    template = Template(_TEMPLATES[preset][style])
    if preset == "Count":
        return template.substitute(text=text.strip() or _COUNT_EVERYTHING)
    if preset == "Text spotting":  # reads every line: text left in the box from another preset is not sent
        return template.substitute()
    return template.substitute(text=text.strip())
