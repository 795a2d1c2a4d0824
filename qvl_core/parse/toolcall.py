"""Pure: a model's `<tool_call>` answer -> a typed agent action or zoom box in original pixels, or a typed problem.

The format (Qwen-Agent's function-call prompt, which the Qwen cookbooks use): the system prompt lists each tool as
JSON inside `<tools></tools>`, and the model answers `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`,
possibly after a short thought ("Thought: ... Action: ..."). Models also fence the JSON, drop the closing tag, get
cut off by the token limit, or write several calls; a thinking model writes its reasoning first. All of that is read
here; only the answer part is parsed (`thinking.answer_part`), so a draft call in the reasoning never acts.

Coordinates: every tool states a screen resolution in its description and the model writes points in it. For
Qwen2.5-VL the stated resolution is the resized screenshot it saw (its absolute-pixel convention); for Qwen3-VL
and Qwen3.5 it is a fixed 0-1000 (computer) or 0-999 (phone) grid over the whole image, whatever its size. Points
are brought into the family's own units and mapped with `coords.to_original`, the one coordinate map.

Nothing here raises on model text: an answer with no call, broken JSON, an unknown action, a missing argument or a
point off the screen comes back as an `ActionProblem` whose message says what was wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import json_repair

from qvl_core.families import FamilySpec
from qvl_core.parse.coords import NORM_RANGE, Box, Point, spec_of, to_original
from qvl_core.parse.jsonscan import json_segments, scan_segment
from qvl_core.parse.thinking import answer_part

# Named limits.
TOOL_OPEN, TOOL_CLOSE = "<tool_call>", "</tool_call>"
MAX_TYPED_CHARS = 10_000  # text a `type`/`answer` action may carry; longer is a runaway answer, not input
MAX_KEYS = 16  # keys of one `key` chord
MIN_ZOOM_SIDE = 32  # a smaller zoom box grows to this many original pixels around its centre (Qwen-Agent's rule)

ScreenKind = Literal["computer", "phone"]
ProblemKind = Literal["no_call", "bad_call", "unknown_tool", "unknown_action", "missing_argument",
                      "missing_coordinate", "out_of_screen", "zero_area", "zoom_limit"]

COMPUTER_TOOL, PHONE_TOOL, ZOOM_TOOL = "computer_use", "mobile_use", "image_zoom_in_tool"
TOOL_FOR_SCREEN: dict[str, str] = {"computer": COMPUTER_TOOL, "phone": PHONE_TOOL}

# Per tool: each action -> the arguments it needs. "coordinate"/"coordinate2" are points on the stated screen.
ACTION_ARGS: dict[str, dict[str, tuple[str, ...]]] = {
    COMPUTER_TOOL: {
        "key": ("keys",), "type": ("text",), "mouse_move": ("coordinate",), "left_click": ("coordinate",),
        # The cookbook's drag has one point: where it ends; it starts where the pointer is.
        "left_click_drag": ("coordinate",), "right_click": ("coordinate",), "middle_click": ("coordinate",),
        "double_click": ("coordinate",), "triple_click": ("coordinate",), "scroll": ("pixels",),
        "hscroll": ("pixels",), "wait": (), "terminate": (), "answer": ("text",),
    },
    PHONE_TOOL: {
        "key": ("text",), "click": ("coordinate",), "long_press": ("coordinate",),
        "swipe": ("coordinate", "coordinate2"), "type": ("text",), "system_button": ("button",), "open": ("text",),
        "wait": (), "terminate": (), "answer": ("text",),
    },
}
FINAL_ACTIONS = ("terminate", "answer")  # the task ends with these


@dataclass(frozen=True)
class ActionProblem:
    """Why an answer gives no action to take; `message` is shown to the person as is."""

    kind: ProblemKind
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class ToolCall:
    """One call as the model wrote it; `truncated`: the answer ended inside it (its last value was dropped)."""

    name: str | None  # None: the model wrote bare arguments without naming the tool
    arguments: dict
    truncated: bool = False

    def to_json(self, default_name: str = "") -> dict:
        return {"name": self.name or default_name, "arguments": self.arguments}


@dataclass(frozen=True)
class AgentAction:
    """One computer or phone action: points in ORIGINAL screenshot pixels, and as the model wrote them."""

    tool: str
    action: str
    arguments: dict  # as written: what goes back to the model in the history
    coordinate: Point | None = None
    coordinate2: Point | None = None  # a swipe's end point
    model_coordinate: Point | None = None
    model_coordinate2: Point | None = None
    text: str | None = None
    keys: tuple[str, ...] = ()
    button: str | None = None
    pixels: float | None = None  # scroll amount: positive scrolls up (the cookbook's convention)
    time: float | None = None
    status: str | None = None

    @property
    def final(self) -> bool:
        return self.action in FINAL_ACTIONS

    def call(self) -> dict:
        """The call as the model wrote it (name and arguments)."""
        return {"name": self.tool, "arguments": self.arguments}

    def to_json(self) -> dict:
        return {"action": self.action, "tool": self.tool,
                "coordinate": _pt(self.coordinate), "coordinate2": _pt(self.coordinate2),
                "model_coordinate": _pt(self.model_coordinate), "model_coordinate2": _pt(self.model_coordinate2),
                "text": self.text, "keys": list(self.keys), "button": self.button, "pixels": self.pixels,
                "time": self.time, "status": self.status, "arguments": self.arguments}


@dataclass(frozen=True)
class ActionParse:
    """What one answer asks for: the action (None with a problem), the model's thought, every call found."""

    action: AgentAction | None
    problem: ActionProblem | None
    thought: str
    calls: tuple[ToolCall, ...] = ()
    notes: tuple[str, ...] = ()  # things worth saying that are not problems (extra calls ignored, a cut-off answer)


