"""Tier 3, real browser: the Grounding and Video QA paths around the main flow (issue 15): errors after a good
run, the estimate of a trimmed clip, a picture renamed .mp4; screenshots at desktop and phone width."""

from __future__ import annotations

from PIL import Image

from tests.browser import open_tab, save_screenshot
from tests.conftest import ROOT
from tests.test_browser_tabs import VIDEO_ANSWER
from tests.test_grounding_app import ORIGINAL, scripted_answer

CLOCK = str(ROOT / "assets" / "clock.mp4")
# An output's "Error" badge (Gradio's status tracker); the toast's own title is not inside one.
BADGES = "[data-testid='status-tracker'] .error"


def test_grounding_error_after_a_good_run_is_one_toast_and_clears_the_result(make_session, launch_app, tmp_path,
                                                                              page):
    """Regression: a non-image after a good run gave six red "Error" badges (one on the editable prompt) over
    the previous "2 found" result."""
    photo, fake = tmp_path / "photo.png", tmp_path / "holiday.png"
    img = Image.new("RGB", ORIGINAL, (240, 240, 240))
    img.paste((200, 30, 30), (250, 125, 500, 375))
    img.save(photo)
    fake.write_text("this is not a picture")
    url = launch_app(make_session("qwen2_5_vl", scripted_answer("qwen2_5_vl"))).local_url
    open_tab(page, url, "Grounding", "#ground-image")
    page.set_input_files("#ground-image input[type=file]", str(photo))
    page.fill("#ground-text textarea", "red box")
    page.click("#ground-run")
    page.wait_for_selector("#ground-summary >> text=2 found")
    page.wait_for_selector("#ground-annotated img")
    save_screenshot(page, "issue15-grounding-labelled", full_page=True)
    page.set_input_files("#ground-image input[type=file]", str(fake))
    page.click("#ground-run")
    toast = page.locator("[data-testid='toast-body']").filter(has_text="holiday.png")
    toast.wait_for(state="visible")
    page.wait_for_function("!document.querySelector('#ground-summary').innerText.includes('2 found')")
    # Once: the note under the prompt said the same words as the toast (issue 15, Grounding note).
    page.wait_for_function("!document.querySelector('#ground-resolution').innerText.includes('holiday.png')")
    assert page.locator("[data-testid='toast-body']").count() == 1
    assert page.locator(BADGES).count() == 0
    assert page.locator("#ground-annotated img").count() == 0
    save_screenshot(page, "issue15-grounding-error-desktop", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    save_screenshot(page, "issue15-grounding-error-phone", full_page=True)


def test_video_estimate_follows_start_end_and_a_picture_is_not_a_video(make_session, launch_app, tmp_path, page):
    """Regression: the estimate ignored Start/End; a PNG renamed .mp4 got "Clip start 0 s is past the end of the
    video, which lasts 0.00 s"; a failed run left Error badges over the previous answer."""
    url = launch_app(make_session("qwen2_5_vl", VIDEO_ANSWER)).local_url
    open_tab(page, url, "Video QA", "#video-player")
    page.get_by_label("Chapters").check()
    page.set_input_files("#video-player input[type=file]", CLOCK)
    page.wait_for_selector("#video-estimate >> text=16 frames")
    page.get_by_text("Sampling and budget").click()
    page.get_by_label("Start (s)").fill("2")
    page.get_by_label("End (s)").fill("6")
    page.get_by_label("End (s)").press("Tab")
    page.wait_for_selector("#video-estimate >> text=8 frames")
    assert "4.0 s clip" in page.locator("#video-estimate").inner_text()
    page.click("#video-run")
    page.wait_for_selector("#video-summary >> text=time span")
    assert "Timeline of the video" in page.locator("#video-timeline").inner_text()
    save_screenshot(page, "issue15-video-clip-desktop", full_page=True)

    fake = tmp_path / "holiday.mp4"
    Image.new("RGB", (64, 48), "red").save(fake, format="PNG")
    page.get_by_label("Start (s)").fill("")
    page.get_by_label("End (s)").fill("")
    page.locator("#video-player button[aria-label='Clear']").first.click()
    page.set_input_files("#video-player input[type=file]", str(fake))
    page.wait_for_selector("#video-estimate >> text=not a video this app can read")
    assert "past the end" not in page.locator("#video-estimate").inner_text()
    page.click("#video-run")
    page.locator("[data-testid='toast-body']").filter(has_text="holiday.mp4").wait_for(state="visible")
    page.wait_for_function("!document.querySelector('#video-summary').innerText.includes('time span')")
    assert page.locator(BADGES).count() == 0
    page.set_viewport_size({"width": 390, "height": 844})
    save_screenshot(page, "issue15-video-error-phone", full_page=True)


# A Chapters answer whose prose repeats its JSON: each span must still be one row, one bar and one frame.
REPEATING_CHAPTERS = VIDEO_ANSWER + "\nThe ball is red from 00:00 to 00:04 and turns blue at 00:04."


def test_mp4v_video_plays_in_the_player_and_chips_seek_it_in_dark_mode(make_session, launch_app, tmp_path,
                                                                       chromium):
    """Regression: an mp4v (MPEG-4 Part 2) MP4 showed an empty player ("Video not playable") and chips seeked a
    blank player; chapters repeated in the answer's prose came back as extra table rows; in dark mode the
    timeline stayed a light bar and ".dark .qvl-chip" painted every bar the same dark blue."""
    from tests.test_video_display import stream_info, write_video

    clip = write_video(tmp_path / "camera.mp4", "mpeg4", frames=80, rate=10, size=(320, 240))
    assert stream_info(clip).codec == "mpeg4"
    url = launch_app(make_session("qwen2_5_vl", REPEATING_CHAPTERS)).local_url
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, color_scheme="dark")
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        open_tab(page, url, "Video QA", "#video-player")
        page.get_by_label("Chapters").check()
        page.set_input_files("#video-player input[type=file]", str(clip))
        page.wait_for_selector("#video-display-note >> text=converted copy")
        page.wait_for_function("(document.querySelector('#video-player video') || {}).videoWidth > 0")
        assert page.evaluate("document.querySelector('#video-player video').videoWidth") == 320
        page.wait_for_selector("#video-estimate >> text=16 frames")  # the original's length, 8 s
        page.click("#video-run")
        page.wait_for_selector("#video-summary >> text=2 time span(s)")
        assert page.locator("#video-timeline .qvl-seg").count() == 2
        page.wait_for_function("document.querySelector('#video-table').innerText.includes('the ball turns blue')")
        table = page.locator("#video-table").inner_text()
        assert table.count("turns blue") == 1, table  # the prose's "turns blue at 00:04" is no row of its own
        page.locator("#video-answer .qvl-chip[data-t='4.000']").first.click()
        page.wait_for_function("Math.abs(document.querySelector('#video-player video').currentTime - 4) < 0.05")
        assert page.evaluate("document.querySelector('#video-player video').videoWidth") == 320
        colours = page.evaluate("""() => {
            const bg = el => getComputedStyle(el).backgroundColor;
            return {track: bg(document.querySelector('#video-timeline .qvl-timeline')),
                    bars: [...document.querySelectorAll('#video-timeline .qvl-seg')].map(bg)};
        }""")
        assert colours["track"] == "rgb(43, 48, 59)", colours
        assert len(set(colours["bars"])) == 2, colours
        page.locator("#video-timeline").scroll_into_view_if_needed()
        save_screenshot(page, "issue15-video-mp4v-dark-desktop", full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.locator("#video-timeline").scroll_into_view_if_needed()
        save_screenshot(page, "issue15-video-mp4v-dark-phone", full_page=True)
    finally:
        context.close()
