"""Tier 3, real browser: Documents' paths around the main flow (a refusal after a good run, Stop, Fields) and the
shell on a phone and in dark mode (issue 15, items 6, 7, 10, 11), as a person sees them."""

from __future__ import annotations

import pytest

from tests.browser import BADGES, VIEWPORTS
from tests.conftest import ARTIFACTS, ROOT
from tests.test_docparse_task import REPORT_HTML, make_pdf

# WCAG contrast of the banner's text on the banner, from the computed colours.
CONTRAST = """() => {
  const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = (c) => { const [r, g, b] = rgb(c).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 :
                       Math.pow((v + 0.055) / 1.055, 2.4); }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const banner = document.querySelector('#random-banner');
  const text = getComputedStyle(banner.querySelector('p')).color, back = getComputedStyle(banner).backgroundColor;
  const [a, b] = [lum(text), lum(back)].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


def _shot(page, name: str) -> None:
    """For a person to look at (tests/artifacts); the README's screenshots are test_browser_tabs.py's."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"paths-{name}.png"), full_page=True)


def _load(page, url: str, tab: str | None = None) -> None:
    page.goto(url)
    page.wait_for_selector("#qvl-header")
    if tab:
        page.get_by_role("tab", name=tab).click()
        page.wait_for_selector("#doc-files input[type=file]", state="attached")
        page.wait_for_selector("#doc-files", state="visible")


def _upload_docs(page, *paths) -> None:
    page.set_input_files("#doc-files input[type=file]", [str(p) for p in paths])
    for p in paths:
        page.wait_for_selector(f"#doc-files >> text={p.name}")


@pytest.fixture(scope="module")
def doc_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl", REPORT_HTML)).local_url


@pytest.fixture(scope="module")
def noise_url(make_session, launch_app):
    return launch_app(make_session("qwen2_5_vl")).local_url


def test_a_refused_job_clears_the_earlier_results(doc_url, open_page, tmp_path):
    """Regression: refusing a 60-page PDF kept the previous job's preview and "Done" under red badges."""
    page = open_page("desktop")
    _load(page, doc_url, "Documents")
    _upload_docs(page, make_pdf(tmp_path / "report.pdf", 2, text="Quarterly report"))
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=Done: 2 of 2 pages", timeout=180_000)
    page.locator("#doc-files button[aria-label='Clear']").first.click()
    _upload_docs(page, make_pdf(tmp_path / "sixty.pdf", 60))
    page.click("#doc-run")
    toast = page.locator("[data-testid='toast-body']").filter(has_text="over the limit").first
    toast.wait_for(state="visible")
    assert "60 pages" in (toast.text_content() or "")
    page.wait_for_function("!document.querySelector('#doc-status').innerText.includes('Done')")
    assert page.locator("#doc-preview iframe").count() == 0
    assert "report.pdf" not in page.locator("#doc-page").inner_text() + page.locator("#doc-downloads").inner_text()
    assert page.evaluate(BADGES) == 0
    _shot(page, "documents-refused")


def test_stop_says_stopped_and_keeps_the_finished_pages(noise_url, open_page, tmp_path):
    """Regression: after Stop the status said "Parsing twelve.pdf · page 3/12" for ever."""
    page = open_page("desktop")
    _load(page, noise_url, "Documents")
    _upload_docs(page, make_pdf(tmp_path / "twelve.pdf", 12))
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=(1 of 12 pages done)", timeout=420_000)
    page.click("#doc-stop")
    page.wait_for_selector("#doc-status >> text=Stopped:")
    page.wait_for_timeout(2000)  # a late update of the cancelled job must not bring "Parsing" back
    status = page.locator("#doc-status").inner_text()
    assert "Stopped" in status and "Parsing" not in status and "kept below" in status
    assert "twelve.pdf · page 1/12" in status and page.locator("#doc-preview iframe").count() == 1
    _shot(page, "documents-stopped")


def test_fields_mode_shows_the_fields_view_and_its_problem(doc_url, open_page):
    """Regression: Fields mode left the Preview in view and put "not a JSON object" only in the status."""
    page = open_page("desktop")
    _load(page, doc_url, "Documents")
    page.get_by_label("Extract fields → JSON").check()
    page.wait_for_selector("#doc-views button[role=tab][aria-selected=true] >> text=Fields")
    page.get_by_label("Fields to extract (comma-separated) or a JSON schema").fill("total, date")
    _upload_docs(page, ROOT / "assets" / "receipt.png")
    page.click("#doc-run")
    page.wait_for_selector("#doc-field-problems >> text=The answer is not a JSON object", timeout=180_000)
    assert page.locator("#doc-field-problems").is_visible()
    _shot(page, "documents-fields")


def test_phone_every_tab_is_labelled_nothing_scrolls_and_chat_fits(noise_url, open_page):
    """Regression: at 390 px Documents and Video QA hid behind an unlabelled "⋯", the page loaded 275 px down (the
    chat box took focus), the banner took 150 px and the 560 px chat box ran past the screen."""
    page = open_page("phone")
    _load(page, noise_url)
    page.wait_for_selector("#chat-input textarea")
    page.wait_for_timeout(1000)  # the moment an autofocus scrolled the page
    assert page.evaluate("window.scrollY") == 0
    tabs = page.locator(".tab-wrapper [role=tablist] button[role=tab]")
    assert [t.strip() for t in tabs.all_inner_texts()] == ["Chat", "Grounding", "Documents", "Video QA", "Agent"]
    assert all(tabs.nth(i).is_visible() for i in range(5))
    assert not page.locator("button[aria-label='More tabs']").is_visible()
    assert page.locator("#random-banner").bounding_box()["height"] <= 60
    box = page.locator("#chat-input").bounding_box()
    assert box["y"] + box["height"] <= VIEWPORTS["phone"][1]  # conversation and message box on one screen
    _shot(page, "phone-chat")


def test_phone_results_come_into_view_after_run(doc_url, open_page, tmp_path):
    """Regression: on a phone the results column is below the inputs, and Run left it out of sight."""
    page = open_page("phone")
    _load(page, doc_url, "Documents")
    _upload_docs(page, make_pdf(tmp_path / "report.pdf", 1, text="Quarterly report"))
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=Done: 1 of 1 pages", timeout=180_000)
    top = page.locator("#doc-page").bounding_box()["y"]
    assert 0 <= top < VIEWPORTS["phone"][1] / 2
    _shot(page, "phone-documents")


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
def test_the_banner_is_readable_in_both_schemes(noise_url, open_page, dark):
    """Regression: in dark mode the banner kept its dark brown text on its dark background (contrast ~1.3)."""
    page = open_page("desktop", dark=dark)
    _load(page, noise_url)
    assert page.evaluate("document.body.classList.contains('dark')") == dark
    assert page.evaluate(CONTRAST) >= 4.5
    _shot(page, f"banner-{'dark' if dark else 'light'}")


def test_every_tab_renders_without_console_noise_or_page_errors(noise_url, open_page):
    """Regression (issue 15, smaller): the console logged "Method not implemented." twice per tab render."""
    page = open_page("desktop")
    _load(page, noise_url)
    for tab in ("Grounding", "Documents", "Video QA", "Agent", "Chat"):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(500)
    assert not [m for m in page.console if "not implemented" in m.lower()], page.console
    assert not page.errors
