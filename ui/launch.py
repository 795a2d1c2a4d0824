"""Start the web app: parse flags, open the one backend, build the UI, launch the server."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import gradio as gr

from qvl_core.engine.backend import Backend, close_backend, open_backend
from qvl_core.errors import UserError
from qvl_core.settings import env_int
from ui.config import ServeConfig, add_serve_args, serve_config
from ui.shell import LAUNCH_KWARGS, build_demo

log = logging.getLogger("qvl")

# Gradio keeps every browser or API session's state (its copy of the page's component config, ~1,000 Python
# objects, and the tabs' gr.State values) until this many newer sessions have been used, least recently used
# first out. Gradio's own 10,000 let a server grow by about 0.4 MB a session for days; 1,000 caps that near
# 400 MB. A session evicted after 1,000 others starts over (an empty conversation).
MAX_SESSIONS = env_int("QVL_MAX_SESSIONS", 1000)


def build_app(config: ServeConfig, backend: Backend | None = None) -> gr.Blocks:
    """Open and load the backend (failing early with a clear message), build the UI and its queue.

    `config.concurrency` requests share the GPU queue at once: 1 for the model in this process, more for a
    serving engine, which batches whatever it is sent (continuous batching).
    """
    backend = backend or open_backend(config.backend_options())
    backend.load()
    # No video decoder worker yet: the tabs start one when a video arrives (video.warm_up), so an app that is
    # never sent a video runs no extra process.
    demo = build_demo(backend, config)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.backend = backend  # `launch` closes it when the server stops
    return demo


def launch_kwargs(config: ServeConfig) -> dict[str, Any]:
    """Everything `demo.launch` needs from the settings (shared by `qvl serve` and the Space)."""
    return dict(server_name=config.host, server_port=config.port, share=config.share, auth=config.auth,
                max_file_size=config.max_file_bytes, footer_links=["api", "gradio"],
                state_session_capacity=MAX_SESSIONS, **LAUNCH_KWARGS)


def launch(config: ServeConfig, *, block: bool = True) -> gr.Blocks:
    """Build the app and serve it. Returns the Blocks app.

    With `block`, this returns when the server has stopped (Ctrl-C), and the backend is closed then (a
    serving engine's client holds a connection pool); without it the caller owns `demo.backend`.
    """
    demo = build_app(config)
    try:
        demo.launch(prevent_thread_lock=not block, **launch_kwargs(config))
    except BaseException:  # a port in use, Ctrl-C during start-up: nothing will use the backend
        close_backend(demo.backend)
        raise
    if block:
        close_backend(demo.backend)
    return demo


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="qvl serve", description="QVL Studio web app")
    add_serve_args(parser)
    ns = parser.parse_args(argv)
    try:
        launch(serve_config(ns))
    except UserError as exc:
        print(f"qvl: {exc}", file=sys.stderr)
        return 2
    return 0
