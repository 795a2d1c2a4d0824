"""The Chat tab: multi-turn conversation over images and videos, streamed, stoppable, editable."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

from qvl_core.draw import draw_for_display
from qvl_core.engine.backend import Backend
from qvl_core.engine.messages import Turn
from qvl_core.engine.sampling import DEFAULT_MAX_NEW_TOKENS, SamplingDefaults
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
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
    ThinkingControls,
    api_number,
    api_sampling_inputs,
    format_stats,
    gpu_event,
    image_tokens_slider,
    model_sampling_defaults,
    model_thinking,
    throttled_thinking,
    to_gr_error,
    to_sampling,
    to_thinking,
)
from ui.files import OutputRoot

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's assets/, beside ui/
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
# The note on an answer that Stop ended before its first token (a long video prefill): the turn keeps its media.
STOPPED_BEFORE_ANSWER = "stopped by you before the answer began; Retry (↻) answers again"
# A refusal (a message over a named limit) is raised by a queued event with no visible outputs: Gradio shows a queued
# event's error as a toast, but a non-queued one's only as an HTTP 500 and an "Error" badge on each output, and
# an event with no outputs badges nothing, so the conversation and the box stay as they were.
CHECK_EVENT = {"queue": True, "concurrency_limit": None, "show_progress": "hidden", "api_visibility": "private"}
# The title of the collapsible message a thinking model's reasoning is shown in (Chatbot metadata messages).
THOUGHT_TITLE = "Thinking"


# While a reply streams the box is locked and shows Stop instead of Send; afterwards the reverse.
def busy_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(value=None, interactive=False, submit_btn=False, stop_btn=True)


def idle_box() -> gr.MultimodalTextbox:
    return gr.MultimodalTextbox(interactive=True, submit_btn=True, stop_btn=False)


@dataclass(frozen=True)
class Pending:
    """An answer being streamed: the answer and reasoning so far, and how long the reasoning took once it ended
    (None while it goes on)."""

    text: str
    reasoning: str = ""
    thought_s: float | None = None

    @property
    def thinking(self) -> bool:
        """Still reasoning: no answer yet and the reasoning not ended."""
        return bool(self.reasoning) and not self.text and self.thought_s is None


def thought_message(reasoning: str, seconds: float | None = None, *, pending: bool = False) -> dict:
    """A collapsible "Thinking" message: open with a spinner while it streams, closed once done. Reasoning is
    model output: the same safe Markdown as answers."""
    metadata: dict[str, Any] = {"title": THOUGHT_TITLE, "status": "pending" if pending else "done"}
    if seconds is not None:
        metadata["duration"] = round(seconds, 1)
    return {"role": "assistant", "content": safe_markdown(reasoning) or "…", "metadata": metadata}


def render(conv: Conversation, pending: str | Pending | None = None) -> list[dict]:
    """Conversation -> Chatbot messages. Display formatting lives only here, never in `conv`: a turn's reasoning
    becomes a thought message above its answer."""
    out: list[dict] = []
    for turn, note, figure, seconds in zip(conv.turns, conv.notes, conv.figures, conv.thought_s, strict=True):
        if turn.role == "assistant" and turn.reasoning:
            out.append(thought_message(turn.reasoning, seconds))
        out.append(_render_turn(turn, note, figure))
    if isinstance(pending, str):
        pending = Pending(pending)
    if pending is not None:
        if pending.reasoning:
            out.append(thought_message(pending.reasoning, pending.thought_s, pending=pending.thinking))
        if not pending.thinking:
            out.append({"role": "assistant", "content": safe_markdown(pending.text) or "…"})
    return out


def turn_of_message(conv: Conversation, index: int) -> int:
    """The turn a displayed message (`render`'s index) belongs to: thought messages shift the indices."""
    turns = [i for i, turn in enumerate(conv.turns)
             for _ in range(2 if turn.role == "assistant" and turn.reasoning else 1)]
    if not 0 <= index < len(turns):
        return len(conv.turns) + index  # out of range either way: Conversation.edit names it
    return turns[index]


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
    thinking: bool | None = None  # None: the model's default
    thinking_budget: float | None = DEFAULT_THINKING_BUDGET

    def request(self, conv: Conversation) -> GenerationRequest:
        thinking, budget = to_thinking(self.thinking, self.thinking_budget)
        return GenerationRequest(
            thinking=thinking, thinking_budget=budget,
            turns=conv.turns, conversation_id=conv.key or None,
            sampling=to_sampling(*self.sampling_values, defaults=self.defaults),
            system=self.system if self.system and self.system.strip() else None,
            max_image_tokens=as_number("max_image_tokens", self.max_image_tokens, whole=True),
            video=VideoBudget(fps=as_number("fps", self.fps), max_frames=as_number("max_frames", self.max_frames,
                                                                                   whole=True)),
            label_media=bool(self.label_media),
        )


def stream_answer(session: Backend, conv: Conversation, settings: ChatSettings, *, files: OutputRoot | None = None
                  ) -> Iterator[tuple[Conversation, Pending | None]]:
    """Answer the last user message: yields (conversation, pending answer and reasoning) while streaming.

    The conversation is updated on every step, so a Stop keeps the partial answer (and its reasoning, apart).
    Boxes or points in the answer are drawn into `files` (the app's output folder); without one, nothing is drawn.
    """
    request = settings.request(conv)
    text = reasoning = ""
    started = time.monotonic()
    thought_s: float | None = None  # how long the reasoning took, once the answer began
    with contextlib.closing(throttled_thinking(session.stream(request))) as chunks:
        for text, reasoning, chunk in chunks:
            if reasoning and thought_s is None and (text or chunk.stats is not None):
                thought_s = time.monotonic() - started
            if chunk.stats is None:
                # If Stop lands here, this is what the conversation keeps.
                yield (conv.with_answer(text, "stopped before the end", reasoning=reasoning, thought_s=thought_s),
                       Pending(text, reasoning, thought_s))
            else:
                figure = None if files is None else grounding_figure(session, conv, text, chunk.stats, files)
                yield conv.with_answer(text, format_stats(chunk.stats), figure, reasoning=reasoning,
                                       thought_s=thought_s), None
                return
    # Closed early (Stop): the finally of the model stream has already cancelled generation.
    if reasoning and thought_s is None:
        thought_s = time.monotonic() - started
    yield conv.with_answer(text, "stopped by you", reasoning=reasoning, thought_s=thought_s), None


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
    # On a display-sized copy, as Grounding draws: a 48 MP photo drawn at full size took seconds to encode.
    draw_for_display(open_image(images[-1].path, max_pixels=session.limits.max_image_pixels), detections).save(out)
    return str(out)


class ChatTab:
    """Builds the Chat tab and wires its events; the handlers work on plain data."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None) -> None:
        self.gpu = gpu_event(concurrency)  # the shared GPU queue, and how many of its requests run at once
        self.session = session
        self.files = files or OutputRoot()  # the app's output folder; a tab built on its own gets one, unswept

    # ---- handlers (plain data in, plain data out) -------------------------------------------------
    def check_message(self, message: dict, conv: Conversation) -> None:
        """Raise the refusal of a message over a named limit (files per message or conversation, characters)
        before anything changes."""
        try:
            conv.send((message or {}).get("text", ""), (message or {}).get("files", []))
        except UserError as exc:
            raise to_gr_error(exc) from None

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
        # system, the sampling values, then max image tokens, fps, max frames, label media[, thinking, budget]
        rest, thinking = settings_values[n:n + 4], settings_values[n + 4:]
        settings = ChatSettings(settings_values[0], tuple(settings_values[1:n]), *rest,
                                defaults=model_sampling_defaults(self.session), thinking=(*thinking, None)[0],
                                thinking_budget=(*thinking, DEFAULT_THINKING_BUDGET, DEFAULT_THINKING_BUDGET)[1])
        try:
            with contextlib.closing(stream_answer(self.session, conv, settings, files=self.files)) as steps:
                for conv_now, pending in steps:
                    # The partial answer is shown as pending; state keeps the conversation so far.
                    shown = render(conv_now) if pending is None else render(conv, pending)
                    yield conv_now, shown
        except Exception as exc:  # noqa: BLE001 - every error becomes a message, the app keeps serving
            raise to_gr_error(exc) from None

    def stop(self, conv: Conversation):
        """Stop pressed. An answer cut mid-stream is already in `conv`; one stopped before its first token (a long
        video prefill) is recorded as an empty answer marked stopped, so the turn keeps its media and Retry works
        (the failure path would take the turn back out, and its files with it)."""
        if conv.awaiting_answer:
            conv = conv.with_answer("", STOPPED_BEFORE_ANSWER)
        return conv, render(conv), idle_box()

    def after_error(self, conv: Conversation):
        """The message that failed leaves the conversation; its text goes back in the box to fix and resend."""
        if not conv.awaiting_answer:
            return conv, render(conv), idle_box()
        conv, turn = conv.undo()
        # Text and files both go back: a refusal (a context or pixel limit) leaves the message as it was sent.
        value = {"text": turn.text, "files": [m.path for m in turn.media]} if turn else {"text": "", "files": []}
        box = gr.MultimodalTextbox(value=value, interactive=True, submit_btn=True, stop_btn=False)
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

    def edit(self, conv: Conversation, data: gr.EditData) -> Conversation:
        """The conversation with a message edited; a user edit drops what followed. A refusal (an edit over a
        named limit) is raised and the conversation stays as it was."""
        try:
            return _edited(conv, data)
        except UserError as exc:
            raise to_gr_error(exc) from None

    def api_chat(self, message: dict, system: str, max_new_tokens: float, temperature: float | None = None,
                 top_p: float | None = None, top_k: float | None = None, repetition_penalty: float | None = None,
                 seed: float | None = None, max_image_tokens: float | None = None, fps: float | None = None,
                 max_frames: float | None = None, thinking: bool | None = None, thinking_budget: float | None = None,
                 conv: Conversation | None = None):
        """/chat: send one message in this client's own conversation; streams the reply text (the answer only:
        the reasoning is kept in the conversation, and /chat_reasoning returns it).

        The sampling parameters default to None, the model's own values (its generation_config, or the
        server's): the `= None` here is what makes them optional for API clients, whose inputs show no value."""
        try:
            files = [f if isinstance(f, str) else f.get("path") for f in (message or {}).get("files", [])]
            conv = conv.send((message or {}).get("text", ""), files)
            settings = ChatSettings(system, (max_new_tokens, temperature, top_p, top_k, repetition_penalty, seed),
                                    max_image_tokens, fps, max_frames, len(conv.media) > 1, thinking=thinking,
                                    thinking_budget=thinking_budget)
            with contextlib.closing(stream_answer(self.session, conv, settings, files=self.files)) as steps:
                for conv_now, pending in steps:
                    yield (pending.text if pending is not None else conv_now.turns[-1].text), conv_now
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    @staticmethod
    def api_reasoning(conv: Conversation) -> str:
        """/chat_reasoning: the reasoning behind this client's last /chat answer ("" if the model did not think)."""
        last = next((t for t in reversed(conv.turns) if t.role == "assistant"), None)
        return last.reasoning if last else ""

    # ---- construction ---------------------------------------------------------------------------
    def forget(self, conv: Conversation | None) -> None:
        """The backend drops the conversation's kept prefix (KV cache): it was cleared or its session ended."""
        forget = getattr(self.session, "forget", None)
        if conv is not None and conv.key and callable(forget):
            forget(conv.key)

    def cleared(self, conv: Conversation | None) -> Conversation:
        self.forget(conv)
        return Conversation()

    def render(self) -> None:
        # A session's conversation frees its kept prefix when Gradio deletes the session's state.
        conv = gr.State(Conversation(), delete_callback=self.forget)
        # One bubble per part (media, text): Gradio's edit submits every part of a bubble as text and throws on an
        # image's (`.slice is not a function`); apart, only the text bubble has an edit button.
        chatbot = gr.Chatbot(
            label="Conversation", height=560, editable="user", group_consecutive_messages=False,
            latex_delimiters=LATEX, sanitize_html=True,
            buttons=["copy", "copy_all"], placeholder="Ask about images and videos: attach them with 📎, "
            "drag them in or paste them.", feedback_options=None,
            elem_id="chatbot",
        )
        box = gr.MultimodalTextbox(
            placeholder="Message… (Enter to send, Shift+Enter for a new line)", file_count="multiple",
            file_types=["image", "video"], sources=["upload"], submit_btn=True, stop_btn=False, show_label=False,
            # No autofocus: on a phone it scrolls the page to the box at load and would open the keyboard.
            elem_id="chat-input",
        )
        with gr.Accordion("Settings", open=False, elem_id="chat-settings"):
            system = gr.Textbox(DEFAULT_SYSTEM, label="System prompt", lines=2, placeholder=SYSTEM_PLACEHOLDER)
            with gr.Row():
                max_image_tokens = image_tokens_slider()
                fps = gr.Slider(0.1, 8, value=DEFAULT_FPS, step=0.1, label="Video sampling fps")
                max_frames = gr.Slider(2, MAX_FRAMES_LIMIT, value=DEFAULT_MAX_FRAMES, step=2, label="Max video frames")
            label_media = gr.Checkbox(False, label='Label media ("Picture 1:", "Video 1:") so you can refer to them')
            thinking = ThinkingControls.render(model_thinking(self.session))
            sampling = SamplingControls.render(limit=self.session.limits.max_new_tokens,
                                               defaults=model_sampling_defaults(self.session))
        examples = _examples()
        if examples:
            gr.Examples(examples=examples, inputs=[box], label="Examples (media made by this project)")

        settings = [system, *sampling.components, max_image_tokens, fps, max_frames, label_media,
                    *thinking.components]
        gen = self.gpu

        checked = box.submit(self.check_message, [box, conv], None, **CHECK_EVENT)
        sent = checked.success(self.add_message, [box, conv], [conv, chatbot, box], queue=False,
                               api_visibility="private")
        answered = sent.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        answered.then(idle_box, None, [box], api_visibility="private", queue=False)
        # The browser runs `.then` only after a success: after an error, unlock the box and take the failed message
        # back out of the conversation (else every later turn would carry the bad file again).
        answered.failure(self.after_error, [conv], [conv, chatbot, box], api_visibility="private", queue=False)
        box.stop(self.stop, [conv], [conv, chatbot, box], cancels=[answered], queue=False, api_visibility="private")

        retried = chatbot.retry(self.retry, [conv], [conv, chatbot], queue=False, api_visibility="private")
        retried.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        chatbot.undo(self.undo, [conv], [conv, chatbot, box], queue=False, api_visibility="private")
        # Only the state is the edit's output (no badge on a refusal), and only the edit event itself gets the
        # EditData: the chatbot is drawn by the next step.
        edited = chatbot.edit(self.edit, [conv], [conv], **CHECK_EVENT).success(
            render, [conv], [chatbot], queue=False, api_visibility="private")
        edited.then(self.answer, [conv, *settings], [conv, chatbot], api_visibility="private", **gen)
        chatbot.clear(self.cleared, [conv], [conv], queue=False, api_visibility="private")

        # API-only endpoint: its own per-client conversation (gr.State), returns the reply text.
        with gr.Group(visible=False):
            api_inputs = [
                gr.MultimodalTextbox(file_count="multiple", label="message"),
                gr.Textbox(DEFAULT_SYSTEM, label="system", placeholder=SYSTEM_PLACEHOLDER),
                *api_sampling_inputs(DEFAULT_MAX_NEW_TOKENS),
                api_number(DEFAULT_MAX_IMAGE_TOKENS, "max_image_tokens"),
                api_number(DEFAULT_FPS, "fps"),
                api_number(DEFAULT_MAX_FRAMES, "max_frames"),
                # The model's default unless sent; the answer comes back alone, the reasoning from /chat_reasoning.
                gr.Checkbox(model_thinking(self.session).enabled(None), label="thinking"),
                api_number(DEFAULT_THINKING_BUDGET, "thinking_budget"),
            ]
            api_reasoning = gr.Textbox(label="reasoning")
            api_out = gr.Textbox(label="reply")
            api_conv = gr.State(Conversation(), delete_callback=self.forget)
            api_btn = gr.Button()
            reset_btn = gr.Button()
            reasoning_btn = gr.Button()
        api_btn.click(self.api_chat, [*api_inputs, api_conv], [api_out, api_conv], api_name="chat", **gen)
        reasoning_btn.click(self.api_reasoning, [api_conv], [api_reasoning], api_name="chat_reasoning", queue=False)
        reset_btn.click(lambda old: ("", self.cleared(old)), [api_conv], [api_out, api_conv], api_name="chat_reset",
                        queue=False)


def _edited(conv: Conversation, data: gr.EditData) -> Conversation:
    """`conv` with the edit applied: the index of the edited message (one per turn) and its new text."""
    index = data.index if isinstance(data.index, int) else data.index[0]
    value = data.value if isinstance(data.value, str) else str(data.value)
    return conv.edit(turn_of_message(conv, index), value)


def _examples() -> list[dict]:
    pairs = [
        ("shapes.png", "What shapes and colours do you see? Where is the red circle?"),
        ("receipt.png", "Read this receipt and give the total."),
        ("clock.mp4", "Describe what happens in this video, with times."),
    ]
    return [{"text": text, "files": [str(ASSETS / name)]} for name, text in pairs if (ASSETS / name).is_file()]
