"""The model as a visual agent: one computer/phone step on a screenshot, and zooming in to answer ("think with images").

How the cookbooks prompt it (Qwen2.5-VL `computer_use` and `mobile_agent`, Qwen3-VL `computer_use`, `mobile_agent`
and `think_with_images`, all through Qwen-Agent's function-call prompt):
- system: "You are a helpful assistant." then "# Tools" with each tool's JSON schema inside `<tools></tools>` and
  the instruction to answer `<tool_call>{"name": ..., "arguments": ...}</tool_call>` (`SYSTEM_TEMPLATE`);
- the tool's description states the screen resolution. Qwen2.5-VL is told the size of the RESIZED screenshot it
  sees (smart_resize of the original) and writes pixels of it; Qwen3-VL is told 1000x1000 for a computer and
  999x999 for a phone, whatever the screenshot, and writes points on that grid. Qwen3.5 has no agent cookbook of
  its own and writes grounding in 0-1000 like Qwen3-VL, so it is prompted as Qwen3-VL (`STYLES`, keyed by the
  family's coordinate convention);
- user: the screenshot and "The user query: TASK", plus for later steps "Task progress (You have done the
  following operation on the current device): Step 1: ...; Step 2: ...; ". Qwen2.5-VL's history is each earlier
  call's JSON; Qwen3-VL's is what the model said it did (its "Action:" line) - the cookbooks' two forms;
- `image_zoom_in_tool` (Qwen3-VL's built-in zoom): `{"bbox_2d": [x1, y1, x2, y2], "label": ..., "img_idx": N}`,
  the box 0-1000 over image N (0: the original, then each crop). The app crops the ORIGINAL image at full
  resolution and gives the crop back as a new image turn, up to `max_zooms`. Qwen2.5-VL is told to write the box
  in pixels of the image as it sees it (its own convention; there is no Qwen2.5-VL zoom cookbook).

Works through the `Backend` protocol (in-process model or a served one). The tool tags in the app's system prompt
and in earlier answers reach the model as text (the engine keeps every message text text), not as the tokenizer's
tool-call tokens; the models still answer with the tokens they were trained on.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from qvl_core.engine.backend import Backend
from qvl_core.engine.messages import Media, Turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.engine.types import GenerationRequest, GenerationStats
from qvl_core.errors import GenerationError, UserError
from qvl_core.families import CoordConvention, FamilySpec
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, open_image
from qvl_core.parse.toolcall import (
    COMPUTER_TOOL,
    PHONE_TOOL,
    ZOOM_TOOL,
    ActionParse,
    ActionProblem,
    AgentAction,
    ImageFrame,
    ScreenKind,
    ZoomCall,
    parse_action,
    parse_zoom,
)
from qvl_core.settings import MAX_PROMPT_CHARS, check_text
from qvl_core.tasks.grounding import planned_input_size

# Named limits and defaults.
SCREENS: tuple[ScreenKind, ...] = ("computer", "phone")
DEFAULT_AGENT_MAX_NEW_TOKENS = 1024  # a thought plus one call; a thinking model's reasoning streams apart
DEFAULT_MAX_ZOOMS = 3
MAX_ZOOMS_LIMIT = 8  # each zoom adds an image to the conversation: the prompt grows with every one
MAX_HISTORY_STEPS = 100  # earlier steps passed back to the model
MAX_HISTORY_CHARS = 2_000_000  # a history JSON (API/CLI): 100 steps of long answers and reasoning fit
DEFAULT_SYSTEM = "You are a helpful assistant."
POINTER_ACTIONS = ("mouse_move", "left_click", "right_click", "middle_click", "double_click", "triple_click",
                   "left_click_drag", "click", "long_press")

SYSTEM_TEMPLATE = """{system}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{tools}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{{"name": <function-name>, "arguments": <args-json-object>}}
</tool_call>"""
# Qwen3-VL's mobile cookbook asks for a one-line thought and action before the call (they become the history).
THOUGHT_FORMAT = """

