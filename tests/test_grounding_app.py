"""Grounding end to end: scripted answers in each family's convention come out exact in original pixels
through the tab handler, the /ground API and the `qvl ground` command; bad input gives clear messages."""

from __future__ import annotations

import json

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.families import family_for
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
from qvl_core.tasks.grounding import ground, planned_input_size
from tests.conftest import as_model_writes
from ui.tabs.grounding import GroundingTab

# A 1000x500 photo is seen by the 28-px families as 1008x504 and by Qwen3-VL (32 px) as 992x512.
ORIGINAL = (1000, 500)
EXPECTED_BOX = (250.0, 125.0, 500.0, 375.0)
EXPECTED_POINT = (700.0, 250.0)
FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]


def scripted_answer(family: str) -> str:
    """The model's answer for EXPECTED_BOX/POINT, written in that family's own coordinate convention."""
    spec = family_for(family)
    if spec.coords == "absolute":
        (iw, ih), _ = planned_input_size(ORIGINAL, spec, 1280)
        sx, sy = iw / ORIGINAL[0], ih / ORIGINAL[1]
        x1, y1, x2, y2 = (round(EXPECTED_BOX[0] * sx), round(EXPECTED_BOX[1] * sy), round(EXPECTED_BOX[2] * sx),
                          round(EXPECTED_BOX[3] * sy))
        px, py = round(EXPECTED_POINT[0] * sx), round(EXPECTED_POINT[1] * sy)
        return (f'```json\n[\n  {{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "red box"}},\n  '
                f'{{"point_2d": [{px}, {py}], "label": "dot"}}\n]\n```\nThere are 2 objects.')
    # 0-1000 normalised over the original image.
    b = [round(EXPECTED_BOX[0] / ORIGINAL[0] * 1000), round(EXPECTED_BOX[1] / ORIGINAL[1] * 1000),
         round(EXPECTED_BOX[2] / ORIGINAL[0] * 1000), round(EXPECTED_BOX[3] / ORIGINAL[1] * 1000)]
    p = [round(EXPECTED_POINT[0] / ORIGINAL[0] * 1000), round(EXPECTED_POINT[1] / ORIGINAL[1] * 1000)]
    if spec.box_syntax == "special_tokens":
        return (f"<|object_ref_start|>red box<|object_ref_end|><|box_start|>({b[0]},{b[1]}),({b[2]},{b[3]})"
                f"<|box_end|> and the dot at <points x1=\"{p[0]}\" y1=\"{p[1]}\" alt=\"dot\">dot</points>")
    return (f'```json\n[{{"bbox_2d": {b}, "label": "red box"}}, {{"point_2d": {p}, "label": "dot"}}]\n```')


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("ground") / "photo.png"
    img = Image.new("RGB", ORIGINAL, (240, 240, 240))
    img.paste((200, 30, 30), (250, 125, 500, 375))
    img.save(path)
    return str(path)


