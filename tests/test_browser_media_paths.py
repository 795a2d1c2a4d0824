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
