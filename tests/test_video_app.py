"""Video QA end to end: scripted answers with timestamps come out as spans in seconds of the file (trim
included, per family clock), through the tab, /video_qa, the CLI, and a real browser whose chips seek."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file

from qvl_core.media.video import VideoBudget
from qvl_core.tasks.video import PRESETS, ask_video, build_video_prompt
from tests.conftest import as_model_writes
from ui.tabs.video import VideoTab, answer_html

ROOT = Path(__file__).resolve().parent.parent
CLOCK = str(ROOT / "assets" / "clock.mp4")  # 8 s at 10 fps; the ball turns blue at 4 s
ANSWER = "The ball turns blue from 4.0 - 5.0 seconds, and it is red before 00:02.50."
SAMPLING = (256, 0.0, 1.0, 0, 1.05, -1)


def last(gen):
    *_, final = gen
    return final


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"])
def test_spans_are_in_seconds_of_the_file(make_session, family):
    session = make_session(family, as_model_writes(family, ANSWER))
    answer = last(ask_video(session, CLOCK, "When does it turn blue?")).answer
    assert answer.raw == ANSWER and answer.clock_offset == 0.0
    assert [(s.start, s.end) for s in answer.spans] == [(4.0, 5.0), (2.5, None)]
    assert answer.video.fps == pytest.approx(2.0) and answer.video.indices[:3] == [0, 5, 10]


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"])
def test_trimmed_clip_times_map_back_to_the_file(make_session, family):
    """The model's clock starts at the clip (2 s in): its 4.0 s is 6.0 s of the file."""
    session = make_session(family, as_model_writes(family, ANSWER))
    answer = last(ask_video(session, CLOCK, "When?", start=2.0, end=8.0)).answer
    assert answer.video.timestamps[0] == pytest.approx(2.0) and answer.clock_offset == pytest.approx(2.0)
    assert [(s.start, s.end) for s in answer.spans] == [(6.0, 7.0), (4.5, None)]


def test_answer_html_escapes_text_and_makes_chips():
    html = answer_html('At 00:04.00 <img src=x onerror="alert(1)"> happens, until 5 seconds.')
    assert '<img' not in html and "&lt;img" in html
    assert 'class="qvl-chip" data-t="4.000"' in html and 'data-t="5.000"' in html


def test_answer_html_shows_fenced_json_as_code_without_its_fences():
    html = answer_html('Here:\n```json\n[{"start_time": "00:01.00", "end_time": "00:02.00"}]\n```\nDone at 3 seconds.')
    assert "```" not in html and html.count('<pre class="qvl-code">') == 1 and html.count('class="qvl-chip"') == 3
    assert answer_html("```json\n[{\"start_time\": \"00:01.00\"").count("qvl-code") == 1  # still streaming


def test_presets():
    from qvl_core.families import family_for

    fam = family_for("qwen2_5_vl")
    assert "when does the described content occur" in build_video_prompt(PRESETS[1], "a dog jumps", fam)
    assert "json format with 'mm:ss.ff'" in build_video_prompt("Chapters", "", fam)
    with pytest.raises(Exception, match="needs the event to find"):
        build_video_prompt(PRESETS[1], " ", fam)


def test_tab_handler_outputs(make_session):
    chapters = ('```json\n[{"start_time": "00:00.00", "end_time": "00:04.00", "description": "red ball moves"},'
                ' {"start_time": "00:04.00", "end_time": "00:08.00", "description": "blue ball moves"}]\n```')
    tab = VideoTab(make_session("qwen2_5_vl", chapters))
    html, frames, timeline, rows, json_path, summary, raw, prompt, _reasoning = last(
        tab.run(CLOCK, "Chapters", "", "", 2.0, 64, 256, 16384, None, None, *SAMPLING))
    assert html.count('class="qvl-chip"') == 4 and raw == chapters and "Localize a series" in prompt
    assert len(frames) == 2 and frames[0][1].startswith("00:00.0") and frames[1][0].size == (320, 240)
    assert timeline.count("qvl-seg ") == 2
    assert rows == [["00:00.0", "00:04.0", "00:04.0", "red ball moves"],
                    ["00:04.0", "00:08.0", "00:04.0", "blue ball moves"]]
    assert json.loads(Path(json_path).read_text())[1] == {"start": 4.0, "end": 8.0, "text": "blue ball moves"}
    assert "2 time span(s)" in summary and "16 frames" in summary


@pytest.mark.parametrize(("video", "message"), [(None, "Add a video first"), ("fake", "not a video|no readable")])
def test_tab_bad_input(make_session, tmp_path, video, message):
    tab = VideoTab(make_session("qwen2_5_vl", ANSWER))
    if video == "fake":
        video = str(tmp_path / "fake.mp4")
        Path(video).write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    with pytest.raises(gr.Error, match=message):
        last(tab.run(video, "Describe", "", "", 2.0, 64, 256, 16384, None, None, *SAMPLING))