def _check(detections: list[dict]) -> None:
    boxes = [d for d in detections if d["bbox_2d"]]
    points = [d for d in detections if d["point_2d"]]
    assert len(boxes) == 1 and len(points) == 1
    assert boxes[0]["label"] == "red box" and points[0]["label"] == "dot"
    assert boxes[0]["bbox_2d"] == pytest.approx(list(EXPECTED_BOX), abs=1.0)
    assert points[0]["point_2d"] == pytest.approx(list(EXPECTED_POINT), abs=1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_scripted_boxes_are_exact_in_original_pixels(make_session, photo, family):
    session = make_session(family, as_model_writes(family, scripted_answer(family)))
    *_, last = ground(session, photo, "Find the red box and the dot.")
    result = last.result
    assert result.image_size == ORIGINAL
    assert result.input_size == planned_input_size(ORIGINAL, session.family, 1280)[0]
    _check(result.detections_json())


@pytest.mark.parametrize("family", FAMILIES)
def test_tab_handler_streams_then_draws(make_session, photo, family):
    tab = GroundingTab(make_session(family, as_model_writes(family, scripted_answer(family))))
    steps = list(tab.run(photo, "Detect", "red box", "", 1280, 2048, 0.0, 1.0, 0, 1.05, -1))
    annotated, rows, summary, json_path, raw, prompt, _reasoning = steps[-1]
    assert "red box" in prompt and raw == scripted_answer(family)
    assert "**2 found**" in summary and "1000×500" in summary
    assert annotated.size == ORIGINAL  # labels are drawn on the image itself (no tinted AnnotatedImage)
    with open(json_path) as f:
        _check(json.load(f))
    row = next(r for r in rows if r[0] == "red box")
    assert row[2:6] == pytest.approx(list(EXPECTED_BOX), abs=1.0)


def test_tab_with_random_weights_reports_nothing_found(make_session, photo):
    tab = GroundingTab(make_session("qwen2_5_vl"))
    *_, last = tab.run(photo, "Count", "apples", "", 256, 24, 0.0, 1.0, 0, 1.05, -1)
    _annotated, rows, summary, *_ = last
    assert "found nothing" in summary and rows == []


@pytest.mark.parametrize(("image_kind", "message"), [
    (None, "Add an image first"),
    ("strip", "aspect ratio"),
    ("fake", "is not an image"),
    ("bomb", "over the limit of 64 MP"),
])
def test_tab_bad_input_is_a_message(make_session, tmp_path, image_kind, message):
    tab = GroundingTab(make_session("qwen2_5_vl"))
    image = None
    if image_kind == "strip":
        image = str(tmp_path / "strip.png")
        Image.new("RGB", (3000, 10)).save(image)
    elif image_kind == "fake":
        image = str(tmp_path / "fake.png")
        (tmp_path / "fake.png").write_text("nope")
    elif image_kind == "bomb":
        image = str(tmp_path / "bomb.png")
        Image.new("1", (10000, 10000)).save(image)
    with pytest.raises(gr.Error, match=message):
        list(tab.run(image, "Detect", "cat", "", 1280, 64, 0.0, 1.0, 0, 1.05, -1))


def test_tiny_image_is_upscaled_not_refused(make_session, tmp_path):
    """Regression: this test looped over the detections without asserting there were any, and its scripted boxes
    were written for a 1000x500 image, so it passed whatever came back. Now the answer is in the upscaled
    input's pixels and the box must come back exactly, in the 6x4 original's pixels."""
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (6, 4), (255, 0, 0)).save(tiny)
    (iw, ih), _ = planned_input_size((6, 4), family_for("qwen2_5_vl"), DEFAULT_MAX_IMAGE_TOKENS)
    assert iw > 6 and ih > 4  # upscaled to the model's minimum
    answer = f'[{{"bbox_2d": [{iw // 2}, 0, {iw}, {ih // 2}], "label": "top right"}}]'
    *_, last = ground(make_session("qwen2_5_vl", answer), str(tiny), "Find it")
    assert last.result.image_size == (6, 4)
    assert [(d.label, d.box) for d in last.result.detections] == [("top right", pytest.approx((3, 0, 6, 2)))]


def test_preset_without_text_is_explained(make_session, photo):
    tab = GroundingTab(make_session("qwen2_5_vl"))
    with pytest.raises(gr.Error, match="Detect"):
        list(tab.run(photo, "Detect", "   ", "", 1280, 64, 0.0, 1.0, 0, 1.05, -1))


def test_resolution_info(make_session, photo):
    tab = GroundingTab(make_session("qwen2_5_vl"))
    assert tab.resolution_info(photo, 1280) == ("The model will see this image as 1008×504 px = 648 visual tokens "
                                                "(original 1000×500).")


@pytest.mark.parametrize("family", FAMILIES)
def test_ground_api(make_session, launch_app, photo, family):
    demo = launch_app(make_session(family, as_model_writes(family, scripted_answer(family))))
    client = Client(demo.local_url, verbose=False)
    drawn, detections = client.predict(image=handle_file(photo), text="red box", api_name="/ground")
    _check(detections)
    assert Image.open(drawn).size == ORIGINAL
    with pytest.raises(Exception, match="Detect"):
        client.predict(image=handle_file(photo), text="", api_name="/ground")


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_ground_writes_json_and_drawing(qvl_cli, ckpt_dir, photo, tmp_path, family):
    out_json, out_png = tmp_path / "d.json", tmp_path / "d.png"
    model = ckpt_dir(family, as_model_writes(family, scripted_answer(family)))
    proc = qvl_cli("ground", photo, "red box", "--model", str(model), "--device",
                   "cpu", "--json", str(out_json), "--draw", str(out_png))
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(out_json.read_text()))
    assert "2 found" in proc.stderr and Image.open(out_png).size == ORIGINAL


def test_chat_answer_with_boxes_shows_the_drawn_image(make_session, photo):
    from qvl_core.tasks.conversation import Conversation
    from ui.tabs.chat import ChatTab

    tab = ChatTab(make_session("qwen2_5_vl", scripted_answer("qwen2_5_vl")))
    conv, _, _ = tab.add_message({"text": "Where is the red box?", "files": [photo]}, Conversation())
    *_, (conv, shown) = tab.answer(conv, "", 2048, 0.0, 1.0, 0, 1.05, -1, None, 1280, 2.0, 64, False)
    figure = conv.figures[-1]
    assert figure and Image.open(figure).size == ORIGINAL
    # The red box was drawn over: the drawn edge differs from the original pixel there.
    assert Image.open(figure).convert("RGB").getpixel((250, 250)) != Image.open(photo).getpixel((250, 250))
    assert shown[-1]["content"][1] == {"path": figure}
    assert conv.turns[-1].text == scripted_answer("qwen2_5_vl")  # the model's raw text is untouched


