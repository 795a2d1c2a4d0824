"""The command line on bad input: one `qvl: error:` line on stderr, and the details only with --verbose."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def fake_mp4(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "notes.mp4"
    path.write_text("a text file, not a video\n")
    return path


def test_a_text_file_named_mp4_gives_one_error_line(qvl_cli, ckpt_dir, fake_mp4):
    """Regression: `qvl video` ran three decoders, each logging a warning and native decoder noise: nine
    lines of stderr before the one that says what is wrong."""
    out = qvl_cli("video", str(fake_mp4), "What happens?", "--model", str(ckpt_dir("qwen2_5_vl")), "--device", "cpu")
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert line.startswith("qvl: error: File 'notes.mp4' is not a video this app can read (") and "also tried" in line


def test_verbose_shows_each_decoder_tried_and_its_native_output(qvl_cli, ckpt_dir, fake_mp4):
    out = qvl_cli("chat", str(fake_mp4), "-p", "What happens?", "--model", str(ckpt_dir("qwen2_5_vl")),
                  "--device", "cpu", "--verbose")
    lines = out.stderr.splitlines()
    # The workers' native stderr is logged by a reader thread, so with --verbose its lines may come after ours.
    assert out.returncode == 2 and any(line.startswith("qvl: error: File 'notes.mp4' is not a video") for line in lines)
    assert any("video decoder pyav failed on notes.mp4" in line for line in lines)
    assert any("video decoder opencv failed on notes.mp4" in line for line in lines)
    assert any("moov atom not found" in line for line in lines), "FFmpeg's own message, from the worker's stderr"


def test_a_junk_pdf_gives_one_error_line_and_no_progress_bar(qvl_cli, ckpt_dir, tmp_path):
    """Regression: `qvl parse` drew its progress bar three times before saying the file is not a PDF."""
    junk = tmp_path / "scan.pdf"
    junk.write_bytes(bytes(range(256)) * 8)
    out = qvl_cli("parse", str(junk), "--out", str(tmp_path / "out"), "--model", str(ckpt_dir("qwen2_5_vl")),
                  "--device", "cpu")
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "qvl: error: File 'scan.pdf' is not a PDF (no %PDF- header); it may be another kind of file renamed .pdf."]