@dataclass(frozen=True)
class ImageFrame:
    """Where an image the model saw lies in the original: offset and size in original pixels, and its input size.

    The screenshot itself is frame 0 (offset 0, 0); each zoom crop adds one, so a box on a crop maps back too.
    """

    offset: Point
    size: tuple[float, float]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class ZoomCall:
    """A zoom request: the region in ORIGINAL image pixels (integer, clamped, grown to MIN_ZOOM_SIDE) and as written."""

    box: tuple[int, int, int, int]
    model_box: Box
    image_index: int
    label: str | None

    def to_json(self) -> dict:
        return {"box": list(self.box), "model_box": [_num(v) for v in self.model_box],
                "image_index": self.image_index, "label": self.label}


@dataclass(frozen=True)
class ZoomParse:
    """One answer of the zoom loop: a zoom to do, or none (the answer is final), or a problem."""

    zoom: ZoomCall | None
    problem: ActionProblem | None
    thought: str
    calls: tuple[ToolCall, ...] = ()


def _num(v: float) -> float | int:
    r = round(v, 1)
    return int(r) if r == int(r) else r


def _pt(p: Point | None) -> list | None:
    return None if p is None else [_num(p[0]), _num(p[1])]


# ---- finding calls ------------------------------------------------------------------------------------------

def _loads(source: str) -> Any:
    try:
        return json_repair.loads(source)
    except (ValueError, RecursionError):  # Python's own limits (huge ints, deep nesting): not a call
        return None


def _cut_back(source: str) -> str:
    """A JSON text the answer ended inside, cut after its last complete value so no number is half-written.

    `[100, 2` must not become [100, 2] (the model was writing 250): everything after the last `]`, `}` or `"` goes.
    """
    end = max(source.rfind("]"), source.rfind("}"), source.rfind('"'))
    return source[:end + 1] if end >= 0 else ""


def _calls_from(value: Any, truncated: bool) -> list[ToolCall]:
    items = value if isinstance(value, list) else [value]
    out: list[ToolCall] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        args = item.get("arguments", item.get("parameters"))
        if isinstance(args, str):  # some servers and models write the arguments as a JSON string
            args = _loads(args)
        if isinstance(args, dict) and isinstance(item.get("name"), str):
            out.append(ToolCall(item["name"], args, truncated))
        elif "action" in item or "bbox_2d" in item:  # bare arguments
            out.append(ToolCall(None, item, truncated))
    return out