# Response format

Response format for every step:
1) Thought: one concise sentence explaining the next move.
2) Action: a short imperative describing what to do in the UI.
3) A single <tool_call>...</tool_call> block containing only the JSON: \
{"name": <function-name>, "arguments": <args-json-object>}."""

ACTION_TEXT: dict[str, str] = {
    "key": "Performs key down presses on the arguments passed in order, then performs key releases in reverse "
           "order.",
    "type": "Type a string of text on the keyboard.",
    "mouse_move": "Move the cursor to a specified (x, y) pixel coordinate on the screen.",
    "left_click": "Click the left mouse button at a specified (x, y) pixel coordinate on the screen.",
    "left_click_drag": "Click and drag the cursor to a specified (x, y) pixel coordinate on the screen.",
    "right_click": "Click the right mouse button at a specified (x, y) pixel coordinate on the screen.",
    "middle_click": "Click the middle mouse button at a specified (x, y) pixel coordinate on the screen.",
    "double_click": "Double-click the left mouse button at a specified (x, y) pixel coordinate on the screen.",
    "triple_click": "Triple-click the left mouse button at a specified (x, y) pixel coordinate on the screen.",
    "scroll": "Performs a scroll of the mouse scroll wheel.",
    "hscroll": "Performs a horizontal scroll.",
    "wait": "Wait specified seconds for the change to happen.",
    "terminate": "Terminate the current task and report its completion status.",
    "answer": "Answer a question.",
}
PHONE_ACTION_TEXT: dict[str, str] = {
    "key": "Perform a key event on the mobile device.\n    - This supports adb's `keyevent` syntax.\n    - "
           'Examples: "volume_up", "volume_down", "power", "camera", "clear".',
    "click": "Click the point on the screen with coordinate (x, y).",
    "long_press": "Press the point on the screen with coordinate (x, y) for specified seconds.",
    "swipe": "Swipe from the starting point with coordinate (x, y) to the end point with coordinates2 (x2, y2).",
    "type": "Input the specified text into the activated input box.",
    "answer": "Output the answer.",
    "system_button": "Press the system button.",
    "open": "Open an app on the device.",
    "wait": "Wait specified seconds for the change to happen.",
    "terminate": "Terminate the current task and report its completion status.",
}


@dataclass(frozen=True)
class AgentStyle:
    """How a family is prompted as an agent, per its cookbook (see the module docstring)."""

    resolution: Mapping[str, tuple[int, int] | None]  # per screen kind; None: the resized screenshot it sees
    computer_actions: tuple[str, ...]
    phone_actions: tuple[str, ...]
    history: Literal["calls", "actions"]  # what earlier steps look like to the model
    response_format: str = ""


STYLES: dict[CoordConvention, AgentStyle] = {
    "absolute": AgentStyle(  # Qwen2.5-VL
        {"computer": None, "phone": None},
        ("key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", "middle_click",
         "double_click", "scroll", "wait", "terminate", "answer"),
        ("key", "click", "long_press", "swipe", "type", "system_button", "open", "wait", "terminate"),
        "calls"),
    "norm1000": AgentStyle(  # Qwen2-VL, Qwen3-VL, Qwen3.5
        {"computer": (1000, 1000), "phone": (999, 999)},
        ("key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", "middle_click",
         "double_click", "triple_click", "scroll", "hscroll", "wait", "terminate", "answer"),
        ("click", "long_press", "swipe", "type", "answer", "system_button", "wait", "terminate"),
        "actions", THOUGHT_FORMAT),
}


def check_screen(screen: str) -> ScreenKind:
    if screen not in SCREENS:
        raise UserError(f"The screen must be one of {', '.join(SCREENS)}; got {screen!r}.")
    return screen  # type: ignore[return-value]


def stated_resolution(family: FamilySpec, screen: ScreenKind, input_size: tuple[int, int]) -> tuple[int, int]:
    """The screen resolution the tool description gives the model (its coordinates are on this screen)."""
    fixed = STYLES[family.coords].resolution[screen]
    return input_size if fixed is None else fixed


def tool_schema(family: FamilySpec, screen: ScreenKind, stated: tuple[int, int]) -> dict:
    """The `computer_use` / `mobile_use` function as the cookbooks describe it, with the stated resolution."""
    style = STYLES[family.coords]
    res = f"* The screen's resolution is {stated[0]}x{stated[1]}."
    point = ("(x, y): The x (pixels from the left edge) and y (pixels from the top edge) coordinates to move "
             "the mouse to.")
    if screen == "computer":
        actions = style.computer_actions
        desc = ("Use a mouse and keyboard to interact with a computer, and take screenshots.\n"
                "* This is an interface to a desktop GUI. You do not have access to a terminal or applications "
                "menu. You must click on desktop icons to start applications.\n"
                "* Some applications may take time to start or process actions, so you may need to wait and take "
                "successive screenshots to see the results of your actions.\n"
                f"{res}\n"
                "* Whenever you intend to move the cursor to click on an element like an icon, you should consult a "
                "screenshot to determine the coordinates of the element before moving the cursor.\n"
                "* Make sure to click any buttons, links, icons, etc with the cursor tip in the center of the "
                "element. Don't click boxes on their edges.")
        props: dict[str, Any] = {
            "keys": {"description": "Required only by `action=key`.", "type": "array"},
            "text": {"description": "Required only by `action=type` and `action=answer`.", "type": "string"},
            "coordinate": {"description": point, "type": "array"},
            "pixels": {"description": "The amount of scrolling to perform. Positive values scroll up, negative "
                                      "values scroll down. Required only by `action=scroll` and `action=hscroll`.",
                       "type": "number"},
            "time": {"description": "The seconds to wait. Required only by `action=wait`.", "type": "number"},
        }
        texts, name = ACTION_TEXT, COMPUTER_TOOL
    else:
        actions = style.phone_actions
        desc = ("Use a touchscreen to interact with a mobile device, and take screenshots.\n"
                "* This is an interface to a mobile device with touchscreen. You can perform actions like clicking, "
                "typing, swiping, etc.\n"
                "* Some applications may take time to start or process actions, so you may need to wait and take "
                "successive screenshots to see the results of your actions.\n"
                f"{res}\n"
                "* Make sure to click any buttons, links, icons, etc with the cursor tip in the center of the "
                "element. Don't click boxes on their edges unless asked.")
        props = {
            "coordinate": {"description": point + " Required only by `action=click`, `action=long_press`, and "
                                                  "`action=swipe`.", "type": "array"},
            "coordinate2": {"description": point + " Required only by `action=swipe`.", "type": "array"},
            "text": {"description": "Required only by `action=key`, `action=type`, `action=answer` and "
                                    "`action=open`.", "type": "string"},
            "time": {"description": "The seconds to wait. Required only by `action=long_press` and `action=wait`.",
                     "type": "number"},
            "button": {"description": "Back means returning to the previous interface, Home means returning to the "
                                      "desktop, Menu means opening the application background menu, and Enter means "
                                      "pressing the enter. Required only by `action=system_button`",
                       "enum": ["Back", "Home", "Menu", "Enter"], "type": "string"},
        }
        texts, name = PHONE_ACTION_TEXT, PHONE_TOOL
    action = {"description": "The action to perform. The available actions are:\n"
                             + "\n".join(f"* `{a}`: {texts[a]}" for a in actions),
              "enum": list(actions), "type": "string"}
    status = {"description": "The status of the task. Required only by `action=terminate`.", "type": "string",
              "enum": ["success", "failure"]}
    return {"name": name, "description": desc,
            "parameters": {"properties": {"action": action, **props, "status": status}, "required": ["action"],
                           "type": "object"}}


def zoom_schema(family: FamilySpec, input_size: tuple[int, int]) -> dict:
    """Qwen3-VL's `image_zoom_in_tool`; for Qwen2.5-VL the box is in pixels of the image as the model sees it."""
    if family.coords == "absolute":
        units = (f"in pixels of that image as you see it (image 0 is {input_size[0]}x{input_size[1]}; each zoomed "
                 "image's size is given with it)")
    else:
        units = "in relative coordinates from 0 to 1000 over that image"
    return {"name": ZOOM_TOOL,
            "description": "Zoom in on a specific region of an image by cropping it based on a bounding box (bbox) "
                           "and an optional object label",
            "parameters": {"type": "object", "properties": {
                "bbox_2d": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                            "description": "The bounding box of the region to zoom in, as [x1, y1, x2, y2], where "
                                           f"(x1, y1) is the top-left corner and (x2, y2) is the bottom-right corner, "
                                           f"{units}"},
                "label": {"type": "string", "description": "The name or label of the object in the specified "
                                                           "bounding box"},
                "img_idx": {"type": "number", "description": "The index of the zoomed-in image (starting from 0)"}},
                "required": ["bbox_2d", "label", "img_idx"]}}


