"""`qvl serve` / app.py flags reach the running app: limits applied before the tabs are built."""

from __future__ import annotations

import argparse

import gradio as gr
import pytest

from qvl_core.engine.local import ModelSession
from qvl_core.settings import Limits
from ui.config import add_serve_args, serve_config
from ui.launch import build_app


def test_limit_flags_reach_every_check_and_the_sliders(make_session):
    """Regression: build_app built the UI without the config, so --max-* flags were parsed and then ignored."""
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    config = serve_config(parser.parse_args(["--max-image-pixels", "1000000", "--max-pdf-pages", "3",
                                             "--max-video-seconds", "60", "--max-new-tokens-limit", "512"]))
    assert config.limits == Limits(max_image_pixels=1_000_000, max_pdf_pages=3, max_video_seconds=60.0,
                                   max_new_tokens=512)
    # The backend the config describes checks with the same object (build_app opens it from there).
    assert config.backend_options().limits is config.limits
    tiny = make_session()
    backend = ModelSession(config.load, loaded=tiny.loaded, limits=config.backend_options().limits)
    demo = build_app(config, backend)
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.Slider) and b.label == "Max new tokens"]
    assert len(sliders) >= 4 and {s.maximum for s in sliders} == {512}
    files = [b for b in demo.blocks.values() if isinstance(b, gr.File) and b.elem_id == "doc-files"]
    assert files and "up to 3 pages per job" in files[0].label
    # A backend opened with other limits would leave the flags unenforced: refused, naming the argument.
    with pytest.raises(ValueError, match="config.limits"):
        build_app(config, tiny)


def test_no_video_worker_until_a_video_arrives(make_session, media_dir):
    """Regression: build_app started a video decoder process at start-up, even in an app never sent a video.
    Now the Chat tab starts one when a message brings a video, and that video is decoded in it."""
    import threading

    from qvl_core.families import FAMILIES
    from qvl_core.media.video import sample_frames, workers
    from qvl_core.tasks.conversation import Conversation
    from ui.tabs.chat import ChatTab

    workers._shutdown_workers()  # no worker left over from earlier tests
    session = make_session()
    build_app(serve_config(_parser().parse_args([])), session)
    for t in threading.enumerate():
        if t.name == "qvl-video-warm-up":  # where the app used to start one
            t.join(timeout=60)
    assert not workers._idle, "no video was sent: no decoder process should be running"
    ChatTab(session).add_message({"text": "Hi", "files": []}, Conversation())
    assert not workers._idle
    ChatTab(session).add_message({"text": "What happens?", "files": [str(media_dir / "count.avi")]}, Conversation())
    assert len(workers._idle) == 1, "a message with a video should start a decoder worker at once"
    ready = workers._idle[0]
    sample_frames(media_dir / "count.avi", FAMILIES["qwen2_5_vl"])
    assert workers._idle == [ready] and ready.jobs_done == 1  # the video used the worker started for it


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_serve_args(parser)
    return parser