def find_tool_calls(text: str) -> tuple[list[ToolCall], str, list[str]]:
    """Every call in an answer, the text before the first one (the model's thought), and what could not be read.

    Tagged calls come first; without any `<tool_call>` tag, a fenced or bare JSON object that looks like a call
    counts (models drop the tags). A call the answer ended inside is read up to its last complete value.
    """
    answer = answer_part(text)
    calls: list[ToolCall] = []
    errors: list[str] = []
    thought = ""
    first = answer.find(TOOL_OPEN)
    if first >= 0:
        thought = answer[:first]
        pos = first
        while pos >= 0:
            body = pos + len(TOOL_OPEN)
            nxt = answer.find(TOOL_OPEN, body)
            stop = nxt if nxt >= 0 else len(answer)
            brace = answer.find("{", body, stop)
            if brace < 0:
                errors.append(f"a {TOOL_OPEN} with no JSON object in it")
            else:
                seg = scan_segment(answer, brace)
                source = answer[seg.start:min(seg.end, stop)]
                closed = seg.closed and seg.end <= stop
                found = _calls_from(_loads(source if closed else _cut_back(source)), truncated=not closed)
                if not found:
                    errors.append(f"a {TOOL_OPEN} whose JSON is not a call: {source[:120]!r}")
                calls += found
            pos = nxt
        return calls, _clean_thought(thought), errors
    for seg in json_segments(answer):
        source = answer[seg.start:seg.end]
        found = _calls_from(_loads(source if seg.closed else _cut_back(source)), truncated=not seg.closed)
        if found and not calls:
            thought = answer[:seg.start]
        calls += found
    return calls, _clean_thought(thought) if calls else answer.strip(), errors


def _clean_thought(text: str) -> str:
    text = text.strip()
    if text.endswith("```json") or text.endswith("```"):  # the opening fence of a fenced call
        text = text[:text.rfind("```")].rstrip()
    return text


# ---- actions ------------------------------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if isinstance(v, int | float):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    return None


def _point(v: Any) -> Point | None:
    """[x, y], "(x, y)" or "x, y" -> (x, y); anything else (one number, three, text) -> None."""
    if isinstance(v, str):
        v = [p for p in v.strip().strip("[]()").replace(",", " ").split()]
    if isinstance(v, dict):
        v = [v.get("x"), v.get("y")]
    if not isinstance(v, list | tuple) or len(v) != 2:
        return None
    x, y = _number(v[0]), _number(v[1])
    return None if x is None or y is None else (x, y)


def to_family_units(point: Point, *, family: FamilySpec, stated_size: tuple[int, int],
                    input_size: tuple[int, int]) -> Point:
    """A point on the stated screen -> the family's own units (input pixels, or 0..1000), for `to_original`."""
    if family.coords == "absolute":
        return point[0] * input_size[0] / stated_size[0], point[1] * input_size[1] / stated_size[1]
    return point[0] * NORM_RANGE / stated_size[0], point[1] * NORM_RANGE / stated_size[1]


def _on_screen(p: Point, stated: tuple[int, int]) -> bool:
    return 0 <= p[0] <= stated[0] and 0 <= p[1] <= stated[1]


def _fmt(p: Point) -> str:
    return f"({_num(p[0])}, {_num(p[1])})"


