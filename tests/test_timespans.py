"""Tier 1: times in video answers (qvl_core.parse.timespans) — every format Qwen-VL emits, and what is not a time."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qvl_core.parse.timespans import (
    TimeSpan,
    format_timestamp,
    link_timestamps,
    parse_time_spans,
    parse_timestamp,
    spans_to_chapters,
)


def spans(text: str, **kw) -> list[tuple[float, float | None, str]]:
    return [(s.start, s.end, s.text) for s in parse_time_spans(text, **kw)]


DENSE = (
    '[\n  {"start_time": "00:00.00", "end_time": "00:21.80", "description": "A man opens the door."},\n'
    '  {"start_time": "00:21.80", "end_time": "00:35.20", "description": "He walks in."},\n'
)
GROUNDING = "The given query happens in 64.0 - 72.0 seconds."
GROUNDING_REVERSED = "The given query happens in 72.0 - 64.0 seconds."
DENSE_SPANS = [(0.0, 21.8, "A man opens the door."), (21.8, 35.2, "He walks in.")]

# ---- every format, with exact spans --------------------------------------------------------------------------------
CASES = [
    # Qwen2.5-VL temporal grounding
    (GROUNDING, [(64.0, 72.0, GROUNDING)]),
    (GROUNDING_REVERSED, [(64.0, 72.0, GROUNDING_REVERSED)]),
    ("It happens in 12.0-18.0s.", [(12.0, 18.0, "It happens in 12.0-18.0s.")]),
    ("(15.2 ~ 18.9 s)", [(15.2, 18.9, "(15.2 ~ 18.9 s)")]),
    # mm:ss.ff, h:mm:ss, h:mm:ss.ff
    ("01:32.40 - 01:35.60", [(92.4, 95.6, "01:32.40 - 01:35.60")]),
    ("The event happens from 01:32.40 to 01:35.60.", [(92.4, 95.6, "The event happens from 01:32.40 to 01:35.60.")]),
    ("It occurs between 00:10.50 and 00:20.00 in the clip.",
     [(10.5, 20.0, "It occurs between 00:10.50 and 00:20.00 in the clip.")]),
    ("The goal is scored at 1:02:03.", [(3723.0, None, "The goal is scored at 1:02:03.")]),
    ("Between 1:02:03.25 and 1:02:10.75 the crowd cheers.",
     [(3723.25, 3730.75, "Between 1:02:03.25 and 1:02:10.75 the crowd cheers.")]),
    ("The song starts at 1:30.", [(90.0, None, "The song starts at 1:30.")]),
    ("at 00:12 the door opens.", [(12.0, None, "at 00:12 the door opens.")]),
    # seconds with units (training data: "3.2s", "12:34.56s")
    ("The dog barks at 12s.", [(12.0, None, "The dog barks at 12s.")]),
    ("It lasts until 12.5 seconds.", [(12.5, None, "It lasts until 12.5 seconds.")]),
    ("A flash at 3.2s.", [(3.2, None, "A flash at 3.2s.")]),
    ("12:34.56s: the car stops.", [(754.56, None, "the car stops.")]),
    ("Look at 4 sec and 7 secs.", [(4.0, None, "Look at 4 sec and 7 secs."), (7.0, None, "Look at 4 sec and 7 secs.")]),
    # range phrases: "X to Y", "from X to Y", "between X and Y", en/em dash, "~", "-->"
    ("The man jumps 12s to 15s into the video.", [(12.0, 15.0, "The man jumps 12s to 15s into the video.")]),
    ("from 12 to 15 seconds", [(12.0, 15.0, "from 12 to 15 seconds")]),
    ("Then between 20 and 25 seconds a bird sings.", [(20.0, 25.0, "Then between 20 and 25 seconds a bird sings.")]),
    ("12 - 15 s: a bird lands", [(12.0, 15.0, "a bird lands")]),
    ("00:10–00:20: chopping onions", [(10.0, 20.0, "chopping onions")]),
    ("00:10 — 00:20 the chef plates", [(10.0, 20.0, "00:10 — 00:20 the chef plates")]),
    ("It takes 1 to 2 minutes.", [(60.0, 120.0, "It takes 1 to 2 minutes.")]),
    ("00:00:01,500 --> 00:00:04,000", [(1.5, 4.0, "00:00:01,500 --> 00:00:04,000")]),
    # compounds
    ("At 1m30s the lights go out.", [(90.0, None, "At 1m30s the lights go out.")]),
    ("At 1 min 30 s the lights go out.", [(90.0, None, "At 1 min 30 s the lights go out.")]),
    ("Around 2 minutes and 5 seconds in, he sits.", [(125.0, None, "Around 2 minutes and 5 seconds in, he sits.")]),
    ("The clip is 1h 2m 3s long.", [(3723.0, None, "The clip is 1h 2m 3s long.")]),
    # Qwen3-VL frame markers
    ("<12.3 seconds> A man walks in.", [(12.3, None, "A man walks in.")]),
    ("Frames: <0.0 seconds><2.0 seconds>",
     [(0.0, None, "Frames: <0.0 seconds><2.0 seconds>"), (2.0, None, "Frames: <0.0 seconds><2.0 seconds>")]),
    # several times, lists, de-duplication
    ("He enters at 00:05 and leaves at 00:40.",
     [(5.0, None, "He enters at 00:05 and leaves at 00:40."), (40.0, None, "He enters at 00:05 and leaves at 00:40.")]),
    ("It happens in 64.0 - 72.0 seconds. So: 64.0 - 72.0 seconds.",
     [(64.0, 72.0, "It happens in 64.0 - 72.0 seconds.")]),
    ("- 00:00 - 00:12: intro\n- 00:12 - 00:30: cooking", [(0.0, 12.0, "intro"), (12.0, 30.0, "cooking")]),
    ("1. **[00:40]** three\n2. (00:50) four", [(40.0, None, "three"), (50.0, None, "four")]),
    # dense-caption JSON
    ("```json\n" + DENSE + "]\n```", DENSE_SPANS),
    ("Here are the events:\n```json\n" + DENSE + "]\n```\nHope this helps.", DENSE_SPANS),
    (DENSE + "]", DENSE_SPANS),
    ('[{"start_time": 0, "end_time": 21.8, "event": "intro"}]', [(0.0, 21.8, "intro")]),
    ('[{"start": "12.5s", "end": "15s", "caption": " a cat "}]', [(12.5, 15.0, "a cat")]),
    ('[{"timestamp": "00:05 - 00:09", "text": "wave"}]', [(5.0, 9.0, "wave")]),
    ('[{"timestamp": [5, 9.5], "description": "wave"}]', [(5.0, 9.5, "wave")]),
    ('{"events": [{"start_time": "00:01.00", "end_time": "00:02.00", "description": "a"}]}', [(1.0, 2.0, "a")]),
    ("[{'start_time': '00:01.00', 'end_time': '00:02.00', 'description': 'x'}]", [(1.0, 2.0, "x")]),
    ('[{"start_time": "00:09.00", "end_time": "00:03.00", "description": "reversed"}]', [(3.0, 9.0, "reversed")]),
    ('[{"start_time": "00:03.00", "description": "no end"}]', [(3.0, None, "no end")]),
    # Qwen3-VL time-keyed dicts
    ('{"00:23.00 - 00:48.00": "A dog runs.", "00:48.00 - 01:10.00": "It sleeps."}',
     [(23.0, 48.0, "A dog runs."), (48.0, 70.0, "It sleeps.")]),
    ('```json\n[{"00:23.00 - 00:48.00": "A dog runs."}, {"00:48.00 - 01:10.00": "It sleeps."}]\n```',
     [(23.0, 48.0, "A dog runs."), (48.0, 70.0, "It sleeps.")]),
    ('{"00:05.00": {"description": "a flash"}}', [(5.0, None, "a flash")]),
    # JSON that holds prose, and prose around JSON, in order of appearance
    ('{"answer": "It happens at 00:12."}', [(12.0, None, "It happens at 00:12.")]),
    ('At 00:01 it starts.\n[{"start_time": 5, "end_time": 6, "event": "e"}]\nIt ends at 00:09.',
     [(1.0, None, "At 00:01 it starts."), (5.0, 6.0, "e"), (9.0, None, "It ends at 00:09.")]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[c[0][:40] for c in CASES])
def test_formats(text, expected):
    assert spans(text) == expected


def test_at_least_forty_format_cases():
    assert len(CASES) >= 40


# ---- not times -----------------------------------------------------------------------------------------------------
NOT_TIMES = [
    "", "3 people", "version 2.5", "1080p", "in 2024", "1,000 boxes", "Picture 2", "The 1990s were great.",
    "the '80s and the 90s", "Mix 3 to 5 eggs.", "between 3 and 5 people", "2 - 3", "ratio 16:9", "at 10:30 am",
    "5m away", "it weighs 2.5 kg", "H264 codec", "50% off", "2024-01-02", "3 sheep", "Section 2.5 - 3.0",
    "[12.0, 18.0]", "1080p - 720p", "Chapter 3: Intro", "v2.5s", "1:2:3", "12:75",
    "John saw 4 cats, 2 dogs and 7 birds in frame 12 of 30.",
    '[{"bbox_2d": [10, 20, 30, 40], "label": "cat"}]', '{"start_time": "soon", "description": "later"}',
]


@pytest.mark.parametrize("text", NOT_TIMES)
def test_not_times(text):
    """Ordinary numbers need a unit, a colon form or a range with a unit before they count as times."""
    assert parse_time_spans(text) == []


def test_negative_and_nan_are_dropped():
    assert spans("from -5 to 3 seconds") == []
    assert spans("Seek to -12s.") == []
    text = '[{"start_time": -5, "end_time": 3, "event": "a"}, {"start_time": 4, "end_time": 6, "event": "b"}]'
    assert spans(text) == [(4.0, 6.0, "b")]
    assert spans('[{"start_time": NaN, "end_time": 2, "event": "x"}]') == []


# ---- duration ------------------------------------------------------------------------------------------------------
def test_duration_clamps_ends_and_drops_late_starts():
    text = "It runs 00:50 - 01:30. Later at 02:00. Also 01:00."
    assert spans(text, duration=60) == [
        (50.0, 60.0, "It runs 00:50 - 01:30."),
        (60.0, None, "Also 01:00."),
    ]
    assert spans(text) == [
        (50.0, 90.0, "It runs 00:50 - 01:30."),
        (120.0, None, "Later at 02:00."),
        (60.0, None, "Also 01:00."),
    ]


def test_duration_applies_to_json():
    assert spans(DENSE + "]", duration=30.0) == [(0.0, 21.8, "A man opens the door."), (21.8, 30.0, "He walks in.")]
    assert spans(DENSE + "]", duration=10.0) == [(0.0, 10.0, "A man opens the door.")]


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, "60", True])
def test_bad_duration_is_a_developer_error(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_time_spans("at 00:12", duration=bad)


# ---- truncated JSON ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cut", [
    '{"start_time": "00:3',
    '{"start_time": "00:35.20", "end_time": "00:4',
    '{"start_time": "00:35.20", "end_time": "00:40.00", "description": "He sits do',
    '{"start_time": "00:35.20", "end_time": "00:40.00", "description": "He sits down."',
    "{",
    "",
])
def test_json_truncated_mid_list_keeps_complete_items(cut):
    """max_new_tokens can end the answer anywhere: only items that were fully written are kept."""
    assert spans("```json\n" + DENSE + "  " + cut) == DENSE_SPANS


def test_json_truncated_inside_wrapper_object():
    text = '{"events": [{"start_time": 1, "end_time": 2, "event": "a"}, {"start_time": 3, "end_time": 4, "ev'
    assert spans(text) == [(1.0, 2.0, "a")]


@pytest.mark.parametrize(("text", "expected"), [
    ('{"00:23.00 - 00:48.00": "A dog runs.", "00:48.00 - 01:10.00": "It sl', [(23.0, 48.0, "A dog runs.")]),
    ('{"00:23.00 - 00:48.00": "A dog runs.", "00:48.00 - 01:', [(23.0, 48.0, "A dog runs.")]),
    ('{"00:23.00 - 00:48.00": "A dog runs.", "00:48.00 - 01:10.00": "It sleeps."', [
        (23.0, 48.0, "A dog runs."), (48.0, 70.0, "It sleeps.")]),
    ('[{"00:23.00 - 00:48.00": "A dog runs."}, {"00:48.00 - 01:10.00": "It', [(23.0, 48.0, "A dog runs.")]),
])
def test_qwen3_dict_truncated(text, expected):
    assert spans(text) == expected


def test_json_trailing_commas_and_fence_without_language():
    text = '```\n{"00:01.00 - 00:02.00": "a",\n "00:02.00 - 00:03.00": "b",\n}\n```'
    assert spans(text) == [(1.0, 2.0, "a"), (2.0, 3.0, "b")]


# ---- parse_timestamp -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("token", "seconds"), [
    ("01:32.40", 92.4), ("1:02:03", 3723.0), ("1:02:03.25", 3723.25), ("12:34.56s", 754.56), ("12.5", 12.5),
    ("12s", 12.0), ("12.5 seconds", 12.5), ("3.2s", 3.2), ("5m", 300.0), ("2 hours", 7200.0), ("1h30m", 5400.0),
    ("<12.3 seconds>", 12.3), ("  00:12 ", 12.0), ("00:00:01,500", 1.5), ("0", 0.0),
    ("abc", None), ("", None), ("-5", None), ("00:12 - 00:20", None), ("1990s", None), ("12:75", None),
    ("1,000", None), ("1080p", None), ("nan", None), ("inf seconds", None), ("12 apples", None),
])
def test_parse_timestamp(token, seconds):
    assert parse_timestamp(token) == seconds


def test_parse_timestamp_never_raises_on_non_strings():
    assert parse_timestamp(None) is None  # type: ignore[arg-type]
    assert parse_timestamp(12) is None  # type: ignore[arg-type]


# ---- format_timestamp and chapters ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("seconds", "label"), [
    (0, "00:00.0"), (92.4, "01:32.4"), (12.25, "00:12.3"), (59.96, "01:00.0"), (3599.94, "59:59.9"),
    (3599.96, "1:00:00"), (3600, "1:00:00"), (3725.4, "1:02:05"), (36000, "10:00:00"),
])
def test_format_timestamp(seconds, label):
    assert format_timestamp(seconds) == label


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, None, "12"])
def test_format_timestamp_rejects_non_times(bad):
    with pytest.raises(ValueError, match="seconds"):
        format_timestamp(bad)


def test_spans_to_chapters():
    rows = spans_to_chapters([TimeSpan(92.4, 95.6, "chop"), TimeSpan(3725.0, None, "end")])
    assert rows == [
        {"start": "01:32.4", "end": "01:35.6", "duration": "00:03.2", "text": "chop"},
        {"start": "1:02:05", "end": "", "duration": "", "text": "end"},
    ]
    assert spans_to_chapters([]) == []


def test_to_json_round_trips_through_json():
    span = parse_time_spans("The given query happens in 64.0 - 72.0 seconds.")[0]
    assert json.loads(json.dumps(span.to_json())) == {
        "start": 64.0, "end": 72.0, "text": "The given query happens in 64.0 - 72.0 seconds."}


# ---- link_timestamps -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "segments"), [
    ("The given query happens in 64.0 - 72.0 seconds.", [
        ("The given query happens in ", None), ("64.0", 64.0), (" - ", None), ("72.0 seconds", 72.0), (".", None)]),
    ("01:32.40 - 01:35.60", [("01:32.40", 92.4), (" - ", None), ("01:35.60", 95.6)]),
    ("<12.3 seconds> A man", [("<12.3 seconds>", 12.3), (" A man", None)]),
    ("3 people in 1080p", [("3 people in 1080p", None)]),
    ('{"00:23.00 - 00:48.00": "A"}', [('{"', None), ("00:23.00", 23.0), (" - ", None), ("00:48.00", 48.0),
                                      ('": "A"}', None)]),
    ('[{"start_time": 12.5, "end_time": 15}]', [('[{"start_time": ', None), ("12.5", 12.5), (', "end_time": ', None),
                                               ("15", 15.0), ("}]", None)]),
    ("", []),
])
def test_link_timestamps(text, segments):
    assert link_timestamps(text) == segments


def test_link_timestamps_only_links_given_spans():
    text = "It runs 00:50 - 01:30. Later at 02:00."
    kept = parse_time_spans(text, duration=100)
    assert link_timestamps(text, kept) == [
        ("It runs ", None), ("00:50", 50.0), (" - ", None), ("01:30", 90.0), (". Later at 02:00.", None)]
    assert link_timestamps(text, []) == [(text, None)]


# ---- properties ----------------------------------------------------------------------------------------------------
JSONISH = st.text(alphabet=st.sampled_from(list('[]{}":,0123456789.- smh\n`<>abeijnorstuwxz_\'–')), max_size=120)
ANY_TEXT = st.one_of(st.text(max_size=200), JSONISH)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.one_of(st.none(), st.floats(min_value=0, max_value=1e5)))
def test_parse_never_raises_and_spans_are_sane(text, duration):
    result = parse_time_spans(text, duration=duration)
    seen = set()
    for span in result:
        assert math.isfinite(span.start) and span.start >= 0
        assert span.end is None or (math.isfinite(span.end) and span.start <= span.end)
        if duration is not None:
            assert span.start <= duration and (span.end is None or span.end <= duration)
        assert span.text == span.text.strip()
        assert (span.start, span.end) not in seen
        seen.add((span.start, span.end))


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
def test_link_segments_rebuild_the_text(text):
    segments = link_timestamps(text)
    assert "".join(s for s, _ in segments) == text
    assert all(s for s, _ in segments)
    kept = parse_time_spans(text)
    assert "".join(s for s, _ in link_timestamps(text, kept)) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 359_999), st.integers(0, 359_999))
def test_mmss_ff_ranges_round_trip(a, b):
    def mmss(hundredths: int) -> str:
        minutes, rest = divmod(hundredths, 6000)
        return f"{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"

    got = parse_time_spans(f"The event happens in {mmss(a)} - {mmss(b)}.")
    lo, hi = sorted((a, b))
    assert [(s.start, s.end) for s in got] == [(lo / 100, hi / 100)]


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_format_timestamp_reads_back_close(seconds):
    label = format_timestamp(seconds)
    back = parse_timestamp(label)
    assert back is not None and abs(back - seconds) <= 0.5


# ---- Chinese units -------------------------------------------------------------------------------------------------
CHINESE = [
    ("<5.6秒>", [(5.6, None, "<5.6秒>")]),
    ("该事件发生在 5.6 秒到 9.2 秒之间。", [(5.6, 9.2, "该事件发生在 5.6 秒到 9.2 秒之间。")]),
    ("开头。从1分30秒到2分钟15秒，一个人开门。然后在<12.5秒>关门。",
     [(90.0, 135.0, "从1分30秒到2分钟15秒，一个人开门。"), (12.5, None, "然后在<12.5秒>关门。")]),
    ("0秒至10秒：开门\n10秒至1分钟：走进房间", [(0.0, 10.0, "开门"), (10.0, 60.0, "走进房间")]),
    ("视频长1小时2分钟。", [(3720.0, None, "视频长1小时2分钟。")]),
    ("在12.5秒钟时出现", [(12.5, None, "在12.5秒钟时出现")]),
]


@pytest.mark.parametrize(("text", "expected"), CHINESE, ids=[c[0][:20] for c in CHINESE])
def test_chinese_units(text, expected):
    """Regression: times with Chinese units (`<5.6秒>`, `1分30秒`, `小时`) gave no span: the units were unknown and
    a number right after a Han character was not allowed to start a time."""
    assert spans(text) == expected


@pytest.mark.parametrize(("score", "time", "seconds"), [("他得了5分。", "他用了5分钟。", 300.0),
                                                        ("3时的会议", "3小时的会议", 10800.0)])
def test_chinese_lone_score_and_hour_are_not_times(score, time, seconds):
    """A lone 分 is also a score and a lone 时 an hour of the day: like 'm' and 'h', only inside a compound;
    the unambiguous 分钟 and 小时 are times."""
    assert parse_time_spans(score) == []
    assert spans(time) == [(seconds, None, time)]
