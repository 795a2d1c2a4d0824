"""Tier 1: grounding answers -> original-pixel detections, per family; prompts; drawing."""

from __future__ import annotations

import math
from string import Template

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from qvl_core.draw import annotated_value, draw_detections, palette_color
from qvl_core.errors import UserError
from qvl_core.families import family_for
from qvl_core.media.images import PixelBudget, fit_aspect, smart_resize
from qvl_core.parse.coords import to_model_space, to_original
from qvl_core.parse.grounding import (
    PRESETS,
    PRESETS_NEEDING_TEXT,
    Detection,
    build_prompt,
    count_from_answer,
    parse_grounding,
)

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe")
ORIGINAL = (1000, 500)  # (width, height) of the photo the user uploaded
# What each family saw at the default budget (checked in test_input_sizes): 28 px tokens give 1008x504,
# Qwen3-VL's 32 px tokens give 992x512.
INPUT = {"qwen2_vl": (1008, 504), "qwen2_5_vl": (1008, 504), "qwen3_vl": (992, 512), "qwen3_5": (992, 512),
         "qwen3_5_moe": (992, 512)}

# The same things written in each family's own coordinates. Qwen2.5-VL: pixels of the 1008x504 input
# (x 1008/1000, y 504/500 of the original); Qwen2-VL, Qwen3-VL: 0..1000 over the image.
_ABS = {"A": (252, 126, 504, 252), "B": (630, 378, 882, 504), "P": (378, 252), "OUT": (-10, 126, 1100, 252)}
_NORM = {"A": (250, 250, 500, 500), "B": (625, 750, 875, 1000), "P": (375, 500), "OUT": (-10, 250, 1100, 500)}
MODEL = {"qwen2_vl": _NORM, "qwen2_5_vl": _ABS, "qwen3_vl": _NORM, "qwen3_5": _NORM, "qwen3_5_moe": _NORM}
# ... and where they are in the original 1000x500 image, for every family.
A = (250.0, 125.0, 500.0, 250.0)
B = (625.0, 375.0, 875.0, 500.0)
P = (375.0, 250.0)
WIDE = (0.0, 125.0, 1000.0, 250.0)  # OUT clamped to the image


def fill(template: str, family: str) -> str:
    """Write a template's $A, $B, $P... in `family`'s coordinates (see the keys below)."""
    m = MODEL[family]
    values: dict[str, object] = {}
    for name in ("A", "B", "OUT"):
        x1, y1, x2, y2 = m[name]
        values |= {name: f"{x1}, {y1}, {x2}, {y2}", f"{name}x1": x1, f"{name}y1": y1, f"{name}x2": x2,
                   f"{name}y2": y2, f"{name}pairs": f"({x1},{y1}),({x2},{y2})"}
    values |= {"Px": m["P"][0], "Py": m["P"][1]}
    return Template(template).substitute(values)


def parse(text: str, family: str) -> list[Detection]:
    return parse_grounding(text, family=family, input_size=INPUT[family], image_size=ORIGINAL)


def summary(dets: list[Detection]) -> list[tuple]:
    return [(d.label, d.box, d.point, d.text) for d in dets]


