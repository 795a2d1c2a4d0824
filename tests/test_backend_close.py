"""Whoever opens a backend closes it: `qvl serve` when its server stops, each `qvl` command when it ends."""

from __future__ import annotations

import argparse

import gradio as gr

import qvl_core.cli
import ui.launch
from qvl_core.engine import backend as engine_backend
from ui.config import add_serve_args, serve_config


class ClosingBackend:
    """A loaded tiny session that counts `close()` calls (everything else is the session's)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.closed = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def close(self) -> None:
        self.closed += 1


def test_close_backend_closes_what_has_a_close_and_skips_what_has_none():
    backend = ClosingBackend(object())
    engine_backend.close_backend(backend)
    engine_backend.close_backend(object())  # ModelSession holds nothing to release: no close method, no error
    assert backend.closed == 1


def test_cli_commands_close_their_backend(make_session, monkeypatch, tmp_path, capsys):
    """Regression: no `qvl` command ever called OpenAIBackend.close(), so its HTTP pool was never released."""
    opened: list[ClosingBackend] = []

    def fake_open(_options):
        opened.append(ClosingBackend(make_session("qwen2_5_vl", "A red square.")))
        return opened[-1]

    monkeypatch.setattr(qvl_core.cli, "open_backend", fake_open)
    assert qvl_core.cli.main(["chat", "--prompt", "What is it?", "--model", "tiny", "--device", "cpu", "--quiet"]) == 0
    assert "A red square." in capsys.readouterr().out
    # A command that fails after opening its backend closes it too.
    missing = str(tmp_path / "missing.png")
    assert qvl_core.cli.main(["ground", missing, "cat", "--model", "tiny", "--device", "cpu"]) == 2
    assert [b.closed for b in opened] == [1, 1]


def test_serve_closes_its_backend_when_the_server_stops(make_session, monkeypatch):
    """Regression: `qvl serve` returned from a blocking launch (Ctrl-C) without closing the backend."""
    backend = ClosingBackend(make_session("qwen2_5_vl", "A red square."))
    monkeypatch.setattr(ui.launch, "open_backend", lambda _options: backend)
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: None)  # the server stops at once
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    demo = ui.launch.launch(serve_config(parser.parse_args(["--model", "tiny", "--device", "cpu"])), block=True)
    demo.sweeper_stop.set()
    assert backend.closed == 1
