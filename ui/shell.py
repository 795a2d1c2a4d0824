"""The app shell: header with model status, random-weights banner, and one tab per ability."""

from __future__ import annotations

import html
import json
from dataclasses import replace
from pathlib import Path

import gradio as gr
from starlette.middleware import Middleware

from qvl_core.engine.backend import Backend
from qvl_core.engine.types import SessionStatus
from qvl_core.errors import UserError
from qvl_core.tasks.live_browser import LiveBrowser
from ui.config import DEFAULT_CACHE_TTL_S, DEFAULT_MAX_FILE_SIZE, ServeConfig, parse_file_size
from ui.files import OutputRoot, guard_url_media, sweep_interval
from ui.guard import Guard, LoginThrottle
from ui.tabs.agent import AgentTab
from ui.tabs.chat import ChatTab
from ui.tabs.documents import DocumentsTab
from ui.tabs.grounding import GroundingTab
from ui.tabs.video import SEEK_JS, VideoTab

ASSETS = Path(__file__).resolve().parent.parent / "assets"
CSS = (ASSETS / "style.css").read_text() if (ASSETS / "style.css").is_file() else ""
PHONE_MAX_WIDTH = 768  # px; the same breakpoint as the phone rules in style.css
# Each tab's Run button and the top of its results. On a phone the results column sits below the inputs, so a
# run's results would land out of sight: the click brings them into view.
RESULT_OF_RUN = {"ground-run": "ground-annotated", "doc-run": "doc-page", "video-run": "video-answer",
                 "agent-run": "agent-drawn", "zoom-run": "zoom-boxes", "live-run": "live-shot"}
PHONE_JS = f"""
<script>
document.addEventListener("click", (event) => {{
  const button = event.target.closest && event.target.closest("button[id]");
  const target = button && {json.dumps(RESULT_OF_RUN)}[button.id];
  if (!target || window.innerWidth > {PHONE_MAX_WIDTH}) return;
  document.getElementById(target)?.scrollIntoView({{block: "start", behavior: "smooth"}});
}});
</script>
"""
# Page-level settings every launch uses (the app, tests, benchmarks): our CSS and the scripts we add.
LAUNCH_KWARGS = {"css": CSS, "head": SEEK_JS + PHONE_JS}
# Short: on a phone the banner sits above every tab. A scripted checkpoint answers sensibly (its one script),
# so calling its answers noise would be wrong.
REAL_MODEL_HINT = "For real answers start a real model: `--model Qwen/Qwen2.5-VL-7B-Instruct`."
RANDOM_BANNER = f"⚠️ **Random weights: the answers are noise.** {REAL_MODEL_HINT}"
SCRIPTED_BANNER = f"⚠️ **Scripted test model:** it gives its built-in answer, whatever you ask. {REAL_MODEL_HINT}"


def banner_markdown(status: SessionStatus) -> str | None:
    """The warning above the tabs for a test checkpoint; None for a real model."""
    if not status.random_weights:
        return None
    return SCRIPTED_BANNER if status.scripted else RANDOM_BANNER


def display_name(model_id: str) -> str:
    """The model's name for the header: a Hub id as written, a local checkpoint by its folder's name only.

    The full path tells every visitor how the server's disk is laid out, and says nothing about the model."""
    path = Path(model_id).expanduser()
    if path.is_absolute() or model_id.startswith((".", "~")) or path.exists():
        return path.resolve().name or model_id
    return model_id


def header_markdown(session: Backend) -> str:
    st = session.status()
    st = replace(st, model_id=display_name(st.model_id))
    return f"### QVL Studio\n<span class='qvl-status'>{html.escape(st.summary(), quote=False)}</span>"


class StudioBlocks(gr.Blocks):
    """The app's Blocks, owning its output folder (`files`): swept while the app may serve, deleted by close()."""

    files: OutputRoot
    login_throttle: LoginThrottle
    live_browser: LiveBrowser | None = None

    def launch(self, *args, **kwargs):
        self.files.start_sweeper()  # again, if an earlier close() stopped it
        # Gradio builds its server app here: our guard goes inside it (see ui/guard.py).
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", ()), Middleware(Guard, throttle=self.login_throttle)]
        return super().launch(*args, app_kwargs=app_kwargs, **kwargs)

    def close(self, verbose: bool = True) -> None:
        try:
            super().close(verbose)
        finally:
            self.files.close()  # the server is gone: nobody can fetch the files, so they go too
            if self.live_browser is not None:
                self.live_browser.close()


def build_demo(session: Backend, config: ServeConfig | None = None) -> StudioBlocks:
    """Build the whole UI around an already loaded session (nothing heavy happens here).

    The input limits are the session's own (`session.limits`: every request is checked against them and the
    tabs read them there); `config` must carry the same ones. `config` also brings how many requests the GPU
    queue runs at once, the lifetime of uploads and output files, the upload size and the hosts media URLs may
    come from; without it the defaults hold. The app writes its files under its own `demo.files`, swept by
    its own lifetime (another app in the process never deletes them), until `demo.close()`.
    """
    if config is not None and config.limits != session.limits:
        raise ValueError(f"config.limits ({config.limits}) differ from the session's ({session.limits}): open the "
                         "backend with config.backend_options() so that one Limits governs the app.")
    st = session.status()
    ttl = config.cache_ttl_s if config else DEFAULT_CACHE_TTL_S
    concurrency = config.concurrency if config else 1
    files = OutputRoot(ttl)
    browser = None
    if config is not None and config.agent_browser:
        missing = LiveBrowser.available()
        if missing:
            raise UserError(f"--agent-browser: {missing}")
        browser = LiveBrowser(config.agent_browser_hosts)
    # Gradio deletes this app's uploads and cached outputs; our sweeper the files the tabs write.
    with StudioBlocks(title="QVL Studio", delete_cache=(round(sweep_interval(ttl)), ttl)) as demo:
        header = gr.Markdown(header_markdown(session), elem_id="qvl-header")
        banner = banner_markdown(st)
        if banner:
            gr.Markdown(banner, elem_id="random-banner", container=False)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                ChatTab(session, concurrency=concurrency, files=files).render()
            with gr.Tab("Grounding", id="grounding"):
                GroundingTab(session, concurrency=concurrency, files=files).render()
            with gr.Tab("Documents", id="documents"):
                DocumentsTab(session, concurrency=concurrency, files=files).render()
            with gr.Tab("Video QA", id="video"):
                VideoTab(session, concurrency=concurrency, files=files).render()
            with gr.Tab("Agent", id="agent"):
                agent = AgentTab(session, concurrency=concurrency, files=files, browser=browser)
                agent.render()
        # Memory in use changes as requests run: refresh the header now and then.
        gr.Timer(10).tick(lambda: header_markdown(session), None, header, queue=False, api_visibility="private",
                          show_progress="hidden")
    guard_url_media(demo, config.allow_url_media if config else (),
                    config.max_file_bytes if config else parse_file_size(DEFAULT_MAX_FILE_SIZE))
    demo.files = files
    demo.live_browser = browser
    if browser is not None:
        demo.unload(agent.on_unload)  # a visitor's live page closes with their browser session
    # Queued events (every GPU one) only through the queue: Gradio then refuses them on run/predict, which
    # would skip the queue's size and concurrency limits.
    demo.api_open = False
    demo.login_throttle = LoginThrottle()
    files.start_sweeper()  # here, not at launch: an app mounted into another server is never launched
    demo.sweeper_stop = files.sweeper_stop  # set it to stop sweeping (tests with a short lifetime do)
    return demo