# (id, answer template, expected [(label, box, point, text)] in original pixels: the same for every family)
SHAPES = [
    ("fenced-list", '```json\n[\n  {"bbox_2d": [$A], "label": "cat"},\n  {"bbox_2d": [$B], "label": "dog"}\n]\n```',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("bare-json-with-prose", 'Sure! Here they are: [{"bbox_2d": [$A], "label": "cat"}] Hope this helps.',
     [("cat", A, None, None)]),
    ("several-fenced-blocks",
     '```json\n[{"bbox_2d": [$A], "label": "cat"}]\n```\nand also\n```json\n[{"bbox_2d": [$B], "label": "dog"}]\n```',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("single-object", '```json\n{"bbox_2d": [$A], "label": "cat"}\n```', [("cat", A, None, None)]),
    ("json-lines", '{"bbox_2d": [$A], "label": "cat"}\n{"bbox_2d": [$B], "label": "dog"}',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("dict-wrapping-list", '{"objects": [{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B], "label": "dog"}]}',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("trailing-commas-single-quotes", "```json\n[{'bbox_2d': [$A,], 'label': 'cat',}, {'bbox_2d': [$B], "
     "'label': 'dog'},]\n```", [("cat", A, None, None), ("dog", B, None, None)]),
    ("truncated-inside-item", '```json\n[{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$Bx1, $By1',
     [("cat", A, None, None)]),
    ("truncated-in-last-number", '[{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B',
     [("cat", A, None, None)]),
    ("truncated-in-label", '[{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B], "label": "do',
     [("cat", A, None, None)]),
    ("truncated-between-items", '[{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B], "label": "dog"},',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("truncated-wrapped-list", '{"objects": [{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B], "la',
     [("cat", A, None, None)]),
    ("keys-bbox-and-box", '[{"bbox": [$A], "label": "cat"}, {"box": [$B], "label": "dog"}]',
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("point-keys", '[{"point_2d": [$Px, $Py], "label": "pen"}, {"point": ["$Px", "$Py"], "label": "cup"}]',
     [("pen", None, P, None), ("cup", None, P, None)]),
    ("text-spotting", '[{"bbox_2d": [$A], "text_content": "EXIT"}, {"bbox_2d": [$B], "text": "Open 9-5"}]',
     [(None, A, None, "EXIT"), (None, B, None, "Open 9-5")]),
    ("corner-pairs", '[{"bbox_2d": [[$Ax1, $Ay1], [$Ax2, $Ay2]], "label": "cat"}]', [("cat", A, None, None)]),
    ("numbers-as-strings", '[{"bbox_2d": ["$Ax1", "$Ay1", "$Ax2", "$Ay2"], "label": "cat"}]',
     [("cat", A, None, None)]),
    ("xml-points", 'Here: <points x1="$Px" y1="$Py" x2="$Ax1" y2="$Ay1" alt="pen">pen</points>',
     [("pen", None, P, None), ("pen", None, A[:2], None)]),
    ("xml-single-point", '<points x="$Px" y="$Py" alt="the pen">the pen</points> and <point x=$Ax1 y=$Ay1>cup</point>',
     [("the pen", None, P, None), ("cup", None, A[:2], None)]),
    ("plain-lines", "$Ax1,$Ay1,$Ax2,$Ay2 cat\n- [$Bx1 $By1 $Bx2 $By2] dog",
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("plain-label-first", "cat: $A\ndog = [$B]", [("cat", A, None, None), ("dog", B, None, None)]),
    ("special-tokens-two-boxes-one-label",
     "<|object_ref_start|>cat<|object_ref_end|><|box_start|>$Apairs<|box_end|><|box_start|>$Bpairs<|box_end|>",
     [("cat", A, None, None), ("cat", B, None, None)]),
    ("special-tokens-no-label", "<|box_start|>$Apairs<|box_end|>", [(None, A, None, None)]),
    ("special-tokens-two-labels",
     "The <|object_ref_start|>cat<|object_ref_end|><|box_start|>$Apairs<|box_end|> sits next to the "
     "<|object_ref_start|>dog<|object_ref_end|><|box_start|>$Bpairs<|box_end|>.",
     [("cat", A, None, None), ("dog", B, None, None)]),
    ("reversed-corners", '[{"bbox_2d": [$Ax2, $Ay2, $Ax1, $Ay1], "label": "cat"}]', [("cat", A, None, None)]),
    ("clamped-to-image", '[{"bbox_2d": [$OUT], "label": "wide"}]', [("wide", WIDE, None, None)]),
    ("degenerate-dropped", '[{"bbox_2d": [$Ax1, $Ay1, $Ax1, $Ay2], "label": "flat"}, '
     '{"bbox_2d": [1100, $Ay1, 1200, $Ay2], "label": "outside"}, {"bbox_2d": [$A], "label": "cat"}]',
     [("cat", A, None, None)]),
    ("non-finite-dropped", '[{"bbox_2d": [NaN, $Ay1, $Ax2, $Ay2], "label": "nan"}, '
     '{"bbox_2d": ["inf", $Ay1, $Ax2, $Ay2], "label": "inf"}, {"bbox_2d": [$A], "label": "cat"}]',
     [("cat", A, None, None)]),
    ("short-box-dropped", '[{"bbox_2d": [$Ax1, $Ay1], "label": "half"}, {"bbox_2d": [$A], "label": "cat"}]',
     [("cat", A, None, None)]),
    ("looped-repeats-dropped", '[' + ', '.join(['{"bbox_2d": [$A], "label": "cat"}'] * 5) + ']',
     [("cat", A, None, None)]),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(("template", "expected"), [pytest.param(t, e, id=i) for i, t, e in SHAPES])
def test_output_shapes(template, expected, family):
    got = summary(parse(fill(template, family), family))
    assert len(got) == len(expected), got
    for (label, box, point, text), (e_label, e_box, e_point, e_text) in zip(got, expected, strict=True):
        assert (label, text) == (e_label, e_text)
        assert (box is None) == (e_box is None) and (point is None) == (e_point is None)
        if box is not None:
            assert box == pytest.approx(e_box, abs=1e-9)
        if point is not None:
            assert point == pytest.approx(e_point, abs=1e-9)


@pytest.mark.parametrize("family", FAMILIES)
def test_extra_keys_are_kept(family):
    dets = parse(fill('[{"bbox_2d": [$A], "label": "car", "color": "red", "type": "sedan"}]', family), family)
    assert len(dets) == 1 and dets[0].extra == {"color": "red", "type": "sedan"}
    assert dets[0].to_json() == {"label": "car", "bbox_2d": [250, 125, 500, 250], "point_2d": None, "text": None,
                                 "color": "red", "type": "sedan"}


def test_to_json_rounds_to_a_tenth_of_a_pixel():
    det = Detection("x", (1.04, 2.0, 3.15678, 4.999), (5.55, 6.0), "t")
    assert det.to_json() == {"label": "x", "bbox_2d": [1, 2, 3.2, 5], "point_2d": [5.5, 6], "text": "t"}


def test_input_sizes():
    """The INPUT table above is what smart_resize gives at the default budget."""
    for family, (w, h) in INPUT.items():
        spec = family_for(family)
        budget = PixelBudget.from_tokens(spec)
        assert smart_resize(ORIGINAL[1], ORIGINAL[0], factor=spec.factor, min_pixels=budget.min_pixels,
                            max_pixels=budget.max_pixels) == (h, w)


# ---- coordinate maps ----------------------------------------------------------------------------
@pytest.mark.parametrize(("family", "model_point", "original"), [
    ("qwen2_5_vl", (1008, 504), (1000, 500)),
    ("qwen2_5_vl", (126, 63), (125, 62.5)),
    ("qwen2_vl", (1000, 1000), (1000, 500)),
    ("qwen2_vl", (125, 125), (125, 62.5)),
    ("qwen3_vl", (1000, 1000), (1000, 500)),
    ("qwen3_vl", (496, 256), (496, 128)),  # not input pixels: 0..1000 regardless of the 992x512 input
])
def test_coordinate_maps(family, model_point, original):
    kw = {"family": family, "input_size": INPUT[family], "image_size": ORIGINAL}
    assert to_original(model_point, **kw) == pytest.approx(original)
    assert to_model_space(original, **kw) == pytest.approx(model_point)


def test_coordinate_maps_accept_a_family_spec_and_refuse_bad_sizes():
    spec = family_for("qwen2_5_vl")
    assert to_original((1008, 504), family=spec, input_size=(1008, 504), image_size=ORIGINAL) == (1000, 500)
    with pytest.raises(ValueError, match="input_size"):
        to_original((1, 1), family=spec, input_size=(0, 504), image_size=ORIGINAL)
    with pytest.raises(ValueError, match="image_size"):
        parse_grounding("", family=spec, input_size=(1008, 504), image_size=(1000,))


# ---- regressions --------------------------------------------------------------------------------
def test_qwen2_5_coordinates_are_input_pixels_not_per_mille():
    """Bug: community demos divide Qwen2.5-VL pixel coordinates by 1000, squashing boxes on non-1000px images."""
    dets = parse('[{"bbox_2d": [252, 126, 504, 252], "label": "cat"}]', "qwen2_5_vl")
    assert dets[0].box == pytest.approx(A)
    assert dets[0].box != pytest.approx((252, 63, 504, 126))  # what dividing by 1000 gives


def test_qwen2_5_coordinates_are_input_pixels_not_original_pixels():
    """Bug: treating Qwen2.5-VL boxes as original-image pixels ignores the resize (off by input/original)."""
    dets = parse_grounding('[{"bbox_2d": [0, 0, 1400, 700]}]', family="qwen2_5_vl", input_size=(1400, 700),
                           image_size=(4000, 2000))
    assert dets[0].box == pytest.approx((0, 0, 4000, 2000))


def test_qwen3_coordinates_are_per_mille_not_pixels():
    """Bug: Qwen3-VL went back to 0..1000; scaling by the input size (as for Qwen2.5-VL) shifts every box."""
    dets = parse('[{"bbox_2d": [250, 250, 500, 500], "label": "cat"}]', "qwen3_vl")
    assert dets[0].box == pytest.approx(A)


@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_last_box_is_not_completed(family):
    """Bug: json_repair "completes" a list cut by max_new_tokens, turning [x1, y1 into a 2-number box or
    [x1, y1, x2, 8 (for 812) into a wrong box. Every prefix of an answer must parse to a prefix of its items."""
    answer = fill('```json\n[{"bbox_2d": [$A], "label": "cat"}, {"bbox_2d": [$B], "label": "dog"}, '
                  '{"point_2d": [$Px, $Py], "label": "pen"}]\n```', family)
    full = summary(parse(answer, family))
    assert len(full) == 3
    for cut in range(len(answer) + 1):
        got = summary(parse(answer[:cut], family))
        assert got == full[: len(got)], (cut, answer[:cut])


@pytest.mark.parametrize("family", ["qwen2_vl"])
def test_truncated_special_tokens_and_points_keep_complete_items(family):
    """Bug: a box cut inside <|box_start|>...<|box_end|> must not become a box."""
    answer = fill("<|object_ref_start|>cat<|object_ref_end|><|box_start|>$Apairs<|box_end|>"
                  "<|box_start|>$Bpairs<|box_end|>", family)
    full = summary(parse(answer, family))
    for cut in range(len(answer) + 1):
        got = summary(parse(answer[:cut], family))
        assert got == full[: len(got)], (cut, answer[:cut])


def test_truncated_xml_points_keep_complete_points():
    """Bug: a <points> tag cut before its '>' must not yield points from half-written numbers."""
    answer = '<points x1="378" y1="252" x2="252" y2="126" alt="pen">pen</points>'
    full = summary(parse(answer, "qwen2_5_vl"))
    assert len(full) == 2
    for cut in range(len(answer) + 1):
        got = summary(parse(answer[:cut], "qwen2_5_vl"))
        assert got in ([], full), (cut, answer[:cut])


@pytest.mark.parametrize("family", FAMILIES)
def test_truncated_pretty_json_is_not_revived_as_plain_text(family):
    """Bug: the plain-text fallback read the '"bbox_2d": [x1, y1, x2, y2],' line of a cut-off item as a box."""
    answer = fill('```json\n[\n  {\n    "bbox_2d": [$A],\n    "lab', family)
    assert parse(answer, family) == []


@pytest.mark.parametrize("family", FAMILIES)
def test_unescaped_quote_in_ocr_text_keeps_later_lines(family):
    """Bug: an unescaped quote in text_content (5" screen) flipped string tracking and lost every later line."""
    answer = fill('[{"bbox_2d": [$A], "text_content": "5" screen"}, {"bbox_2d": [$B], "text_content": "ok"}, '
                  '{"bbox_2d": [1', family)
    got = summary(parse(answer, family))
    assert [(label, box, point) for label, box, point, _ in got] == [(None, A, None), (None, B, None)]
    assert got[0][3].startswith('5" screen') and got[1][3] == "ok"  # json_repair may keep the stray quote


# Real answers that were read wrongly: (template in the family's coordinates, families, expected summary).
REAL_SHAPES = [
    pytest.param('[{"point_2d": [$Px, $Py], "label": "a"}, {"point_2d": ["$Px, $Py"], "label": "b"}, '
                 '{"point_2d": ["$Bx1, $By1"], "label": "c"}]', FAMILIES,
                 [("a", None, P), ("b", None, P), ("c", None, B[:2])], id="points-as-strings"),
    pytest.param('{"label": "cup", "point_2d": ["$Px, $Py", "$Ax1, $Ay1", "$Bx1, $By1"]}', FAMILIES,
                 [("cup", None, P), ("cup", None, A[:2]), ("cup", None, B[:2])], id="point-list-of-strings"),
    pytest.param('{"label": "cup", "points": [[$Px, $Py], [$Ax1, $Ay1]]}', FAMILIES,
                 [("cup", None, P), ("cup", None, A[:2])], id="points-key"),
    pytest.param('[{"bbox_2d": [$A], "name_en": "cat", "name_zh": "猫"}, {"bbox_2d": [$B], "name_zh": "狗"}, '
                 '{"bbox_2d": [$OUT], "description": "a red car"}]', FAMILIES,
                 [("cat", A, None), ("狗", B, None), ("a red car", WIDE, None)], id="name-keys"),
    pytest.param("<|object_ref_start|>cat<|object_ref_end|><|box_start|>$Apairs<|box_end|>"
                 "<|box_start|>$Bpairs", ("qwen2_vl",), [("cat", A, None), ("cat", B, None)],
                 id="qwen2-box-end-eaten-by-stop-string"),
    pytest.param("<|object_ref_start|>cat<|object_ref_end|><|box_start|>$Apairs\n", ("qwen2_vl",),
                 [("cat", A, None)], id="qwen2-stopped-box-alone"),
]


@pytest.mark.parametrize(("template", "families", "expected"), REAL_SHAPES)
def test_real_answer_shapes(template, families, expected):
    """Regressions from real answers: points written as one string "x, y" each (only the points written as numbers
    survived), several points under one key, labels under name_en / name_zh / description (boxes came back
    unlabelled), and a Qwen2-VL box whose <|box_end|> a stop string removed (the box was dropped)."""
    for family in families:
        got = [(label, box, point) for label, box, point, _ in summary(parse(fill(template, family), family))]
        assert got == [(label, box and pytest.approx(box), point and pytest.approx(point))
                       for label, box, point in expected], family


def test_qwen2_answer_decoded_without_special_tokens():
    """Bug: decoding with skip_special_tokens=True strips Qwen2-VL's <|box_start|> tokens, leaving
    'the cat(250,250),(500,500)'; the boxes must still be found."""
    dets = parse("the cat(250,250),(500,500)(625,750),(875,1000) and a dog(0,0),(100,100)", "qwen2_vl")
    assert summary(dets) == [("the cat", A, None, None), ("the cat", B, None, None),
                             ("a dog", (0, 0, 100, 50), None, None)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("text", [
    "", "   ", "I cannot find any cakes in this image.", "There are 3 cats and 2 dogs.", "```json\n[]\n```",
    '{"answer": "none"}', '[{"label": "cat"}]', "[1] see note", "{unclosed", "]]]}}}", "<points>pen</points>",
    "<|box_start|><|box_end|>", "The year 2024 was 12 months.", "[" * 5000, "{" * 100 + "}" * 100,
    '[{"bbox_2d": [' + "9" * 5000 + ", 1, 2, 3]}]",
])
def test_text_without_coordinates_gives_nothing(text, family):
    assert parse(text, family) == []


_FRAGMENTS = st.sampled_from([
    "[", "]", "{", "}", '"', "'", ",", ":", " ", "\n", "```json\n", "```", '"bbox_2d"', '"point_2d"', '"label"',
    '"text_content"', "NaN", "-", "1e999", "12", "3.5", "1000", "<points", ' x1="3"', ' y1="4"', ">", "</points>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "(1,2),(3,4)", "cat", "\\",
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(), st.lists(_FRAGMENTS, max_size=60).map("".join)),
       family=st.sampled_from(FAMILIES))
def test_any_text_parses_without_exceptions(text, family):
    dets = parse(text, family)
    for d in dets:
        if d.box is not None:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 < x2 <= ORIGINAL[0] and 0 <= y1 < y2 <= ORIGINAL[1]
        if d.point is not None:
            assert 0 <= d.point[0] <= ORIGINAL[0] and 0 <= d.point[1] <= ORIGINAL[1]
    count = count_from_answer(text)
    assert count is None or count >= 0


# ---- round trip ---------------------------------------------------------------------------------
_UNIT = st.floats(0, 1)


@settings(max_examples=200, deadline=None)
@given(family=st.sampled_from(FAMILIES), short=st.integers(20, 6000), ratio=st.floats(1, 150),
       landscape=st.booleans(), max_tokens=st.integers(4, 16384), fenced=st.booleans(),
       boxes=st.lists(st.tuples(_UNIT, _UNIT, _UNIT, _UNIT), min_size=1, max_size=5))
@example(family="qwen2_5_vl", short=6000, ratio=8000 / 6000, landscape=True, max_tokens=16384, fenced=True,
         boxes=[(0, 1, 0, 1), (0.5, 0.5, 0.5, 0.5)])
@example(family="qwen2_5_vl", short=20, ratio=1.5, landscape=True, max_tokens=4, fenced=False,
         boxes=[(0, 1, 0, 1)])
@example(family="qwen3_vl", short=20, ratio=150, landscape=False, max_tokens=1280, fenced=True,
         boxes=[(0.2, 0.3, 0.9, 0.1)])
@example(family="qwen2_vl", short=6000, ratio=8000 / 6000, landscape=True, max_tokens=4, fenced=True,
         boxes=[(0, 0, 0, 0), (1, 1, 1, 1)])
def test_round_trip(family, short, ratio, landscape, max_tokens, fenced, boxes):
    """Original-pixel boxes -> the family's input size -> model coordinates as the model writes them -> back."""
    long_side = min(8000, max(short, round(short * ratio)))
    w, h = (long_side, short) if landscape else (short, long_side)
    spec = family_for(family)
    budget = PixelBudget.from_tokens(spec, max_tokens=max_tokens)
    in_h, in_w = fit_aspect(*smart_resize(h, w, factor=spec.factor, min_pixels=budget.min_pixels,
                                          max_pixels=budget.max_pixels), factor=spec.factor)
    kw = {"family": family, "input_size": (in_w, in_h), "image_size": (w, h)}
    # Models write integers, so a coordinate comes back only to within half a model unit: for 0..1000
    # families one unit is orig_side/1000 px, for Qwen2.5-VL orig_side/input_side px (more than a pixel when
    # the budget shrinks the image). Allow a whole unit, and never less than 1 px.
    unit_x, unit_y = (w / 1000, h / 1000) if spec.coords == "norm1000" else (w / in_w, h / in_h)
    tol_x, tol_y = max(1, unit_x + 1e-6), max(1, unit_y + 1e-6)

    originals, items = [], []
    for i, (a, b, c, d) in enumerate(boxes):
        # At least two units wide and high, so rounding to integers cannot collapse the box.
        min_w, min_h = min(w, 2 * unit_x + 1), min(h, 2 * unit_y + 1)
        x1 = a * (w - min_w)
        x2 = x1 + min_w + b * (w - x1 - min_w)
        y1 = c * (h - min_h)
        y2 = y1 + min_h + d * (h - y1 - min_h)
        originals.append((x1, y1, x2, y2))
        mx1, my1 = (round(v) for v in to_model_space((x1, y1), **kw))
        mx2, my2 = (round(v) for v in to_model_space((x2, y2), **kw))
        if spec.box_syntax == "special_tokens":
            items.append(f"<|object_ref_start|>obj{i}<|object_ref_end|><|box_start|>({mx1},{my1}),({mx2},{my2})"
                         f"<|box_end|>")
        else:
            items.append(f'{{"bbox_2d": [{mx1}, {my1}, {mx2}, {my2}], "label": "obj{i}"}}')
    if spec.box_syntax == "special_tokens":
        answer = "".join(items)
    else:
        answer = "[\n  " + ",\n  ".join(items) + "\n]"
        answer = f"```json\n{answer}\n```" if fenced else answer

    dets = parse_grounding(answer, **kw)
    assert [d.label for d in dets] == [f"obj{i}" for i in range(len(boxes))]
    for det, (x1, y1, x2, y2) in zip(dets, originals, strict=True):
        gx1, gy1, gx2, gy2 = det.box
        assert abs(gx1 - x1) <= tol_x and abs(gx2 - x2) <= tol_x, (det.box, (x1, y1, x2, y2))
        assert abs(gy1 - y1) <= tol_y and abs(gy2 - y2) <= tol_y, (det.box, (x1, y1, x2, y2))


@settings(max_examples=100, deadline=None)
@given(family=st.sampled_from(FAMILIES), x=st.floats(0, 1), y=st.floats(0, 1),
       in_w=st.integers(28, 4000), in_h=st.integers(28, 4000), w=st.integers(1, 8000), h=st.integers(1, 8000))
def test_maps_are_inverse(family, x, y, in_w, in_h, w, h):
    kw = {"family": family, "input_size": (in_w, in_h), "image_size": (w, h)}
    back = to_original(to_model_space((x * w, y * h), **kw), **kw)
    assert math.isclose(back[0], x * w, abs_tol=1e-6) and math.isclose(back[1], y * h, abs_tol=1e-6)


# ---- counting -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "count"), [
    ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cake 1"}]\n```\nThere are 5 cakes in the image.', 5),
    ('```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "cake"}]\n```\nI count 3 red and 2 blue, 5 in total.', 5),
    ('[{"bbox_2d": [1, 2, 3, 4], "label": "cake"}] In total, there are seven cakes.', 7),
    ("Total: 12", 12),
    ("There are 4 apples on 2 plates.", 4),
    ('```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "item 9"}]\n```', None),
    ("I cannot count them.", None),
    ("<|object_ref_start|>cat 2<|object_ref_end|><|box_start|>(1,2),(3,4)<|box_end|> One cat.", 1),
])
def test_count_from_answer(text, count):
    assert count_from_answer(text) == count


# ---- prompts ------------------------------------------------------------------------------------
PROMPT_EXPECTATIONS = {
    # preset: {family: phrases the prompt must contain}
    "Detect": {"qwen2_vl": ["cat, dog", "bounding box"], "qwen2_5_vl": ["cat, dog", "JSON", "bbox_2d", "label"],
               "qwen3_vl": ["cat, dog", "JSON", "bbox_2d", "label"]},
    "Locate": {"qwen2_vl": ["bounding box of the red car"],
               "qwen2_5_vl": ["Locate the red car, output its bbox coordinates using JSON format."],
               "qwen3_vl": ["Locate the red car", "JSON"]},
    "Point": {"qwen2_vl": ["bounding box of the red car"],
              "qwen2_5_vl": ["point to the red car, output its coordinates in XML format <points x y>object</points>"],
              "qwen3_vl": ["the red car", "JSON", "point_2d"]},
    "Count": {"qwen2_vl": ["the red car", "how many"], "qwen2_5_vl": ["the red car", "JSON", "how many"],
              "qwen3_vl": ["the red car", "JSON", "how many"]},
    "Text spotting": {"qwen2_vl": ["text", "line"],
                      "qwen2_5_vl": ["Spotting all the text in the image with line-level, and output in JSON format."],
                      "qwen3_vl": ["line-level", "JSON", "text_content", "bbox_2d"]},
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "Custom"])
def test_build_prompt(preset, family):
    text = " cat,dog ,, cat" if preset == "Detect" else "the red car"
    prompt = build_prompt(preset, text, family)
    # Qwen3.5 writes boxes as Qwen3-VL does (0-1000 JSON): the same prompts.
    for phrase in PROMPT_EXPECTATIONS[preset]["qwen3_vl" if family.startswith("qwen3") else family]:
        assert phrase in prompt, (phrase, prompt)
    if family == "qwen2_vl":
        assert "JSON" not in prompt  # Qwen2-VL answers with its special tokens, not JSON
    assert build_prompt(preset, text, family_for(family)) == prompt  # a FamilySpec works as well as its name


@pytest.mark.parametrize("family", FAMILIES)
def test_custom_prompt_is_the_text_as_is(family):
    assert build_prompt("Custom", "  Find the cat.\n", family) == "  Find the cat.\n"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("preset", sorted(PRESETS_NEEDING_TEXT))
@pytest.mark.parametrize("blank", ["", "   \n", " , ;"])
def test_blank_text_is_a_user_error_naming_the_preset(preset, family, blank):
    if preset != "Detect" and blank == " , ;":
        return  # punctuation is only "blank" for Detect's category list
    with pytest.raises(UserError, match=preset):
        build_prompt(preset, blank, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_count_and_text_spotting_work_without_text(family):
    assert "every item" in build_prompt("Count", "  ", family)
    assert build_prompt("Text spotting", "", family).endswith(".")


def test_unknown_preset_is_a_developer_error():
    with pytest.raises(ValueError, match="preset"):
        build_prompt("Segment", "cat", "qwen2_5_vl")


def test_qwen3_moe_is_asked_like_qwen3():
    assert build_prompt("Point", "the cup", "qwen3_vl_moe") == build_prompt("Point", "the cup", "qwen3_vl")


# ---- drawing ------------------------------------------------------------------------------------
def test_palette_color_is_stable_and_readable():
    assert palette_color("cat") == palette_color("cat") == palette_color(" Cat ")
    colors = {palette_color(name) for name in ("cat", "dog", "car", "person", "cup", "tree")}
    assert len(colors) >= 4
    for color in colors:
        luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
        assert 30 < luminance < 200  # neither lost on white nor on black


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_draw_detections_marks_boxes_and_points(mode):
    image = Image.new(mode, (400, 200), "white")
    dets = [Detection("cat", (40.0, 60.0, 240.0, 160.0), None, None),
            Detection(None, None, (320.0, 100.0), None),
            Detection(None, (250.0, 10.0, 390.0, 40.0), None, "A very long line of text " * 5)]
    out = draw_detections(image, dets)
    assert out is not image and out.size == image.size
    assert image.getpixel((40, 110)) == image.getpixel((0, 199))  # the input is untouched
    rgb = out.convert("RGB")
    white = (255, 255, 255)
    assert rgb.getpixel((40, 110)) != white  # left edge of the box
    assert rgb.getpixel((140, 160)) != white  # bottom edge
    assert rgb.getpixel((320, 100)) != white  # point centre
    assert rgb.getpixel((140, 110)) == white  # inside the box stays clear
    assert rgb.getpixel((0, 199)) == white


def test_draw_detections_puts_each_label_on_a_tag_above_its_box():
    """Regression (issue 15, smaller): boxes were drawn without their labels. The label sits on a filled tag in
    the box's colour just above its top-left corner, with the label's text inked on it."""
    from qvl_core.draw import _color_key, palette_color

    image = Image.new("RGB", (400, 200), "white")
    det = Detection("cat", (40.0, 60.0, 240.0, 160.0), None, None)
    out = draw_detections(image, [det])
    color = palette_color(_color_key(det))
    tag = out.crop((40, 30, 120, 60))  # the band just above the box's top-left corner
    colors = {c for _n, c in tag.getcolors(maxcolors=100_000)}
    assert color in colors and len(colors - {color, (255, 255, 255)}) >= 1  # the tag and its text's ink
    def inked(label: str) -> int:  # non-white pixels in the band above the box: the tag grows with its text
        band = draw_detections(image, [Detection(label, det.box, None, None)]).crop((40, 30, 400, 59))
        return sum(n for n, c in band.getcolors(maxcolors=100_000) if c != (255, 255, 255))

    assert 0 < inked("cat") < inked("cat on the left of the red sofa")


def test_draw_detections_on_tiny_and_empty():
    image = Image.new("RGB", (30, 20), "black")
    out = draw_detections(image, [Detection("a label far too long to fit on a thirty pixel image", (0, 0, 30, 20),
                                            (15, 10), None)])
    assert out.size == (30, 20)
    assert draw_detections(image, []).tobytes() == image.tobytes()


def test_annotated_value():
    image = Image.new("RGB", (1000, 500))
    dets = [Detection("cat", (10.4, 20.6, 300.2, 400.0), None, None),
            Detection(None, None, (500.0, 250.0), None),
            Detection(None, (0.0, 0.0, 100.0, 50.0), None, "EXIT"),
            Detection("pen", None, (0.0, 499.9), None)]
    value_image, boxes = annotated_value(image, dets)
    assert value_image is image
    assert boxes[0] == ((10, 21, 300, 400), "cat")
    (x1, y1, x2, y2), label = boxes[1]
    assert label == "object" and (x1 + x2) / 2 == 500 and (y1 + y2) / 2 == 250
    assert x2 - x1 == pytest.approx(0.015 * 500, abs=1)  # 1.5% of the short side
    assert boxes[2] == ((0, 0, 100, 50), "text: EXIT")
    (x1, y1, x2, y2), label = boxes[3]
    assert label == "pen" and 0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 500
    assert all(isinstance(v, int) for (box, _) in boxes for v in box)


@pytest.mark.parametrize("family", FAMILIES)
def test_text_spotting_does_not_send_leftover_text(family):
    """Regression: Text spotting appended whatever was left in "What to find" (typed for another preset)."""
    assert build_prompt("Text spotting", "red box", family) == build_prompt("Text spotting", "", family)
    assert "red box" not in build_prompt("Text spotting", "red box", family)