def test_chat_figure_of_a_large_photo_is_display_sized(make_session, tmp_path):
    """Regression (issue 15 item 8, Chat): the figure of a Chat answer with boxes was drawn on the full-resolution
    original and saved as a PNG of every pixel; it is drawn on a display-sized copy like Grounding's."""
    from qvl_core.draw import MAX_DISPLAY_SIDE
    from qvl_core.tasks.conversation import Conversation
    from ui.tabs.chat import ChatTab

    big = tmp_path / "big.png"
    Image.new("RGB", (4 * ORIGINAL[0], 4 * ORIGINAL[1]), (240, 240, 240)).save(big)  # 4000x2000
    answer = '```json\n[{"bbox_2d": [250, 250, 500, 750], "label": "red box"}]\n```'  # 0-1000 (Qwen3-VL)
    tab = ChatTab(make_session("qwen3_vl", answer))
    conv, _, _ = tab.add_message({"text": "Where is the red box?", "files": [str(big)]}, Conversation())
    *_, (conv, _shown) = tab.answer(conv, "", 256, 0.0, 1.0, 0, 1.0, -1, None, 1280, 2.0, 64, False)
    with Image.open(conv.figures[-1]) as figure:
        assert max(figure.size) == MAX_DISPLAY_SIDE and figure.size[0] == 2 * figure.size[1]


def test_a_refused_answer_gives_back_the_text_and_the_files(make_session, photo):
    """Regression (issue 15 item 1): a refusal raised while answering (a context or pixel limit) put the text
    back in the box but dropped the files, so the input was not as it was sent."""
    from qvl_core.tasks.conversation import Conversation
    from ui.tabs.chat import ChatTab

    tab = ChatTab(make_session("qwen2_5_vl"))
    conv, _, _ = tab.add_message({"text": "Describe it", "files": [photo]}, Conversation())
    conv, _shown, box = tab.after_error(conv)
    assert not conv.turns and box.value["text"] == "Describe it"
    assert [f["orig_name"] for f in box.value["files"]] == ["photo.png"]


def test_chat_answer_without_coordinates_has_no_figure(make_session, photo):
    from qvl_core.tasks.conversation import Conversation
    from ui.tabs.chat import ChatTab

    tab = ChatTab(make_session("qwen2_5_vl", "Just words, no boxes."))
    conv, _, _ = tab.add_message({"text": "Hi", "files": [photo]}, Conversation())
    *_, (conv, shown) = tab.answer(conv, "", 64, 0.0, 1.0, 0, 1.05, -1, None, 1280, 2.0, 64, False)
    assert conv.figures[-1] is None and isinstance(shown[-1]["content"], str)


def test_large_photo_is_drawn_display_sized_with_original_coordinates(make_session, tmp_path):
    """Regression: a 48 MP photo's result came 42 s after a 14-token answer, because the drawing was a
    full-resolution WebP (16 s to encode). The drawing is now at most MAX_DISPLAY_SIDE on its long side, still
    labelled where the box is, while the table and the JSON stay in the original's pixels."""
    from qvl_core.draw import MAX_DISPLAY_SIDE, palette_color

    big = tmp_path / "big.png"
    Image.new("RGB", (ORIGINAL[0] * 5, ORIGINAL[1] * 5), (240, 240, 240)).save(big)
    (iw, ih), _ = planned_input_size((ORIGINAL[0] * 5, ORIGINAL[1] * 5), family_for("qwen2_5_vl"), 1280)
    x1, y1, x2, y2 = (round(v * iw / ORIGINAL[0]) if i % 2 == 0 else round(v * ih / ORIGINAL[1])
                      for i, v in enumerate(EXPECTED_BOX))
    answer = f'[{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "red box"}}]'
    tab = GroundingTab(make_session("qwen2_5_vl", answer))
    drawn, rows, summary, json_path, *_ = list(tab.run(str(big), "Detect", "red box", "", 1280, 256, 0.0, 1.0, 0,
                                                       1.05, -1))[-1]
    assert drawn.size == (MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE // 2) and "5000×2500" in summary
    original_box = [v * 5 for v in EXPECTED_BOX]
    row = next(r for r in rows if r[0] == "red box")
    assert row[2:6] == pytest.approx(original_box, abs=5.0)
    with open(json_path) as f:
        box = next(d for d in json.load(f) if d["label"] == "red box")["bbox_2d"]
    assert box == pytest.approx(original_box, abs=5.0)
    scale = MAX_DISPLAY_SIDE / (ORIGINAL[0] * 5)
    left, mid_y = round(box[0] * scale), round((box[1] + box[3]) / 2 * scale)
    assert drawn.getpixel((left + 1, mid_y)) == palette_color("red box")  # the outline, where the box is shown
