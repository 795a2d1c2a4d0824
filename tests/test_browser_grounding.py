"""Tier 3, real browser: the Grounding tab runs a preset and shows the annotated image, table and count."""

from __future__ import annotations

from tests.browser import open_tab, save_screenshot
from tests.test_grounding_app import ORIGINAL, scripted_answer


def test_grounding_tab_draws_detections(make_session, launch_app, tmp_path, page):
    from PIL import Image

    photo = tmp_path / "photo.png"
    img = Image.new("RGB", ORIGINAL, (240, 240, 240))
    img.paste((200, 30, 30), (250, 125, 500, 375))
    img.save(photo)
    url = launch_app(make_session("qwen2_5_vl", scripted_answer("qwen2_5_vl"))).local_url
    open_tab(page, url, "Grounding", "#ground-image")
    page.set_input_files("#ground-image input[type=file]", str(photo))
    page.wait_for_selector("text=The model will see this image as 1008×504 px")
    page.fill("#ground-text textarea", "red box")
    page.wait_for_function("document.querySelector('#ground-prompt textarea').value.includes('red box')")
    page.click("#ground-run")
    page.wait_for_selector("#ground-summary >> text=2 found")
    assert page.locator("#ground-annotated img").count() >= 1
    # The labels are drawn on the image itself (outlines and tags, no tinted overlay with a legend).
    assert page.locator("#ground-annotated img").first.evaluate("img => img.naturalWidth") == 1000
    assert "250" in page.locator("#ground-table").inner_text()
    save_screenshot(page, "grounding", full_page=True)  # the README's screenshot of this tab