def parse_action(text: str, *, screen: ScreenKind, family: FamilySpec | str, stated_size: tuple[int, int],
                 input_size: tuple[int, int], image_size: tuple[int, int]) -> ActionParse:
    """The action an agent answer asks for, its points in original pixels; a problem instead of any exception.

    `stated_size`: the resolution the tool description gave the model (its coordinates are on that screen);
    `input_size`: what the model saw; `image_size`: the original screenshot. The first call of the screen's tool
    is the action (one action per step, as the cookbooks run it); further calls are noted, not taken.
    """
    spec = spec_of(family)
    tool = TOOL_FOR_SCREEN[screen]
    calls, thought, errors = find_tool_calls(text)
    if not calls:
        detail = f" ({errors[0]})" if errors else ""
        return ActionParse(None, ActionProblem(
            "bad_call" if errors else "no_call",
            f"The answer has no {tool} call the app can read{detail}: the model should answer with "
            f'{TOOL_OPEN}{{"name": "{tool}", "arguments": {{"action": ...}}}}{TOOL_CLOSE}.'), thought)
    mine = [c for c in calls if c.name in (tool, None)]
    if not mine:
        names = ", ".join(sorted({c.name or "" for c in calls}))
        return ActionParse(None, ActionProblem("unknown_tool", f"The model called {names}, not {tool} (the "
                                               f"{screen} tool)."), thought, tuple(calls))
    call = mine[0]
    notes = []
    if len(calls) > 1:
        notes.append(f"The answer holds {len(calls)} calls; the first {tool} call is the action, the rest are "
                     "ignored (one action per screenshot).")
    if call.truncated:
        notes.append("The answer was cut off inside the call (max new tokens): its last value was dropped.")
    action, problem = _action(call, tool=tool, spec=spec, stated=stated_size, input_size=input_size,
                              image_size=image_size)
    return ActionParse(action, problem, thought, tuple(calls), tuple(notes))


def _action(call: ToolCall, *, tool: str, spec: FamilySpec, stated: tuple[int, int], input_size: tuple[int, int],
            image_size: tuple[int, int]) -> tuple[AgentAction | None, ActionProblem | None]:
    args = call.arguments
    name = args.get("action")
    known = ACTION_ARGS[tool]
    if not isinstance(name, str) or name not in known:
        return None, ActionProblem("unknown_action", f"Unknown {tool} action {name!r}; the tool has: "
                                   f"{', '.join(known)}.")
    fields: dict[str, Any] = {}
    for key in ("coordinate", "coordinate2"):
        if key not in args:
            if key in known[name]:
                return None, ActionProblem("missing_coordinate", f"`{name}` needs `{key}` (x, y), and the model "
                                           "wrote none.")
            continue
        p = _point(args[key])
        if p is None:
            if key not in known[name]:  # a stray argument this action does not use
                continue
            return None, ActionProblem("missing_coordinate", f"`{name}` needs `{key}` as (x, y); the model "
                                       f"wrote {args[key]!r}.")
        if not _on_screen(p, stated):
            return None, ActionProblem("out_of_screen", f"`{name}` at {_fmt(p)} is outside the {stated[0]}x"
                                       f"{stated[1]} screen the model was given.")
        fields["model_" + key] = p
        units = to_family_units(p, family=spec, stated_size=stated, input_size=input_size)
        fields[key] = to_original(units, family=spec, input_size=input_size, image_size=image_size)
    text = args.get("text")
    if text is not None and not isinstance(text, str):
        text = json_text(text)
    if text is not None:
        fields["text"] = text[:MAX_TYPED_CHARS]
    keys = args.get("keys")
    if isinstance(keys, str):
        keys = [keys]
    if isinstance(keys, list):
        fields["keys"] = tuple(str(k) for k in keys[:MAX_KEYS])
    for key in ("pixels", "time"):
        value = _number(args.get(key))
        if value is not None:
            fields[key] = value
    for key in ("button", "status"):
        if isinstance(args.get(key), str):
            fields[key] = args[key]
    for need in known[name]:
        if need.startswith("coordinate"):
            continue
        present = fields.get(need)
        if present is None or present in ("", ()):
            return None, ActionProblem("missing_argument", f"`{name}` needs `{need}`, and the model wrote "
                                       f"{'none' if need not in args else repr(args[need])}.")
    return AgentAction(tool=tool, action=name, arguments=args, **fields), None


def json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ---- zoom ---------------------------------------------------------------------------------------------------

