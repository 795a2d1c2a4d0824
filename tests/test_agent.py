"""Agent (issue 17): tool-call answers parsed tolerantly into actions in original pixels for every family, the
trajectory passed back and written as JSON, zoom crops equal to the original's pixels, drawing, and `qvl agent`."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from qvl_core.draw import ACTION_COLOR, draw_action
from qvl_core.families import family_for
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
from qvl_core.parse.toolcall import ImageFrame, parse_action, parse_zoom
from qvl_core.tasks.agent import Trajectory, agent_step, stated_resolution, user_text, zoom_answer
from qvl_core.tasks.grounding import planned_input_size
from tests.conftest import as_model_writes

ORIGINAL = (1000, 500)
TARGET = (700.0, 250.0)  # where the scripted answers click, in original pixels
ZOOM_BOX = (200, 100, 400, 300)  # the region the scripted zoom asks for, in original pixels
FAMILIES = ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]


def call(args: dict, name: str = "computer_use") -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': args})}\n</tool_call>"


def parse(text: str, screen: str = "computer", family: str = "qwen3_vl"):
    spec = family_for(family)
    input_size, _ = planned_input_size(ORIGINAL, spec, DEFAULT_MAX_IMAGE_TOKENS)
    return parse_action(text, screen=screen, family=spec, stated_size=stated_resolution(spec, screen, input_size),
                        input_size=input_size, image_size=ORIGINAL)


def model_point(family: str, screen: str, p: tuple[float, float]) -> list[int]:
    """`p` (original pixels) as `family` writes it on the screen its prompt states."""
    spec = family_for(family)
    input_size, _ = planned_input_size(ORIGINAL, spec, DEFAULT_MAX_IMAGE_TOKENS)
    sw, sh = stated_resolution(spec, screen, input_size)
    return [round(p[0] * sw / ORIGINAL[0]), round(p[1] * sh / ORIGINAL[1])]


CLICK = {"action": "left_click", "coordinate": [700, 500]}  # TARGET on Qwen3-VL's 1000x1000 computer screen


# ---- the parser, table-driven ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, action, coordinate", [
    (call(CLICK), "left_click", TARGET),
    ("```json\n" + json.dumps({"name": "computer_use", "arguments": CLICK}) + "\n```", "left_click", TARGET),
    ("Thought: the button.\n" + json.dumps({"name": "computer_use", "arguments": CLICK}), "left_click", TARGET),
    (call(CLICK)[:-len("\n</tool_call>")], "left_click", TARGET),  # no closing tag
    (call(CLICK) + "\n" + call({"action": "right_click", "coordinate": [1, 1]}), "left_click", TARGET),
    ("<think>draft " + call({"action": "left_click", "coordinate": [1, 1]}) + "</think>\n" + call(CLICK),
     "left_click", TARGET),
    (call({"action": "type", "text": "hello"}), "type", None),
    (call({"action": "key", "keys": ["ctrl", "c"]}), "key", None),
    (call({"action": "terminate", "status": "success"}), "terminate", None),
    ('<tool_call>{"name": "computer_use", "arguments": "{\\"action\\": \\"answer\\", \\"text\\": \\"42\\"}"}'
     "</tool_call>", "answer", None),
], ids=["tagged", "fenced", "untagged-after-thought", "no-closing-tag", "several-calls", "draft-in-reasoning",
        "type", "key", "terminate", "arguments-as-string"])
def test_parser_reads_tolerantly(text, action, coordinate):
    parsed = parse(text)
    assert parsed.problem is None and parsed.action is not None
    assert parsed.action.action == action
    if coordinate is None:
        assert parsed.action.coordinate is None
    else:
        assert parsed.action.coordinate == pytest.approx(coordinate)


@pytest.mark.parametrize("text, kind", [
    ("I would click the button.", "no_call"),
    ("<tool_call>not json</tool_call>", "bad_call"),
    (call({"action": "fly", "coordinate": [1, 1]}), "unknown_action"),
    (call({"action": "left_click"}), "missing_coordinate"),
    (call({"action": "left_click", "coordinate": [700]}), "missing_coordinate"),
    (call({"action": "left_click", "coordinate": [1200, 10]}), "out_of_screen"),
    (call({"action": "left_click", "coordinate": [-3, 10]}), "out_of_screen"),
    (call({"action": "type"}), "missing_argument"),
    (call(CLICK, name="browser"), "unknown_tool"),
], ids=["no-call", "bad-json", "unknown-action", "missing-coordinate", "one-number", "off-right", "negative",
        "type-without-text", "unknown-tool"])
def test_parser_problems_are_typed_never_raised(text, kind):
    parsed = parse(text)
    assert parsed.action is None and parsed.problem is not None
    assert parsed.problem.kind == kind and parsed.problem.message


def test_truncated_coordinate_is_never_completed():
    """Bug guarded: json_repair completed a cut-off `[700, 5` into a click at (700, 5); the point was half-written."""
    parsed = parse('<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [700, 5')
    assert parsed.action is None and parsed.problem.kind == "missing_coordinate"


@pytest.mark.parametrize("family", [*FAMILIES, "qwen2_vl"])
@pytest.mark.parametrize("screen", ["computer", "phone"])
def test_coordinates_map_to_original_pixels_per_family(family, screen):
    name, action = ("computer_use", "left_click") if screen == "computer" else ("mobile_use", "click")
    parsed = parse(call({"action": action, "coordinate": model_point(family, screen, TARGET)}, name), screen, family)
    assert parsed.action.coordinate == pytest.approx(TARGET, abs=1.0)
    assert parsed.action.model_coordinate == tuple(model_point(family, screen, TARGET))


def test_swipe_has_both_points_in_original_pixels():
    start, end = model_point("qwen2_5_vl", "phone", (500, 400)), model_point("qwen2_5_vl", "phone", (500, 100))
    parsed = parse(call({"action": "swipe", "coordinate": start, "coordinate2": end}, "mobile_use"), "phone",
                   "qwen2_5_vl")
    assert parsed.action.coordinate == pytest.approx((500, 400), abs=1.0)
    assert parsed.action.coordinate2 == pytest.approx((500, 100), abs=1.0)


def test_zoom_box_maps_through_a_crop_and_zero_area_is_a_problem():
    frames = [ImageFrame((0.0, 0.0), ORIGINAL, (992, 512)), ImageFrame((200.0, 100.0), (200, 200), (192, 192))]
    zoom = call({"bbox_2d": [0, 0, 500, 500], "label": "corner", "img_idx": 1}, "image_zoom_in_tool")
    parsed = parse_zoom(zoom, family="qwen3_vl", frames=frames, image_size=ORIGINAL)
    assert parsed.problem is None and parsed.zoom.box == (200, 100, 300, 200)
    flat = call({"bbox_2d": [300, 300, 300, 600], "img_idx": 0}, "image_zoom_in_tool")
    parsed = parse_zoom(flat, family="qwen3_vl", frames=frames, image_size=ORIGINAL)
    assert parsed.zoom is None and parsed.problem.kind == "zero_area"
    assert parse_zoom("It is a cat.", family="qwen3_vl", frames=frames, image_size=ORIGINAL).problem is None


def test_history_is_passed_back_as_the_cookbook_does():
    step = {"name": "mobile_use", "arguments": {"action": "open", "text": "Files"}}
    data = {"task": "Open files", "screen": "phone", "steps": [
        {"screenshot": "a.png", "call": step, "thought": "Thought: start.\nAction: Open the Files app.",
         "result": {"action": "open"}}]}
    trajectory = Trajectory.from_json(data)
    assert trajectory.to_json() == data
    assert user_text(trajectory, family_for("qwen2_5_vl")).endswith(f"Step 1: {json.dumps(step)}; ")
    assert user_text(trajectory, family_for("qwen3_vl")).endswith("Step 1: Open the Files app.; ")


def test_empty_task_is_refused():
    from qvl_core.errors import UserError

    with pytest.raises(UserError, match="task is empty"):
        Trajectory("  ")


# ---- scripted checkpoints of each family -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def screenshot(tmp_path_factory):
    path = tmp_path_factory.mktemp("agent") / "screen.png"
    img = Image.new("RGB", ORIGINAL, (235, 235, 235))
    for x in range(0, ORIGINAL[0], 50):  # a pattern, so a crop's pixels say where it came from
        img.paste((x % 256, (3 * x) % 256, 90), (x, 0, x + 25, ORIGINAL[1]))
    img.paste((30, 90, 200), (650, 220, 750, 280))  # the button
    img.save(path)
    return str(path)


def click_answer(family: str) -> str:
    return as_model_writes(family, "Thought: the blue button.\nAction: Click it.\n" + call(
        {"action": "left_click", "coordinate": model_point(family, "computer", TARGET)}))


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_step_gives_the_action_in_original_pixels(make_session, screenshot, family):
    session = make_session(family, click_answer(family))
    trajectory = Trajectory("Press the blue button")
    steps = list(agent_step(session, screenshot, trajectory))
    result = steps[-1].result
    assert result.problem is None and result.action.action == "left_click"
    assert result.action.coordinate == pytest.approx(TARGET, abs=1.0)
    assert result.image_size == ORIGINAL
    assert result.input_size == planned_input_size(ORIGINAL, family_for(family), DEFAULT_MAX_IMAGE_TOKENS)[0]
    assert result.thought.endswith("Action: Click it.") and "<tool_call>" in result.raw
    assert "</think>" not in result.raw  # a thinking model's reasoning stays apart
    data = result.to_json()
    assert data["model_coordinate"] == model_point(family, "computer", TARGET)
    assert data["coordinate"] == pytest.approx(list(TARGET), abs=1.0)
    # The second step passes the first back; the trajectory round-trips through JSON.
    after = Trajectory.from_json(json.loads(json.dumps(trajectory.with_step(result, screenshot).to_json())))
    assert len(after.steps) == 1 and after.steps[0].screenshot == "screen.png"
    assert "Task progress" in user_text(after, family_for(family))
    second = list(agent_step(session, screenshot, after))[-1].result
    assert second.action.coordinate == pytest.approx(TARGET, abs=1.0)


def test_drawn_marker_sits_at_the_original_pixel(screenshot):
    parsed = parse(call(CLICK))
    image = Image.open(screenshot).convert("RGB")
    drawn = draw_action(image, parsed.action)
    assert drawn.size == ORIGINAL
    assert drawn.getpixel((700, 250)) == ACTION_COLOR  # the crosshair's centre
    assert drawn.getpixel((100, 400)) == image.getpixel((100, 400))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"])
def test_zoom_crop_is_the_originals_region(make_session, screenshot, family):
    spec = family_for(family)
    if spec.coords == "absolute":
        (iw, ih), _ = planned_input_size(ORIGINAL, spec, DEFAULT_MAX_IMAGE_TOKENS)
        box = [round(ZOOM_BOX[0] * iw / ORIGINAL[0]), round(ZOOM_BOX[1] * ih / ORIGINAL[1]),
               round(ZOOM_BOX[2] * iw / ORIGINAL[0]), round(ZOOM_BOX[3] * ih / ORIGINAL[1])]
    else:
        box = [ZOOM_BOX[0] // 1, ZOOM_BOX[1] * 2, ZOOM_BOX[2] // 1, ZOOM_BOX[3] * 2]  # 0-1000 of 1000x500
    session = make_session(family, as_model_writes(family, call({"bbox_2d": box, "label": "stripes", "img_idx": 0},
                                                                "image_zoom_in_tool")))
    result = list(zoom_answer(session, screenshot, "What colour are the stripes?", max_zooms=1))[-1].result
    # The scripted model zooms every time: one zoom is done, the second call is past the limit.
    assert len(result.zooms) == 1 and result.problem.kind == "zoom_limit"
    zoom = result.zooms[0]
    assert zoom.call.box == pytest.approx(ZOOM_BOX, abs=2)
    original = Image.open(screenshot).convert("RGB")
    assert zoom.crop.tobytes() == original.crop(zoom.call.box).tobytes()
    assert len(result.input_sizes) == 2  # the model saw the crop as a second image


def test_cli_agent_writes_step_json_trajectory_and_drawing(qvl_cli, ckpt_dir, screenshot, tmp_path):
    model = ckpt_dir("qwen3_vl", click_answer("qwen3_vl"))
    out_json, out_png = tmp_path / "step.json", tmp_path / "step.png"
    proc = qvl_cli("agent", screenshot, "Press the blue button", "--model", str(model), "--device", "cpu",
                   "--json", str(out_json), "--draw", str(out_png))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out_json.read_text())
    assert data["action"] == "left_click" and data["coordinate"] == pytest.approx(list(TARGET), abs=1.0)
    assert data["model_coordinate"] == [700, 500] and data["image_size"] == list(ORIGINAL)
    assert data["input_size"] and "<tool_call>" in data["raw"] and len(data["trajectory"]["steps"]) == 1
    assert Image.open(out_png).getpixel((700, 250)) == ACTION_COLOR
    # Continue the task from the written step: the history grows.
    proc = qvl_cli("agent", screenshot, "Press the blue button", "--model", str(model), "--device", "cpu",
                   "--history", str(out_json), "--json", str(out_json))
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(out_json.read_text())["trajectory"]["steps"]) == 2
    bad = qvl_cli("agent", str(tmp_path / "step.json"), "Press it", "--model", str(model), "--device", "cpu")
    assert bad.returncode == 2 and "not an image" in bad.stderr
