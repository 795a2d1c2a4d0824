"""The Document parsing tab, /parse_document and a real browser showing a hostile page's preview inertly."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.tasks.documents import MODES
from tests.test_docparse_task import HOSTILE_HTML, REPORT_HTML, make_pdf
from ui.tabs.documents import DocumentsTab

SAMPLING = (2000, 0.0, 1.0, 0, 1.05, -1)


def drain(gen):
    *_, last = gen
    return last


def test_tab_parses_a_pdf_and_offers_downloads(make_session, tmp_path):
    tab = DocumentsTab(make_session("qwen2_5_vl", REPORT_HTML))
    pdf = make_pdf(tmp_path / "report.pdf", 2)
    state, pick, preview, layout, raw_html, markdown, rows, note, reasoning, live, status, downloads = drain(
        tab.run([str(pdf)], MODES[0], "", "", 150, 4096, *SAMPLING, progress=lambda *a, **k: None))
    assert [p.label for p in state.done] == ["report.pdf · page 1/2", "report.pdf · page 2/2"]
    # No fields in HTML mode; the last page's raw answer stays shown.
    assert rows == [] and note == "" and reasoning == "" and live == REPORT_HTML  # a model that did not think
    assert pick.value == "report.pdf · page 2/2" and "Done: 2 of 2 pages" in status
    assert preview.startswith('<iframe sandbox=""') and "Quarterly report" in preview
    assert layout.size == (800, 1000) and "## Quarterly report" in markdown and "data-bbox" in raw_html
    assert sorted(Path(d).name for d in downloads) == ["report.html", "report.json", "report.md"]
    pages = json.loads(Path(next(d for d in downloads if d.endswith(".json"))).read_text())
    assert [p["page"] for p in pages] == [1, 2]


def test_tab_reports_bad_input_clearly(make_session, tmp_path):
    tab = DocumentsTab(make_session("qwen2_5_vl", REPORT_HTML))
    with pytest.raises(gr.Error, match="Add at least one PDF"):
        drain(tab.run([], MODES[0], "", "", 150, 4096, *SAMPLING, progress=lambda *a, **k: None))
    with pytest.raises(gr.Error, match="List the fields"):
        drain(tab.run([str(tmp_path)], MODES[3], "", "", 150, 4096, *SAMPLING, progress=lambda *a, **k: None))
    pdf = make_pdf(tmp_path / "short.pdf", 2)
    with pytest.raises(gr.Error, match="Nothing could be parsed: .*short.pdf.*2 pages"):
        drain(tab.run([str(pdf)], MODES[0], "", "5", 150, 4096, *SAMPLING, progress=lambda *a, **k: None))


def test_parse_document_api(make_session, launch_app, tmp_path):
    demo = launch_app(make_session("qwen2_5_vl", REPORT_HTML))
    pdf = make_pdf(tmp_path / "report.pdf", 1)
    html, markdown, layout = Client(demo.local_url, verbose=False).predict(
        file=handle_file(str(pdf)), api_name="/parse_document")
    assert "<h2" in html and "Content-Security-Policy" in html
    assert "| Item | Value |" in markdown
    assert layout[0]["blocks"][0]["kind"] == "heading"


def test_hostile_document_preview_runs_nothing_in_a_real_browser(make_session, launch_app, tmp_path, artifacts, page):
    url = launch_app(make_session("qwen2_5_vl", HOSTILE_HTML)).local_url
    page_img = tmp_path / "invoice.png"
    Image.new("RGB", (600, 400), "white").save(page_img)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.get_by_role("tab", name="Documents").click()
    page.wait_for_selector("#doc-files", state="visible")  # the tab is rendered before we upload into it
    page.set_input_files("#doc-files input[type=file]", str(page_img))
    page.wait_for_selector("#doc-files >> text=invoice.png")
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=Done")
    frame = page.frame_locator("#doc-preview iframe")
    assert "Invoice" in frame.locator("body").inner_text()
    page.wait_for_timeout(500)
    assert page.evaluate("window.__pwned") is None and page.title() == "QVL Studio"
    assert not [u for u in requests if "evil.example" in u]
    page.screenshot(path=str(artifacts / "documents.png"), full_page=True)


def test_cli_parse_writes_one_output_per_file_and_resumes(qvl_cli, ckpt_dir, tmp_path):
    model = str(ckpt_dir("qwen2_5_vl", REPORT_HTML))
    docs = tmp_path / "docs"
    docs.mkdir()
    make_pdf(docs / "a.pdf", 2)
    Image.new("RGB", (800, 1000), "white").save(docs / "b.png")
    out = tmp_path / "out"
    first = qvl_cli("parse", str(docs), "--out", str(out), "--format", "md", "--model", model, "--device", "cpu",
                 "--pages", "1-2")
    assert first.returncode == 0, first.stderr
    assert "[a.pdf: 2 pages (0 from an earlier run)" in first.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["a.md", "b.md"]
    assert "## Quarterly report" in (out / "a.md").read_text()
    again = qvl_cli("parse", str(docs / "a.pdf"), "--out", str(out), "--format", "json", "--model", model,
                 "--device", "cpu", "--pages", "1-2")
    assert again.returncode == 0, again.stderr
    assert "[a.pdf: 2 pages (2 from an earlier run)" in again.stderr  # resumed: nothing regenerated
    pages = json.loads((out / "a.json").read_text())
    assert [p["page"] for p in pages] == [1, 2] and pages[0]["blocks"][0]["kind"] == "heading"


def test_cli_parse_bad_file_is_one_line_and_non_zero(qvl_cli, ckpt_dir, tmp_path):
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 garbage")
    res = qvl_cli("parse", str(bad), "--out", str(tmp_path / "o"), "--model", str(ckpt_dir("qwen2_5_vl")),
               "--device", "cpu", "-q")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("qvl: error:")]
    assert len(errors) == 1 and "broken.pdf" in errors[0]


def test_stop_in_the_tab_keeps_finished_pages_and_their_downloads(make_session, tmp_path):
    tab = DocumentsTab(make_session("qwen2_5_vl", REPORT_HTML))
    pdf = make_pdf(tmp_path / "three.pdf", 3)
    run = tab.run([str(pdf)], MODES[0], "", "", 150, 4096, *SAMPLING, progress=lambda *a, **k: None)
    kept = None
    for out in run:
        if out[0] is not None and not isinstance(out[0], dict) and len(getattr(out[0], "done", ())) == 1:
            kept = out
            break
    run.close()  # what Stop does
    state, *_, downloads = kept
    assert [p.page_number for p in state.done] == [1]
    md = Path(next(d for d in downloads if d.endswith(".md"))).read_text()
    assert "three.pdf · page 1/3" in md and "page 2/3" not in md