def parse_zoom(text: str, *, family: FamilySpec | str, frames: Sequence[ImageFrame],
               image_size: tuple[int, int]) -> ZoomParse:
    """A zoom-loop answer: the region to crop in original pixels, none (a final answer), or a problem.

    The box is on image `img_idx` (0: the original, then each crop in order), in the family's units for that
    image: 0-1000 over it (Qwen3-VL, Qwen3.5), or pixels of its resized input (Qwen2.5-VL). Reversed corners are
    swapped, the box is clamped to the image, and a side under MIN_ZOOM_SIDE grows around the centre.
    """
    spec = spec_of(family)
    calls, thought, errors = find_tool_calls(text)
    zooms = [c for c in calls if c.name in (ZOOM_TOOL, None) and "bbox_2d" in c.arguments]
    if not zooms:
        if calls:
            return ZoomParse(None, ActionProblem("unknown_tool", f"The model called "
                                                 f"{', '.join(sorted({c.name or '?' for c in calls}))}, which this "
                                                 f"app does not have (only {ZOOM_TOOL})."), thought, tuple(calls))
        if errors:
            return ZoomParse(None, ActionProblem("bad_call", f"The answer has a {ZOOM_TOOL} call the app cannot "
                                                 f"read ({errors[0]})."), thought)
        return ZoomParse(None, None, thought)
    call = zooms[0]
    args = call.arguments
    index = _number(args.get("img_idx", 0))
    if index is None or index != int(index) or not 0 <= index < len(frames):
        return ZoomParse(None, ActionProblem("bad_call", f"{ZOOM_TOOL}: img_idx {args.get('img_idx')!r} names no "
                                             f"image (0 to {len(frames) - 1})."), thought, tuple(calls))
    raw = args.get("bbox_2d")
    nums = [_number(v) for v in raw] if isinstance(raw, list) else []
    if len(nums) != 4 or any(n is None for n in nums):
        return ZoomParse(None, ActionProblem("bad_call", f"{ZOOM_TOOL}: bbox_2d must be [x1, y1, x2, y2]; the "
                                             f"model wrote {raw!r}."), thought, tuple(calls))
    model_box: Box = (nums[0], nums[1], nums[2], nums[3])  # type: ignore[assignment]
    frame = frames[int(index)]
    (x1, y1), (x2, y2) = (_frame_point((model_box[0], model_box[1]), spec, frame),
                          _frame_point((model_box[2], model_box[3]), spec, frame))
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    w, h = image_size
    left, top = max(0.0, min(x1, w)), max(0.0, min(y1, h))
    right, bottom = max(0.0, min(x2, w)), max(0.0, min(y2, h))
    if right - left < 1 or bottom - top < 1:
        return ZoomParse(None, ActionProblem("zero_area", f"{ZOOM_TOOL}: the box {list(model_box)} has no area "
                                             "inside the image; nothing to zoom in on."), thought, tuple(calls))
    box = _grow((math.floor(left), math.floor(top), math.ceil(right), math.ceil(bottom)), image_size)
    label = args.get("label") if isinstance(args.get("label"), str) else None
    return ZoomParse(ZoomCall(box, model_box, int(index), label), None, thought, tuple(calls))


def _frame_point(p: Point, spec: FamilySpec, frame: ImageFrame) -> Point:
    x, y = to_original(p, family=spec, input_size=frame.input_size,
                       image_size=(frame.size[0], frame.size[1]))  # type: ignore[arg-type]
    return frame.offset[0] + x, frame.offset[1] + y


def _grow(box: tuple[int, int, int, int], image_size: tuple[int, int]) -> tuple[int, int, int, int]:
    """Each side under MIN_ZOOM_SIDE widened around the centre, kept inside the image."""
    out = list(box)
    for lo, hi, limit in ((0, 2, image_size[0]), (1, 3, image_size[1])):
        side = out[hi] - out[lo]
        if side < MIN_ZOOM_SIDE <= limit:
            start = min(max(0, out[lo] - (MIN_ZOOM_SIDE - side) // 2), limit - MIN_ZOOM_SIDE)
            out[lo], out[hi] = start, start + MIN_ZOOM_SIDE
    return out[0], out[1], out[2], out[3]


