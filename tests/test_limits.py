"""One `Limits` per app, held by the backend: document pages are not uploads, and --max-file-size is parsed by us."""

from __future__ import annotations

import argparse

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from qvl_core.engine.local import ModelSession
from qvl_core.engine.messages import user_turn
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import UserError
from qvl_core.settings import Limits
from qvl_core.tasks.documents import run_job
from tests.test_docparse_task import REPORT_HTML, options
from ui.config import ServeConfig, add_serve_args, parse_file_size, serve_config

A4_150_DPI = (1240, 1754)  # 2.2 MP: over a 2 MP upload limit


def _a4_pdf(path):
    Image.new("RGB", A4_150_DPI, "white").save(path, resolution=150)
    return path


def _limited(make_session, **limits) -> ModelSession:
    tiny = make_session("qwen2_5_vl", REPORT_HTML)
    return ModelSession(tiny.options, loaded=tiny.loaded, limits=Limits(**limits))


def test_document_pages_are_not_held_to_the_upload_limit(make_session, tmp_path):
    """Regression: with --max-image-pixels 2000000 a 150-dpi A4 PDF failed with "Image 'page-0001.png' is 2.2 MP,
    over the limit of 2 MP": the job re-opened its own rendered page under the upload limit, naming a file the
    user never uploaded."""
    session = _limited(make_session, max_image_pixels=2_000_000)
    *_, last = run_job(session, [_a4_pdf(tmp_path / "a4.pdf")], options())
    assert last.errors == () and len(last.done) == 1
    assert last.done[0].image.size[0] * last.done[0].image.size[1] > 2_000_000
    page = tmp_path / "a4.png"
    Image.new("RGB", A4_150_DPI, "white").save(page)
    *_, last = run_job(session, [page], options())
    assert last.done and not last.errors  # a page image is a document too: held to the page limits
    tiff = tmp_path / "a4.tiff"  # and so is each page of a multi-page TIFF (it was held to the upload limit)
    Image.new("RGB", A4_150_DPI, "white").save(tiff, save_all=True, append_images=[Image.new("RGB", A4_150_DPI)])
    *_, last = run_job(session, [tiff], options())
    assert not last.errors and len(last.done) == 2
    # The control: the same image sent to chat is an upload, and the upload limit refuses it.
    with pytest.raises(UserError, match=r"'a4.png' is 1240x1754 = 2.2 MP, over the limit of 2 MP"):
        session.generate(GenerationRequest(turns=(user_turn("what is this?", [str(page)]),)))


def test_parse_document_api_with_a_small_image_limit(make_session, launch_app, tmp_path):
    """The same defect through the /parse_document endpoint of an app started with --max-image-pixels 2000000."""
    p = argparse.ArgumentParser()
    add_serve_args(p)
    config = serve_config(p.parse_args(["--max-image-pixels", "2000000"]))
    session = _limited(make_session, max_image_pixels=2_000_000)
    assert session.limits == config.limits  # the backend an app with that flag opens checks with these
    demo = launch_app(session)
    html, _markdown, layout = Client(demo.local_url, verbose=False).predict(
        file=handle_file(str(_a4_pdf(tmp_path / "a4.pdf"))), api_name="/parse_document")
    assert "<h2" in html and layout[0]["page"] == 1


@pytest.mark.parametrize(("text", "expected"), [
    ("200mb", 200 * 1024**2), ("10kb", 10 * 1024), ("1 GB", 1024**3), ("512", 512), ("7b", 7),
])
def test_file_sizes(text, expected):
    assert parse_file_size(text) == expected


@pytest.mark.parametrize("junk", ["abc", "200 megabytes", "1.5gb", "-5mb", "0kb", "", "mb"])
def test_junk_file_size_is_refused_naming_the_flag(junk):
    """Regression: an unparseable --max-file-size made Gradio's private helper return None, which silently removed
    the size cap on media fetched from URLs."""
    with pytest.raises(UserError, match=r"--max-file-size must be .* e\.g\. 200mb; got .*QVL_MAX_FILE_SIZE"):
        parse_file_size(junk)
    p = argparse.ArgumentParser()
    add_serve_args(p)
    with pytest.raises(UserError, match="--max-file-size"):
        serve_config(p.parse_args([f"--max-file-size={junk}"]))


def test_serve_config_holds_the_parsed_upload_size(monkeypatch):
    monkeypatch.setenv("QVL_MAX_FILE_SIZE", "3mb")
    p = argparse.ArgumentParser()
    add_serve_args(p)
    assert serve_config(p.parse_args([])).max_file_bytes == 3 * 1024**2
    with pytest.raises(UserError, match="--max-file-size"):
        ServeConfig(load=serve_config(p.parse_args([])).load, max_file_size="lots")


def test_limits_validate_naming_the_flag_and_read_the_environment_when_asked(monkeypatch):
    with pytest.raises(UserError, match=r"--max-video-seconds must be positive, got 0 \(env QVL_MAX_VIDEO_SECONDS\)"):
        Limits(max_video_seconds=0)
    with pytest.raises(UserError, match=r"--max-image-pixels must be a whole number, got 1.5"):
        Limits(max_image_pixels=1.5)
    monkeypatch.setenv("QVL_MAX_PDF_PAGES", "7")
    assert Limits.from_env().max_pdf_pages == 7 and Limits().max_pdf_pages == 50  # read at call time, not import
