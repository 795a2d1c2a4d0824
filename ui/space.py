"""Build the app the way a Hugging Face Space runs it: settings from QVL_* variables, the model loaded at import."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import Any

import gradio as gr

from qvl_core.engine.backend import Backend, open_backend
from qvl_core.engine.local import ModelSession
from qvl_core.engine.zerogpu import ZeroGPUBackend, zero_gpu
from ui.config import add_serve_args, serve_config
from ui.launch import build_app, launch_kwargs


def space_backend(config: Any) -> Backend:
    """On ZeroGPU: load on the CPU and move to CUDA now (ZeroGPU's rule), generate inside `spaces.GPU`."""
    remote = config.backend is not None and config.backend.kind != "transformers"
    if remote or not zero_gpu():  # a serving engine needs no GPU here
        return open_backend(config.backend_options())
    session = ModelSession(replace(config.load, device="cuda", load_then_move=True), limits=config.limits)
    session.load()
    return ZeroGPUBackend(session)


def build_space() -> tuple[gr.Blocks, Backend, dict[str, Any]]:
    """The Blocks app, its backend and the launch settings, as a Space serves them (all interfaces, its port)."""
    parser = argparse.ArgumentParser(prog="app.py (Space)")
    add_serve_args(parser)
    ns = parser.parse_args([])  # a Space passes no flags: QVL_* variables (Space settings) configure it
    ns.host = "0.0.0.0"  # the Space's proxy reaches the app from outside the container
    ns.port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    config = serve_config(ns)
    backend = space_backend(config)
    return build_app(config, backend), backend, launch_kwargs(config)
