"""Document jobs end to end on scripted checkpoints: layout exact in page pixels, Markdown, fields, hostile
HTML neutralised, truncation flagged, Stop keeps finished pages, bad files reported without losing others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from qvl_core.engine.sampling import SamplingParams
from qvl_core.errors import UserError
from qvl_core.tasks.documents import (
    MODES,
    JobOptions,
    job_html,
    job_json,
    job_markdown,
    parse_fields,
    run_job,
    validate_fields,
    write_job_files,
)

# A PDF page saved at 150 dpi and rendered at 150 dpi is 800x1000 px; Qwen2.5-VL sees it as 812x1008.
PAGE = (800, 1000)
REPORT_HTML = """```html
<html><body>
<h2 data-bbox="203 252 609 756">Quarterly report</h2>
<p data-bbox="41 20 771 60">Revenue grew by 12% in the third quarter.</p>
<table data-bbox="41 800 771 950"><tr><th>Item</th><th>Value</th></tr><tr><td>Sales</td><td>1,200</td></tr></table>
<div class="formula" data-bbox="100 960 700 1000">E = mc^2</div>
</body></html>
```"""
HOSTILE_HTML = """```html
<html><body><h1 data-bbox="10 10 100 40">Invoice</h1>
<img src=x onerror="window.top.__pwned=1"><script>window.top.__pwned=2</script>
<a href="javascript:alert(1)">pay</a><iframe src="https://evil.example"></iframe>
<p style="background:url(https://evil.example/t.gif)" onclick="steal()">Total 5</p></body></html>
```"""
FIELDS_ANSWER = '```json\n{"invoice number": "INV-7", "total": 13.8, "date": null}\n```'


def make_pdf(path: Path, pages: int, *, text: str = "Page") -> Path:
    images = []
    for i in range(pages):
        img = Image.new("RGB", PAGE, "white")
        ImageDraw.Draw(img).text((100, 100), f"{text} {i + 1}", fill="black")
        images.append(img)
    images[0].save(path, save_all=True, append_images=images[1:], resolution=150)
    return path


def options(mode: str = MODES[0], **kw) -> JobOptions:
    kw.setdefault("sampling", SamplingParams(max_new_tokens=2000))
    return JobOptions(mode=mode, **kw)


def final(progress_iter):
    *_, last = progress_iter
    return last


def test_html_job_layout_is_exact_in_original_page_pixels(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    pdf = make_pdf(tmp_path / "report.pdf", 2)
    last = final(run_job(session, [pdf], options()))
    assert last.finished and not last.errors and len(last.done) == 2
    page = last.done[0]
    assert page.image.size == PAGE and page.input_size == (812, 1008)
    heading = next(b for b in page.blocks if b.kind == "heading")
    assert heading.box == pytest.approx((200.0, 250.0, 600.0, 750.0), abs=0.5)
    assert {b.kind for b in page.blocks} >= {"heading", "paragraph", "table", "formula"}
    md = job_markdown(last.done)
    assert "## Quarterly report" in md and "| Item | Value |" in md and "$$" in md
    assert md.count("report.pdf · page") == 2
    pages_json = job_json(last.done)
    assert pages_json[1]["page"] == 2 and pages_json[0]["blocks"][0]["box"] == pytest.approx([200, 250, 600, 750],
                                                                                               abs=0.5)


def test_hostile_html_is_neutralised_in_every_output(make_session, tmp_path):
    session = make_session("qwen2_5_vl", HOSTILE_HTML)
    img = tmp_path / "invoice.png"
    Image.new("RGB", (600, 400), "white").save(img)
    last = final(run_job(session, [img], options()))
    page = last.done[0]
    assert "onerror" in page.html  # the raw answer is kept as the model wrote it...
    for out in (page.safe_html, job_html(last.done)):  # ...but nothing executable reaches a view or download
        low = out.lower()
        assert "<script" not in low and "onerror" not in low and "javascript:" not in low
        assert "<iframe" not in low and "evil.example" not in low and "onclick" not in low
        assert "Invoice" in out and "Total 5" in out


def test_answer_that_is_not_html_is_kept_raw(make_session, tmp_path):
    session = make_session("qwen2_5_vl", "Sorry, I cannot read this page.")
    img = tmp_path / "blank.png"
    Image.new("RGB", (300, 300), "white").save(img)
    page = final(run_job(session, [img], options())).done[0]
    assert not page.is_html and page.blocks == ()
    assert page.markdown == "Sorry, I cannot read this page." and "<pre>Sorry" in page.safe_html


def test_truncated_page_is_flagged(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    img = tmp_path / "p.png"
    Image.new("RGB", PAGE, "white").save(img)
    page = final(run_job(session, [img], options(sampling=SamplingParams(max_new_tokens=10)))).done[0]
    assert page.truncated and job_json([page])[0]["truncated"] is True


def test_stop_keeps_the_pages_already_done(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    pdf = make_pdf(tmp_path / "long.pdf", 3)
    job = run_job(session, [pdf], options())
    seen = None
    for progress in job:
        if len(progress.done) == 1 and progress.partial:  # page 2 is being generated
            seen = progress
            break
    job.close()  # Stop
    assert seen is not None and seen.done[0].page_number == 1
    assert not session._gpu_lock.locked()
    files = write_job_files(seen.done, tmp_path / "out")
    assert json.loads(files[2].read_text())[0]["page"] == 1


def test_bad_file_is_reported_and_the_others_are_parsed(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    good = make_pdf(tmp_path / "good.pdf", 1)
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.7 this is not really a pdf")
    fake_png = tmp_path / "photo.png"
    fake_png.write_text("not a png")
    last = final(run_job(session, [bad, good, fake_png], options()))
    assert [p.source for p in last.done] == ["good.pdf"]
    assert len(last.errors) == 2 and any("broken.pdf" in e for e in last.errors)
    assert any("photo.png" in e for e in last.errors)


def test_page_limit_counts_the_whole_job(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    pdfs = [make_pdf(tmp_path / f"d{i}.pdf", 3) for i in range(2)]
    with pytest.raises(UserError, match="6 pages, over the limit of 5 pages"):
        list(run_job(session, pdfs, options(max_pages=5)))
    last = final(run_job(session, pdfs, options(max_pages=5, pages="1-2")))
    assert len(last.done) == 4


def test_extract_fields_validates_the_answer(make_session, tmp_path):
    session = make_session("qwen2_5_vl", FIELDS_ANSWER)
    img = tmp_path / "receipt.png"
    Image.new("RGB", (400, 600), "white").save(img)
    spec = parse_fields("invoice number, total, date, vendor")
    page = final(run_job(session, [img], options(MODES[3], fields=spec))).done[0]
    assert page.fields == {"invoice number": "INV-7", "total": 13.8, "date": None}
    assert page.field_problems == ("Missing field: vendor",)
    assert '"total": 13.8' in page.markdown


def test_field_specs_and_schema_validation():
    schema = {"type": "object", "properties": {"total": {"type": "number"}, "paid": {"type": "boolean"}},
              "required": ["total"]}
    spec = parse_fields(json.dumps(schema))
    assert spec.names == ("total", "paid") and "JSON schema" in spec.prompt()
    values, problems = validate_fields('{"total": "12", "paid": 1, "extra": 3}', spec)
    assert values["total"] == "12"
    assert problems == ["Unexpected field: extra", "Field total should be number, got str",
                        "Field paid should be boolean, got int"]
    assert validate_fields("no json here", spec)[1] == ["The answer is not a JSON object."]
    with pytest.raises(UserError, match="List the fields"):
        parse_fields("  ")
    with pytest.raises(UserError, match="not valid JSON"):
        parse_fields("{oops")
    with pytest.raises(UserError, match='"properties"'):
        parse_fields('{"type": "object"}')
    with pytest.raises(UserError, match="Extract fields needs"):
        JobOptions(mode=MODES[3])


def test_one_page_range_over_files_of_different_lengths(make_session, tmp_path):
    session = make_session("qwen2_5_vl", REPORT_HTML)
    pdf = make_pdf(tmp_path / "two.pdf", 2)
    png = tmp_path / "one.png"
    Image.new("RGB", PAGE, "white").save(png)
    last = final(run_job(session, [pdf, png], options(pages="1-2", clamp_pages=True)))
    assert [(p.source, p.page_number) for p in last.done] == [("two.pdf", 1), ("two.pdf", 2), ("one.png", 1)]
    assert not last.errors


def test_enormous_page_image_is_downscaled_not_refused(tmp_path):
    """A 600-dpi A3 scan (~70 MP) is over the chat image limit but is a legitimate page."""
    from qvl_core.media.documents import MAX_PAGE_PIXELS, load_document

    scan = tmp_path / "a3-600dpi.png"
    Image.new("RGB", (7016, 9921), "white").save(scan)
    (page,) = list(load_document(scan))
    w, h = page.image.size
    assert w * h <= MAX_PAGE_PIXELS and abs(w / h - 7016 / 9921) < 0.01


def test_random_weights_job_completes_with_structure(make_session, tmp_path):
    """On the noise-answering tiny checkpoint: every page is processed and reported, whatever the text."""
    pdf = make_pdf(tmp_path / "noise.pdf", 2)
    last = final(run_job(make_session("qwen2_5_vl"), [pdf], options(sampling=SamplingParams(max_new_tokens=16))))
    assert last.finished and [p.page_number for p in last.done] == [1, 2]
    assert all(isinstance(p.markdown, str) and p.stats.completion_tokens <= 16 for p in last.done)
