"""Fetching an allowlisted media URL: a failed fetch leaves nothing behind in Gradio's cache (no server needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import httpx
import pytest

from ui import files

URL = "https://media.example/clip.png"


class _Block:
    def __init__(self) -> None:
        self.temp_files: set[str] = set()


def _serve(monkeypatch, handler) -> None:
    """Every httpx.AsyncClient answers through `handler` (an httpx.MockTransport): no network."""
    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient", lambda **kw: real(transport=httpx.MockTransport(handler), **kw))


def _refuse(_request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize(("handler", "max_bytes", "message"), [
    (lambda _r: httpx.Response(404, content=b"not here"), None, "HTTP 404"),
    (lambda _r: httpx.Response(302, headers={"location": "http://elsewhere.example/"}), None, "HTTP 302"),
    (lambda _r: httpx.Response(200, content=b"x" * 5000), 1000, "over the upload limit"),
    (_refuse, None, "ConnectError"),
], ids=["404", "redirect", "too big", "unreachable"])
def test_a_failed_fetch_leaves_no_folder_behind(monkeypatch, tmp_path, handler, max_bytes, message):
    """Regression: a non-200 answer raised before the download folder was removed, so every refused fetch left
    an empty url-* folder in Gradio's cache; an unreachable host left one too, behind a raw httpx error."""
    _serve(monkeypatch, handler)
    block = _Block()
    with pytest.raises(gr.Error, match=message):
        asyncio.run(files._fetch(URL, tmp_path, block, max_bytes))
    assert list(tmp_path.iterdir()) == [] and block.temp_files == set()


def test_a_good_fetch_keeps_its_file(monkeypatch, tmp_path):
    _serve(monkeypatch, lambda _r: httpx.Response(200, content=b"png bytes"))
    block = _Block()
    path = Path(asyncio.run(files._fetch(URL, tmp_path, block, 1000)))
    assert path.read_bytes() == b"png bytes" and path.name == "clip.png" and block.temp_files == {str(path)}
