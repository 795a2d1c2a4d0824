"""Agent tab in Chromium (issue 17): a two-step task on screenshots, a bad file as one toast that keeps the
trajectory, and the live browser: a scripted model clicks a local page's button through the tab, counted by the
page's own server. Desktop, phone and dark."""

from __future__ import annotations

import pytest

from tests.browser import BADGES, save_screenshot
from tests.test_agent_app import (
    LocalSite,
    click_answer,
    live_click_answer,
    screenshot,  # noqa: F401 - a fixture: the same screenshot as the handler tests
)
from ui.config import ServeConfig
from ui.tabs.agent import LIVE_OFF

# The trajectory table's steps, by the action each row names.
ROWS = "document.querySelector('#agent-table').innerText.split('left_click').length - 1"


def _agent(page, url: str, sub: str | None = None) -> None:
    page.goto(url)
    page.wait_for_selector("#qvl-header")
    page.get_by_role("tab", name="Agent").click()
    if sub:
        page.get_by_role("tab", name=sub).click()


@pytest.mark.parametrize("viewport, dark", [("desktop", False), ("phone", True)])
def test_two_steps_on_screenshots_then_a_bad_file_keeps_the_trajectory(make_session, launch_app, open_page,
                                                                        screenshot, tmp_path, viewport, dark):  # noqa: F811
    demo = launch_app(make_session("qwen3_vl", click_answer("qwen3_vl")))
    page = open_page(viewport, dark=dark)
    _agent(page, demo.local_url)
    page.wait_for_selector("#agent-task", state="visible")
    page.set_input_files("#agent-screenshot input[type=file]", screenshot)
    page.fill("#agent-task textarea", "Press the blue button")
    page.click("#agent-run")
    page.wait_for_selector("#agent-summary >> text=Step 1: left_click at", timeout=120_000)
    assert "on its 1000×1000 screen" in page.locator("#agent-summary").inner_text()
    page.click("#agent-run")  # the same screenshot again: the task goes on
    page.wait_for_selector("#agent-summary >> text=Step 2: left_click at", timeout=120_000)
    page.wait_for_function(ROWS + " === 2")
    page.wait_for_selector("#agent-gallery img")
    # The desktop one is the README's (docs/agent.png with QVL_UPDATE_SCREENSHOTS=1).
    save_screenshot(page, "agent" if viewport == "desktop" else f"agent-steps-{viewport}-dark", full_page=True)
    # A file that is not an image: one toast naming it, no Error badges, the two steps still there.
    fake = tmp_path / "next.png"
    fake.write_text("not a png")
    page.set_input_files("#agent-screenshot input[type=file]", str(fake))
    page.click("#agent-run")
    toast = page.locator("[data-testid='toast-body']").filter(has_text="not an image").first
    toast.wait_for(state="visible", timeout=60_000)
    assert page.evaluate(BADGES) == 0
    assert page.evaluate(ROWS) == 2
    page.click("#agent-new")
    page.wait_for_function("() => !document.querySelector('#agent-summary').innerText.includes('Step')")
    assert not page.errors


def test_live_browser_is_off_unless_enabled(make_session, launch_app, open_page):
    demo = launch_app(make_session("qwen3_vl", click_answer("qwen3_vl")))
    page = open_page("desktop")
    _agent(page, demo.local_url, "Live browser")
    page.wait_for_selector("#live-off")
    assert "--agent-browser" in page.locator("#live-off").inner_text()
    assert LIVE_OFF.split(".")[0].replace("`", "") in page.locator("#live-off").inner_text()


def test_live_browser_through_the_tab_clicks_the_button_and_refuses_other_hosts(make_session, launch_app,
                                                                                 open_page):
    session = make_session("qwen3_vl", live_click_answer("qwen3_vl"))
    demo = launch_app(session, ServeConfig(load=session.options, agent_browser=True))
    site = LocalSite()
    try:
        page = open_page("desktop")
        _agent(page, demo.local_url, "Live browser")
        page.fill("#live-url textarea", "http://remote.invalid/")
        page.fill("#live-task textarea", "Press the button")
        page.click("#live-run")
        toast = page.locator("[data-testid='toast-body']").filter(has_text="may not open").first
        toast.wait_for(state="visible", timeout=60_000)
        assert "remote.invalid" in (toast.text_content() or "") and site.clicks == 0
        page.fill("#live-url textarea", site.url)
        steps = page.locator("input[aria-label='number input for Step limit']")
        steps.fill("2")
        steps.press("Enter")
        page.click("#live-run")
        page.wait_for_selector("#live-log >> text=Stopped after 2 steps", timeout=180_000)
        assert site.clicks == 2  # both clicks landed on the button: its page's server counted them
        log = page.locator("#live-log").inner_text()
        assert "Step 1: left_click at (700, 340) ✓" in log and "Step 2: left_click at (700, 340) ✓" in log
        page.wait_for_selector("#live-gallery img")
        save_screenshot(page, "agent-live", full_page=True)
        page.click("#live-close")
        page.wait_for_selector("#live-log >> text=The live page is closed.")
        assert demo.live_browser._pages == {}  # this browser session's page (the only one) is gone
        assert not page.errors
    finally:
        site.close()