def system_prompt(tools: Sequence[dict], *, response_format: str = "", system: str = DEFAULT_SYSTEM) -> str:
    """Qwen-Agent's function-call system prompt for `tools` (one JSON line per tool)."""
    lines = "\n".join(json.dumps({"type": "function", "function": t}, ensure_ascii=False) for t in tools)
    return SYSTEM_TEMPLATE.format(system=system, tools=lines) + response_format


# ---- trajectory -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrajectoryStep:
    """One earlier step as the trajectory keeps it: the screenshot's name, the call, the thought, its JSON."""

    screenshot: str
    call: dict | None  # None: the step gave no action (a problem), so nothing happened on the device
    thought: str
    result: dict  # AgentStepResult.to_json() of that step

    def to_json(self) -> dict:
        return {"screenshot": self.screenshot, "call": self.call, "thought": self.thought, "result": self.result}


@dataclass(frozen=True)
class Trajectory:
    """A task on one device and the steps taken so far. Immutable: `with_step` returns a new one."""

    task: str
    screen: ScreenKind = "computer"
    steps: tuple[TrajectoryStep, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task.strip():
            raise UserError("The task is empty: say what the agent should do.")
        check_text("The task", self.task, MAX_PROMPT_CHARS)
        check_screen(self.screen)

    def with_step(self, result: AgentStepResult, screenshot: str | Path = "") -> Trajectory:
        step = TrajectoryStep(Path(screenshot).name if screenshot else "", result.action.call() if result.action
                              else None, result.thought, result.to_json())
        return replace(self, steps=(*self.steps, step))

    @property
    def done(self) -> bool:
        """A `terminate` or `answer` ended the task."""
        return any(s.result.get("action") in ("terminate", "answer") for s in self.steps)

    def pointer(self) -> tuple[float, float] | None:
        """Where the last pointer action left the cursor (original pixels), for a drag that starts there."""
        for step in reversed(self.steps):
            if step.result.get("action") in POINTER_ACTIONS and step.result.get("coordinate"):
                x, y = step.result["coordinate"]
                return float(x), float(y)
        return None

    def to_json(self) -> dict:
        return {"task": self.task, "screen": self.screen, "steps": [s.to_json() for s in self.steps]}

    @classmethod
    def from_json(cls, data: Any) -> Trajectory:
        """A trajectory written by `to_json` (or a step file holding one under "trajectory"); UserError if not."""
        if isinstance(data, dict) and isinstance(data.get("trajectory"), dict):
            data = data["trajectory"]
        if not isinstance(data, dict) or not isinstance(data.get("steps", []), list):
            raise UserError("The history is not a trajectory: expected {\"task\", \"screen\", \"steps\": [...]}.")
        steps = []
        for i, s in enumerate(data.get("steps", [])):
            if not isinstance(s, dict) or not isinstance(s.get("result", {}), dict):
                raise UserError(f"Step {i + 1} of the history is not a step object.")
            call = s.get("call")
            steps.append(TrajectoryStep(str(s.get("screenshot", "")), call if isinstance(call, dict) else None,
                                        str(s.get("thought", "")), s.get("result", {})))
        return cls(str(data.get("task", "")), data.get("screen", "computer"), tuple(steps))


def trajectory_from_text(text: str, what: str = "The history") -> Trajectory:
    """A trajectory from JSON text (an earlier step's JSON, or its trajectory), checked before it is parsed:
    its length (MAX_HISTORY_CHARS) and its nesting (a deep array is a RecursionError in json, not a message)."""
    check_text(what, text, MAX_HISTORY_CHARS)
    try:
        data = json.loads(text)
    except RecursionError:
        raise UserError(f"{what} nests too deep to be a trajectory.") from None
    except ValueError as exc:
        raise UserError(f"{what} is not JSON: {exc}") from None
    return Trajectory.from_json(data)


def _history_item(step: TrajectoryStep, style: AgentStyle) -> str | None:
    if step.call is None:
        return None
    if style.history == "actions":
        for line in step.thought.splitlines():
            if line.strip().lower().startswith("action:"):
                return line.split(":", 1)[1].strip()
        if step.thought.strip():
            return " ".join(step.thought.split())
    return json.dumps(step.call, ensure_ascii=False)


def user_text(trajectory: Trajectory, family: FamilySpec) -> str:
    """The user message of a step: the task and, after the first step, what was done so far (cookbook form)."""
    style = STYLES[family.coords]
    items = [h for h in (_history_item(s, style) for s in trajectory.steps[-MAX_HISTORY_STEPS:]) if h]
    text = f"The user query: {trajectory.task}"
    if items:
        text += ("\nTask progress (You have done the following operation on the current device): "
                 + "".join(f"Step {i}: {h}; " for i, h in enumerate(items, 1)))
    return text


# ---- one agent step ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentStepResult:
    """One step: the action in ORIGINAL pixels (or a problem), the sizes behind the coordinate map, the raw answer."""

    action: AgentAction | None
    problem: ActionProblem | None
    raw: str  # the answer only; a thinking model's reasoning is in `reasoning`
    thought: str
    task: str
    screen: ScreenKind
    image_size: tuple[int, int]
    input_size: tuple[int, int]  # what the model saw
    stated_size: tuple[int, int]  # the resolution its tool description stated
    stats: GenerationStats
    reasoning: str = ""
    notes: tuple[str, ...] = ()
    start: tuple[float, float] | None = None  # a left_click_drag's start: where the pointer was (original pixels)

    def to_json(self) -> dict:
        """The documented API/CLI format: action, coordinate(s) in original pixels and as written, sizes, raw."""
        action = self.action.to_json() if self.action else {"action": None, "coordinate": None,
                                                            "coordinate2": None, "model_coordinate": None,
                                                            "model_coordinate2": None}
        return {**action, "start": None if self.start is None else [round(v, 1) for v in self.start],
                "problem": self.problem.to_json() if self.problem else None,
                "image_size": list(self.image_size), "input_size": list(self.input_size),
                "stated_resolution": list(self.stated_size), "screen": self.screen, "task": self.task,
                "thought": self.thought, "reasoning": self.reasoning, "raw": self.raw, "notes": list(self.notes),
                "finish_reason": self.stats.finish_reason}


@dataclass(frozen=True)
class AgentProgress:
    """The answer so far (and reasoning so far); `result` once the step is complete."""

    raw: str
    result: AgentStepResult | None = None
    reasoning: str = ""


def agent_step(session: Backend, screenshot: str | Path, trajectory: Trajectory, *,
               sampling: SamplingParams | None = None, max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
               thinking: bool | None = None, thinking_budget: int = DEFAULT_THINKING_BUDGET
               ) -> Iterator[AgentProgress]:
    """Ask for the next action on `screenshot`; the last progress carries the parsed action in original pixels.

    The stated resolution is computed before the request from the same resize every backend applies, and checked
    against the size the model actually saw (a mismatch would move every point).
    """
    family = session.family
    original = open_image(screenshot, max_pixels=session.limits.max_image_pixels)  # fail before the GPU queue
    image_size = original.size
    planned, _tokens = planned_input_size(image_size, family, max_image_tokens)
    stated = stated_resolution(family, trajectory.screen, planned)
    style = STYLES[family.coords]
    request = GenerationRequest(
        turns=(Turn("user", user_text(trajectory, family), (Media("image", str(screenshot)),)),),
        system=system_prompt([tool_schema(family, trajectory.screen, stated)], response_format=style.response_format),
        sampling=sampling or SamplingParams(max_new_tokens=DEFAULT_AGENT_MAX_NEW_TOKENS),
        max_image_tokens=max_image_tokens, thinking=thinking, thinking_budget=thinking_budget)
    raw = reasoning = ""
    with contextlib.closing(session.stream(request)) as stream:
        for chunk in stream:
            raw += chunk.text
            reasoning += chunk.reasoning
            if chunk.stats is None:
                yield AgentProgress(raw, reasoning=reasoning)
                continue
            input_size = chunk.stats.image_input_sizes[0]
            if input_size != planned:
                raise GenerationError(f"The model saw the screenshot at {input_size[0]}x{input_size[1]}, not the "
                                      f"{planned[0]}x{planned[1]} its prompt was built for.")
            parsed = parse_action(raw, screen=trajectory.screen, family=family, stated_size=stated,
                                  input_size=input_size, image_size=image_size)
            yield AgentProgress(raw, _result(parsed, raw, reasoning, trajectory, image_size, input_size, stated,
                                             chunk.stats), reasoning)


def _result(parsed: ActionParse, raw: str, reasoning: str, trajectory: Trajectory, image_size: tuple[int, int],
            input_size: tuple[int, int], stated: tuple[int, int], stats: GenerationStats) -> AgentStepResult:
    start = trajectory.pointer() if parsed.action and parsed.action.action == "left_click_drag" else None
    return AgentStepResult(parsed.action, parsed.problem, raw, parsed.thought, trajectory.task, trajectory.screen,
                           image_size, input_size, stated, stats, reasoning, parsed.notes, start)


# ---- zooming in -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ZoomStep:
    """One zoom: the region in original pixels, the crop (the original's pixels, full resolution), the answer."""

    call: ZoomCall
    crop: Image.Image
    thought: str
    raw: str

    def to_json(self) -> dict:
        return {**self.call.to_json(), "crop_size": list(self.crop.size), "thought": self.thought, "raw": self.raw}


@dataclass(frozen=True)
class ZoomResult:
    """The final answer (or a problem) after the zooms, each zoom, and the sizes the model saw."""

    answer: str
    problem: ActionProblem | None
    zooms: tuple[ZoomStep, ...]
    image_size: tuple[int, int]
    input_sizes: tuple[tuple[int, int], ...]  # the original's, then each crop's, as the model saw them
    stats: GenerationStats
    reasoning: str = ""

    def to_json(self) -> dict:
        return {"answer": self.answer, "problem": self.problem.to_json() if self.problem else None,
                "zooms": [z.to_json() for z in self.zooms], "image_size": list(self.image_size),
                "input_sizes": [list(s) for s in self.input_sizes], "reasoning": self.reasoning}


@dataclass(frozen=True)
class ZoomProgress:
    raw: str
    zooms: tuple[ZoomStep, ...] = ()
    result: ZoomResult | None = None
    reasoning: str = ""


@dataclass
class _ZoomState:
    turns: list[Turn]
    zooms: list[ZoomStep] = field(default_factory=list)


def zoom_answer(session: Backend, image: str | Path, question: str, *, max_zooms: int = DEFAULT_MAX_ZOOMS,
                sampling: SamplingParams | None = None, max_image_tokens: int = DEFAULT_MAX_IMAGE_TOKENS,
                thinking: bool | None = None, thinking_budget: int = DEFAULT_THINKING_BUDGET
                ) -> Iterator[ZoomProgress]:
    """Answer `question`, letting the model zoom into the original image up to `max_zooms` times.

    Each zoom crops the ORIGINAL at full resolution (the processor then sizes it like any image) and continues the
    same conversation with the crop as a new image turn. A call past the limit, a box of zero area or an
    unreadable call ends the loop with a problem; an answer with no call is the final answer.
    """
    check_text("The question", question, MAX_PROMPT_CHARS)
    if not question.strip():
        raise UserError("The question is empty: ask something about the image.")
    if isinstance(max_zooms, bool) or not isinstance(max_zooms, int) or not 0 <= max_zooms <= MAX_ZOOMS_LIMIT:
        raise UserError(f"Zoom steps must be a whole number from 0 to {MAX_ZOOMS_LIMIT}, got {max_zooms!r}.")
    family = session.family
    original = open_image(image, max_pixels=session.limits.max_image_pixels)
    planned, _ = planned_input_size(original.size, family, max_image_tokens)
    system = system_prompt([zoom_schema(family, planned)])
    state = _ZoomState([Turn("user", question, (Media("image", str(image)),))])
    sampling = sampling or SamplingParams(max_new_tokens=DEFAULT_AGENT_MAX_NEW_TOKENS)
    with tempfile.TemporaryDirectory(prefix="qvl-zoom-") as tmp:
        while True:
            request = GenerationRequest(turns=tuple(state.turns), system=system,
                                        sampling=sampling,
                                        max_image_tokens=max_image_tokens, thinking=thinking,
                                        thinking_budget=thinking_budget)
            raw = reasoning = ""
            stats = None
            with contextlib.closing(session.stream(request)) as stream:
                for chunk in stream:
                    raw += chunk.text
                    reasoning += chunk.reasoning
                    stats = chunk.stats or stats
                    if chunk.stats is None:
                        yield ZoomProgress(raw, tuple(state.zooms), reasoning=reasoning)
            if stats is None:
                raise GenerationError("The stream ended without its final statistics.")
            sizes = stats.image_input_sizes
            frames = [ImageFrame((0.0, 0.0), original.size, sizes[0])] + [
                ImageFrame((float(z.call.box[0]), float(z.call.box[1])), z.crop.size, sizes[i + 1])
                for i, z in enumerate(state.zooms)]
            parsed = parse_zoom(raw, family=family, frames=frames, image_size=original.size)
            problem = parsed.problem
            if parsed.zoom is not None and len(state.zooms) >= max_zooms:
                problem = ActionProblem("zoom_limit", f"The model asked for another zoom after {max_zooms} (the "
                                                      "limit); its last answer is shown as is.")
            if problem is not None or parsed.zoom is None:
                result = ZoomResult(raw, problem, tuple(state.zooms), original.size, tuple(sizes), stats, reasoning)
                yield ZoomProgress(raw, tuple(state.zooms), result, reasoning)
                return
            crop = original.crop(parsed.zoom.box)
            path = Path(tmp) / f"zoom-{len(state.zooms) + 1}.png"
            crop.save(path)  # lossless: the model gets exactly the original's pixels
            step = ZoomStep(parsed.zoom, crop, parsed.thought, raw)
            state.zooms.append(step)
            n = len(state.zooms)
            seen, _ = planned_input_size(crop.size, family, max_image_tokens)
            size = f" ({seen[0]}x{seen[1]} as you see it)" if family.coords == "absolute" else ""
            last = " That was the last zoom: answer now." if n >= max_zooms else ""
            response = (f"<tool_response>\nImage {n}: {parsed.zoom.label or 'the region'} zoomed in{size}.{last}"
                        "\n</tool_response>")
            state.turns += [Turn("assistant", raw, reasoning=reasoning),
                            Turn("user", response, (Media("image", str(path)),))]
