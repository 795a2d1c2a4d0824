"""Start the web app: parse flags, load the one model, build the UI, launch the server."""

from __future__ import annotations

import argparse
import logging
import sys

from qvl_core.config import ServeConfig, add_serve_args, serve_config
from qvl_core.errors import UserError
from qvl_core.session import ModelSession

from .shell import LAUNCH_KWARGS, build_demo

log = logging.getLogger("qvl")


def launch(config: ServeConfig, *, block: bool = True):
    """Load the model (failing early with a clear message), then serve. Returns the Blocks app."""
    session = ModelSession(config.load)
    session.load()
    demo = build_demo(session)
    demo.queue(max_size=config.queue_size, default_concurrency_limit=1)
    demo.launch(
        server_name=config.host, server_port=config.port, share=config.share, auth=config.auth,
        max_file_size=config.max_file_size, prevent_thread_lock=not block, **LAUNCH_KWARGS,
        footer_links=["api", "gradio"],
    )
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