def test_estimate_before_running(make_session):
    from ui.tabs.video import estimate_markdown

    text = estimate_markdown(CLOCK, make_session("qwen2_5_vl"), VideoBudget(fps=2.0))
    assert "8.0 s at 10.00 fps" in text and "16 frames" in text and "visual tokens" in text


def test_video_qa_api(make_session, launch_app):
    demo = launch_app(make_session("qwen2_5_vl", ANSWER))
    text, spans = Client(demo.local_url, verbose=False).predict(
        video=handle_file(CLOCK), question="When does it turn blue?", api_name="/video_qa")
    assert text == ANSWER and spans[0] == {"start": 4.0, "end": 5.0, "text": "The ball turns blue from 4.0 - 5.0 "
                                                                           "seconds, and it is red before 00:02.50."}


def test_cli_video(qvl_cli, ckpt_dir, tmp_path):
    out = tmp_path / "spans.json"
    res = qvl_cli("video", CLOCK, "When?", "--model", str(ckpt_dir("qwen2_5_vl", ANSWER)), "--device", "cpu",
                  "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert res.stdout == ANSWER + "\n" and "16 frames at 2.00 fps" in res.stderr
    assert json.loads(out.read_text())[0]["start"] == 4.0


def test_clicking_a_timestamp_seeks_the_player(make_session, launch_app, artifacts, page):
    url = launch_app(make_session("qwen2_5_vl", ANSWER)).local_url
    page.goto(url)
    page.get_by_role("tab", name="Video QA").click()
    page.wait_for_selector("#video-player", state="visible")
    page.set_input_files("#video-player input[type=file]", CLOCK)
    page.wait_for_selector("#video-player video")
    page.wait_for_selector("#video-estimate >> text=16 frames")
    page.click("#video-run")
    page.wait_for_selector("#video-summary >> text=time span")
    page.locator('#video-answer .qvl-chip[data-t="4.000"]').first.click()
    page.wait_for_function("Math.abs(document.querySelector('#video-player video').currentTime - 4.0) < 0.05")
    assert page.locator("#video-gallery img").count() >= 2  # frames at the answer's times
    page.screenshot(path=str(artifacts / "video.png"), full_page=True)


def test_estimate_counts_the_clip_start_and_end_choose():
    """Regression: the estimate ignored Start/End (a 2-minute video, Start 30, End 90: it counted the whole
    video's frames while the run sampled the clip's)."""
    from types import SimpleNamespace

    from qvl_core.families import family_for
    from ui.tabs.video import estimate_markdown

    session = SimpleNamespace(family=family_for("qwen2_5_vl"))
    budget = VideoBudget(fps=2.0, max_frames=64)
    assert "**16 frames**" in estimate_markdown(CLOCK, session, budget)  # 8 s at 2 fps
    clip = estimate_markdown(CLOCK, session, budget, 2.0, 6.0)
    assert "**8 frames**" in clip and "4.0 s clip (00:02.0–00:06.0 of 8.0 s)" in clip


def test_estimate_says_an_image_renamed_mp4_is_not_a_video(tmp_path):
    """Regression: a PNG named .mp4 got "Clip start 0 s is past the end of the video, which lasts 0.00 s"."""
    from types import SimpleNamespace

    from PIL import Image

    from qvl_core.families import family_for
    from ui.tabs.video import estimate_markdown

    fake = tmp_path / "holiday.mp4"
    Image.new("RGB", (64, 48), "red").save(fake, format="PNG")
    text = estimate_markdown(str(fake), SimpleNamespace(family=family_for("qwen2_5_vl")), VideoBudget())
    assert "'holiday.mp4' is not a video this app can read" in text and "past the end" not in text


def test_chips_say_the_file_time_on_a_trimmed_clip_and_mark_times_past_the_end():
    """Regression: on a clip starting at 30 s a chip "4.0 seconds" jumped to 00:34.0 with no hint why, and a
    time past the end of the video clamped silently."""
    html = answer_html("It happens at 4.0 seconds and again at 99 seconds.", offset=30.0, duration=60.0)
    assert 'data-t="34.000"' in html and "00:04.0 into the clip = 00:34.0 in the video" in html
    assert "qvl-chip-past" in html and 'data-t="60.000"' in html and "past the end of the video (01:00.0)" in html


def test_timeline_axis_is_labelled_in_the_chips_format():
    """Regression: the timeline had no label and its axis mixed "0:00" with "02:00.0"."""
    from types import SimpleNamespace

    from qvl_core.parse.timespans import TimeSpan
    from ui.tabs.video import timeline_html

    answer = SimpleNamespace(video=SimpleNamespace(duration=120.0), spans=(TimeSpan(0.0, 60.0, "a"),))
    html = timeline_html(answer)
    assert "Timeline of the video" in html and "<span>00:00.0</span>" in html and "<span>02:00.0</span>" in html
    assert "0:00<" not in html.replace("00:00.0<", "")
