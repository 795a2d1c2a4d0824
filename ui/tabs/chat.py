"""The Chat tab: multi-turn conversation over images and videos, streamed, stoppable, editable."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from qvl_core.draw import draw_detections
from qvl_core.engine.backend import Backend
from qvl_core.engine.messages import Turn
from qvl_core.engine.sampling import DEFAULT_MAX_NEW_TOKENS, SamplingDefaults
from qvl_core.engine.types import GenerationRequest, GenerationStats
from qvl_core.errors import UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, open_image
from qvl_core.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, MAX_FRAMES_LIMIT, VideoBudget, warm_up
from qvl_core.parse.grounding import parse_grounding
from qvl_core.parse.safe_markdown import safe_markdown
from qvl_core.settings import as_number
from qvl_core.tasks.conversation import Conversation
from ui.common import (
    N_SAMPLING_VALUES,
    SamplingControls,
    api_number,
    api_sampling_inputs,
    format_stats,
    gpu_event,
    image_tokens_slider,
    model_sampling_defaults,
    throttled,
    to_gr_error,
    to_sampling,
)
from ui.files import OutputRoot

ASSETS = Path(__file__).resolve().parent.parent / "assets"
# No system prompt unless the user writes one: the chat template decides (Qwen2/2.5-VL's adds "You are a helpful
# assistant."; Qwen3-VL's adds none, so a default injected here is a system turn that model never gets otherwise).
DEFAULT_SYSTEM = ""
SYSTEM_PLACEHOLDER = "Optional. Empty: the model's default applies."
LATEX = [
    {"left": "$$", "right": "$$", "display": True},
    {"left": "$", "right": "$", "display": False},
    {"left": "\\(", "right": "\\)", "display": False},
    {"left": "\\[", "right": "\\]", "display": True},
]


# While a reply streams the box is locked and shows Stop instead of Send; afterwards the reverse.
def busy_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True)


def idle_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(interactive=True, submit_btn=True, stop_btn=False)


def render(conv: Conversation, pending: str | None = None) -> list[dict]:
    """Conversation -> Chatbot messages. Display formatting lives only here, never in `conv`."""
    out: list[dict] = []
    for turn, note, figure in zip(conv.turns, conv.notes, conv.figures, strict=True):
        out.append(_render_turn(turn, note, figure))
    if pending is not None:
        out.append({"role": "assistant", "content": safe_markdown(pending) or "…"})
    return out


def _render_turn(turn: Turn, note: str, figure: str | None) -> dict:
    if turn.role == "user":
        content: list[Any] = [{"path": m.path} for m in turn.media]
        if turn.text:
            content.append(turn.text)
        return {"role": "user", "content": content}
    # Model text is untrusted: no raw HTML, no loading images, no script links on the page (safe_markdown).
    text = safe_markdown(turn.text) if turn.text else "*(empty answer)*"
    text = f"{text}\n\n<sub>{note}</sub>" if note else text
    return {"role": "assistant", "content": [text, {"path": figure}] if figure else text}


@dataclass(frozen=True)
class ChatSettings:
    """The values of the settings accordion, as one immutable bundle."""

    system: str
    sampling_values: tuple
    max_image_tokens: float
    fps: float
    max_frames: float
    label_media: bool
    # The model's own sampling settings: slider values still at them are left to the model. None: the API's
    # values, sent as given.
    defaults: SamplingDefaults | None = None

    def request(self, conv: Conversation) -> GenerationRequest:
        return GenerationRequest(
            turns=conv.turns,
            sampling=to_sampling(*self.sampling_values, defaults=self.defaults),
            system=self.system if self.system and self.system.strip() else None,
            max_image_tokens=as_number("max_image_tokens", self.max_image_tokens, whole=True),
            video=VideoBudget(fps=as_number("fps", self.fps), max_frames=as_number("max_frames", self.max_frames,
                                                                                   whole=True)),
            label_media=bool(self.label_media),
        )


def stream_answer(session: Backend, conv: Conversation, settings: ChatSettings, *, files: OutputRoot | None = None
                  ) -> Iterator[tuple[Conversation, str | None]]:
    """Answer the last user message: yields (conversation, pending text) while streaming.

    The conversation is updated on every step, so a Stop keeps the partial answer. Boxes or points in the answer
    are drawn into `files` (the app's output folder); without one, nothing is drawn.
    """
    request = settings.request(conv)
    text = ""
    with contextlib.closing(throttled(session.stream(request))) as chunks:
        for text, chunk in chunks:
            if chunk.stats is None:
                # If Stop lands here, this is what the conversation keeps.
                yield conv.with_answer(text, "stopped before the end"), text
            else:
                figure = None if files is None else grounding_figure(session, conv, text, chunk.stats, files)
                yield conv.with_answer(text, format_stats(chunk.stats), figure), None
                return
    # Closed early (Stop): the finally of the model stream has already cancelled generation.
    yield conv.with_answer(text, "stopped by you"), None


def grounding_figure(session: Backend, conv: Conversation, text: str, stats: GenerationStats,
                     files: OutputRoot) -> str | None:
    """If the answer holds boxes or points, draw them on the latest image of the conversation.

    The coordinates refer to the last image the model saw; its exact input size comes from the stats.
    """
    images = [m for m in conv.media if m.kind == "image"]
    if not images or not stats.image_input_sizes:
        return None
    detections = parse_grounding(text, family=session.family, input_size=stats.image_input_sizes[-1],
                                 image_size=stats.image_original_sizes[-1])
    if not detections:
        return None
    out = files.new_dir("qvl-chat-") / "grounding.png"
    draw_detections(open_image(images[-1].path, max_pixels=session.limits.max_image_pixels), detections).save(out)
    return str(out)


class ChatTab:
    """Builds the Chat tab and wires its events; the handlers work on plain data."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None) -> None:
        self.gpu = gpu_event(concurrency)  # the shared GPU queue, and how many of its requests run at once
        self.session = session
        self.files = files or OutputRoot()  # the app's output folder; a tab built on its own gets one, unswept

    # ---- handlers (plain data in, plain data out) -------------------------------------------------
    def add_message(self, message: dict, conv: Conversation):
        try:
            conv = conv.send(message.get("text", ""), message.get("files", []))
        except UserError as exc:
            raise to_gr_error(exc) from None
        if any(m.kind == "video" for m in conv.turns[-1].media):
            warm_up()  # a decoder worker starts now, while the answer waits in the GPU queue
        return conv, render(conv), busy_box()

    def answer(self, conv: Conversation, *settings_values):
        if not conv.awaiting_answer:
            yield conv, render(conv)
            return
        n = 1 + N_SAMPLING_VALUES
        settings = ChatSettings(settings_values[0], tuple(settings_values[1:n]), *settings_values[n:],
                                defaults=model_sampling_defaults(self.session))
        try:
            with contextlib.closing(stream_answer(self.session, conv, settings, files=self.files)) as steps:
                for conv_now, pending in steps:
                    # The partial answer is shown as pending; state keeps the conversation so far.
                    shown = render(conv_now) if pending is None else render(conv, pending)
                    yield conv_now, shown
        except Exception as exc:  # noqa: BLE001 - every error becomes a message, the app keeps serving
            raise to_gr_error(exc) from None

    def after_error(self, conv: Conversation):
        """The message that failed leaves the conversation; its text goes back in the box to fix and resend."""
        if not conv.awaiting_answer:
            return conv, render(conv), idle_box()
        conv, turn = conv.undo()
        box = gr.MultimodalTextbox(value={"text": turn.text if turn else "", "files": []}, interactive=True,
                                   submit_btn=True, stop_btn=False)
        return conv, render(conv), box

    def retry(self, conv: Conversation):
        try:
            conv = conv.retry()
        except UserError as exc:
            raise to_gr_error(exc) from None
        return conv, render(conv)

    def undo(self, conv: Conversation):
        conv, turn = conv.undo()
        box = {"text": turn.text, "files": [m.path for m in turn.media]} if turn else None
        return conv, render(conv), box

    def edit(self, conv: Conversation, data: gr.EditData):
        index = data.index if isinstance(data.index, int) else data.index[0]
        value = data.value if isinstance(data.value, str) else str(data.value)
        conv = conv.edit(index, value)
        return conv, render(conv)

    def api_chat(self, message: dict, system: str, max_new_tokens: float, temperature: float, top_p: float,
                 top_k: float, repetition_penalty: float, seed: float, max_image_tokens: float, fps: float,
                 max_frames: float, conv: Conversation):
        """/chat: send one message in this client's own conversation; streams the reply text."""
        try:
            files = [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files", [])]
            conv = conv.send((message or {}).get("text", ""), files)
            settings = ChatSettings(system, (max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed),
                                    max_image_tokens, fps, max_frames, len(conv.media) > 1)
            with contextlib.closing(stream_answer(self.session, conv, settings, files=self.files)) as steps:
                for conv_now, pending in steps:
                    yield (pending if pending is not None else conv_now.turns[-1].text), conv_now
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    # ---- construction ---------------------------------------------------------------------------
    def render(self) -> None:
        conv = gr.State(Conversation())
        chatbot = gr.Chatbot(
            label="Conversation", height=560, editable="user", latex_delimiters=LATEX, sanitize_html=True,
            buttons=["copy", "copy_all"], placeholder="Ask about images and videos: attach them with 📎, "
            "drag them in or paste them.", feedback_options=None,
        )
        box = gr.MultimodalTextbox(
            placeholder="Message… (Enter to send, Shift+Enter for a new line)", file_count="multiple",
            file_types=["image", "video"], sources=["upload"], submit_btn=True, stop_btn=False, show_label=False,
            autofocus=True, elem_id="chat-input",
        )
        with gr.Accordion("Settings", open=False):
            system = gr.Textbox(DEFAULT_SYSTEM, label="System prompt", lines=2, placeholder=SYSTEM_PLACEHOLDER)
            with gr.Row():
                max_image_tokens = image_tokens_slider()
                fps = gr.Slider(0.1, 8, value=DEFAULT_FPS, step=0.1, label="Video sampling fps")
                max_frames = gr.Slider(2, MAX_FRAMES_LIMIT, value=DEFAULT_MAX_FRAMES, step=2, label="Max video frames")
            label_media = gr.Checkbox(False, label='Label media ("Picture 1:", "Video 1:") so you can refer to them')
            sampling = SamplingControls.render(limit=self.session.limits.max_new_tokens,
                                               defaults=model_sampling_defaults(self.session))
        examples = _examples()
        if examples:
            gr.Examples(examples=examples, inputs=[box], label="Examples (media made by this project)")

        settings = [system, *sampling.components, max_image_tokens, fps, max_frames, label_media]
        gen = self.gpu

        sent = box.submit(self.add_message, [box, conv], [conv, chatbot, box], queue=False, api_visibility="private")
        answered = sent.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        answered.then(idle_box, None, [box], api_visibility="private", queue=False)
        # The browser runs `.then` only after a success: after an error, unlock the box and take the failed message
        # back out of the conversation (else every later turn would carry the bad file again).
        answered.failure(self.after_error, [conv], [conv, chatbot, box], api_visibility="private", queue=False)
        box.stop(idle_box, None, [box], cancels=[answered], queue=False, api_visibility="private")

        retried = chatbot.retry(self.retry, [conv], [conv, chatbot], queue=False, api_visibility="private")
        retried.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        chatbot.undo(self.undo, [conv], [conv, chatbot, box], queue=False, api_visibility="private")
        edited = chatbot.edit(self.edit, [conv], [conv, chatbot], queue=False, api_visibility="private")
        edited.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        chatbot.clear(lambda: Conversation(), None, [conv], queue=False, api_visibility="private")

        # API-only endpoint: its own per-client conversation (gr.State), returns the reply text.
        with gr.Group(visible=False):
            api_inputs = [
                gr.MultimodalTextbox(file_count="multiple", label="message"),
                gr.Textbox(DEFAULT_SYSTEM, label="system", placeholder=SYSTEM_PLACEHOLDER),
                *api_sampling_inputs(DEFAULT_MAX_NEW_TOKENS),
                api_number(DEFAULT_MAX_IMAGE_TOKENS, "max_image_tokens"),
                api_number(DEFAULT_FPS, "fps"),
                api_number(DEFAULT_MAX_FRAMES, "max_frames"),
            ]
            api_out = gr.Textbox(label="reply")
            api_conv = gr.State(Conversation())
            api_btn = gr.Button()
            reset_btn = gr.Button()
        api_btn.click(self.api_chat, [*api_inputs, api_conv], [api_out, api_conv], api_name="chat", **gen)
        reset_btn.click(lambda: ("", Conversation()), None, [api_out, api_conv], api_name="chat_reset", queue=False)


def _examples() -> list[dict]:
    pairs = [
        ("shapes.png", "What shapes and colours do you see? Where is the red circle?"),
        ("receipt.png", "Read this receipt and give the total."),
        ("clock.mp4", "Describe what happens in this video, with times."),
    ]
    return [{"text": text, "files": [str(ASSETS / name)]} for name, text in pairs if (ASSETS / name).is_file()]
