"""The Video QA tab: questions about a video; every timestamp in the answer is a chip that seeks the player."""

from __future__ import annotations

import contextlib
import html as html_lib
import json
import re
from pathlib import Path

import gradio as gr

from qvl_core.engine.backend import Backend
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.errors import UserError
from qvl_core.media.video import (
    DEFAULT_FPS,
    DEFAULT_MAX_FRAME_TOKENS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_TOTAL_VIDEO_TOKENS,
    MAX_FRAMES_LIMIT,
    VideoBudget,
    estimate,
    frames_at,
    probe,
)
from qvl_core.media.video.display import DisplayVideo, display_video
from qvl_core.parse.timespans import TimeSpan, format_timestamp, link_timestamps, spans_to_chapters
from qvl_core.settings import as_number
from qvl_core.tasks.video import DEFAULT_VIDEO_MAX_NEW_TOKENS, PRESETS, VideoAnswer, ask_video, build_video_prompt
from ui.common import (
    PARSED_TASK_THINKING,
    SamplingControls,
    ThinkingControls,
    api_number,
    format_stats,
    gpu_event,
    model_sampling_defaults,
    model_thinking,
    throttle,
    to_gr_error,
    to_sampling,
    to_thinking,
)
from ui.files import OutputRoot
from ui.toasts import shown_errors

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's assets/, beside ui/
MAX_GALLERY_FRAMES = 12
# Chips are our own markup (numbers we parsed); model text around them is escaped. One delegated listener,
# installed once per page (see shell.HEAD), seeks the player when a chip is clicked.
SEEK_JS = """
<script>
document.addEventListener("click", (event) => {
  const chip = event.target.closest && event.target.closest(".qvl-chip");
  if (!chip) return;
  const seconds = parseFloat(chip.dataset.t);
  const player = document.querySelector("#video-player video");
  if (!player || !isFinite(seconds)) return;
  player.currentTime = seconds;
  player.scrollIntoView({block: "nearest", behavior: "smooth"});
});
</script>
"""


def chip(seconds: float, label: str, *, offset: float = 0.0, duration: float | None = None) -> str:
    """A button that seeks the player to `seconds` of the file; `offset`: where the clip the model saw starts.

    A time past the end of the video is marked (the player would stop at the end without a word), and on a
    trimmed clip the title says which file time the model's clip time is.
    """
    where = format_timestamp(seconds)
    title = f"Jump to {where}"
    if offset:
        title = f"{format_timestamp(seconds - offset)} into the clip = {where} in the video"
    css, mark = "qvl-chip", ""
    if duration is not None and seconds > duration + 1e-3:
        css += " qvl-chip-past"
        title = f"{where} is past the end of the video ({format_timestamp(duration)}): jumps to the end"
        mark = " ⚠"
    return (f'<button type="button" class="{css}" data-t="{min(seconds, duration or seconds):.3f}" '
            f'title="{html_lib.escape(title, quote=True)}">{html_lib.escape(label)}{mark}</button>')


# A Markdown fence line: "```" or "```json" on its own line (the model wraps JSON answers in them).
_FENCE_RE = re.compile(r"^[ \t]*```[\w+-]*[ \t]*$\n?", re.MULTILINE)


def answer_html(text: str, offset: float = 0.0, duration: float | None = None) -> str:
    """The answer as HTML: escaped text, each timestamp a chip that seeks to (model time + offset) seconds.

    Fenced blocks (the JSON of Chapters) show as code without their ``` lines; a block still being streamed
    runs to the end of the text.
    """
    blocks = []
    for i, block in enumerate(_FENCE_RE.split(text)):
        if not block.strip():
            continue
        inner = _linked(block.strip("\n") if i % 2 else block, code=bool(i % 2), offset=offset, duration=duration)
        blocks.append(f'<pre class="qvl-code">{inner}</pre>' if i % 2 else inner)
    return f'<div class="qvl-answer">{"".join(blocks)}</div>'


def _linked(text: str, *, code: bool, offset: float, duration: float | None) -> str:
    parts = []
    for segment, seconds in link_timestamps(text):
        if seconds is None:
            escaped = html_lib.escape(segment)
            parts.append(escaped if code else escaped.replace("\n", "<br>"))
        else:
            parts.append(chip(seconds + offset, segment, offset=offset, duration=duration))
    return "".join(parts)


def view_spans(spans: tuple[TimeSpan, ...] | list[TimeSpan]) -> list[TimeSpan]:
    """Each span once per view (table, timeline, gallery), in the answer's order. Chapters answers repeat their
    JSON in prose ("turns blue at 00:04"): an instant at an interval's start is that interval, and spans with
    the same times (to the tenth shown) are one, the first with words kept."""
    starts = {round(s.start, 1) for s in spans if s.end is not None}
    out: list[TimeSpan] = []
    seen: dict[tuple, int] = {}
    for s in spans:
        key = (round(s.start, 1), None if s.end is None else round(s.end, 1))
        if s.end is None and key[0] in starts:
            continue
        if key in seen:
            if not out[seen[key]].text and s.text:
                out[seen[key]] = s
            continue
        seen[key] = len(out)
        out.append(s)
    return out


def timeline_html(answer: VideoAnswer) -> str:
    """Segments on a time axis (Chapters); each is clickable like a chip."""
    duration = answer.video.duration
    spans = [s for s in view_spans(answer.spans) if s.end is not None and s.end > s.start]
    if not spans or duration <= 0:
        return ""
    bars = []
    for i, s in enumerate(spans):
        left, width = 100 * s.start / duration, max(0.5, 100 * (s.end - s.start) / duration)
        title = html_lib.escape(f"{format_timestamp(s.start)}–{format_timestamp(s.end)} {s.text}", quote=True)
        bars.append(f'<button type="button" class="qvl-chip qvl-seg qvl-seg-{i % 6}" data-t="{s.start:.3f}" '
                    f'style="left:{left:.2f}%;width:{width:.2f}%" title="{title}"></button>')
    # The axis in the chips' one format (mm:ss.f), labelled, with a middle tick so a bar can be placed by eye.
    ticks = "".join(f"<span>{format_timestamp(t)}</span>" for t in (0.0, duration / 2, duration))
    return (f'<div class="qvl-timeline-label">Timeline of the video (click a bar to jump there)</div>'
            f'<div class="qvl-timeline">{"".join(bars)}</div><div class="qvl-axis">{ticks}</div>')


def model_video(shown: str | None, original: dict | None) -> str | None:
    """The file the model reads for what the player shows: the upload itself, not its display copy.

    `original` is {"shown": the copy's file name, "path": the upload}; Gradio copies the copy into its cache
    under another folder, so it is recognised by name. Anything else in the player (an example, a new upload
    that plays as it is) is read as it is.
    """
    if shown and original and Path(shown).name == original["shown"]:
        return original["path"]
    return shown


def estimate_markdown(video: str | None, session: Backend, budget: VideoBudget, start: float | None = None,
                      end: float | None = None) -> str:
    """What the run will cost, for the clip Start/End choose (the whole video when they are empty)."""
    if not video:
        return ""
    start, end = start or None, end or None  # an empty or 0 box: from the start, to the end
    try:
        info = probe(video)
        if info.duration <= 0:  # FFmpeg reads a picture as one frame lasting 0 s; Chat takes it, this tab cannot
            raise UserError(f"{Path(video).name!r} is not a video this app can read: it is one still picture with "
                            "no duration (an image renamed?). Choose an mp4, mov, mkv, webm or avi video.")
        est = estimate(info, session.family, budget, start=start, end=end)
    except UserError as exc:
        return f"⚠️ {exc}"
    w, h = est.frame_size
    clip_start, clip_end = start or 0.0, min(end or info.duration, info.duration)
    clip = (f"{clip_end - clip_start:.1f} s clip ({format_timestamp(clip_start)}–{format_timestamp(clip_end)} of "
            f"{info.duration:.1f} s)" if start or end else f"{info.duration:.1f} s")
    return (f"{clip} at {info.fps:.2f} fps → **{est.frames} frames** of {w}×{h} px → "
            f"**{est.visual_tokens:,} visual tokens** (KV cache ≈ {est.kv_cache_bytes_7b / 2**30:.2f} GiB on a 7B "
            "model). Lower fps, max frames or the frame budget to make it cheaper.")


def gallery(video: str, answer: VideoAnswer) -> list[tuple]:
    """The frames at the answer's times, decoded at exactly those times in one pass over the file."""
    spans = view_spans(answer.spans)
    times = sorted({round(s.start, 2) for s in spans})[:MAX_GALLERY_FRAMES]
    images = frames_at(video, times) if times else []
    captions = [next((s.text for s in spans if round(s.start, 2) == t), "") for t in times]
    return [(im, f"{format_timestamp(t)} {text[:60]}") for im, t, text in zip(images, times, captions, strict=True)]


class VideoTab:
    """Builds the Video QA tab and its /video_qa API."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None) -> None:
        self.gpu = gpu_event(concurrency)  # the shared GPU queue, and how many of its requests run at once
        self.session = session
        self.files = files or OutputRoot()  # the app's output folder; a tab built on its own gets one, unswept

    @staticmethod
    def budget(fps: float, max_frames: float, frame_tokens: float, total_tokens: float) -> VideoBudget:
        return VideoBudget(fps=as_number("fps", fps), max_frames=as_number("max_frames", max_frames, whole=True),
                           max_frame_tokens=as_number("max_frame_tokens", frame_tokens, whole=True),
                           total_tokens=as_number("total_tokens", total_tokens, whole=True))

    def for_display(self, video: str | None):
        """On upload: a video the browser cannot play is swapped in the player for a converted copy, made off
        the GPU queue; the model keeps the original (the State). Yields (player, original, note)."""
        if not video:
            yield gr.skip(), None, ""
            return
        yield gr.skip(), None, f"Checking whether the browser can play {Path(video).name!r}…"
        try:
            shown = display_video(video, self.files.path)
        except UserError as exc:  # the run will refuse it with the same words; the player has nothing to show
            shown = DisplayVideo(None, False, f"⚠️ {exc}")
        if shown.converted:
            yield shown.path, {"shown": Path(shown.path).name, "path": video}, shown.note
        else:
            yield gr.skip(), None, shown.note

    def prompt_for(self, preset: str, text: str) -> str:
        try:
            return build_video_prompt(preset, text, self.session.family)
        except UserError:
            return ""

    def run(self, video: str | None, preset: str, text: str, prompt: str, fps: float, max_frames: float,
            frame_tokens: float, total_tokens: float, start: float | None, end: float | None, *sampling_values,
            thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET):
        """Stream the answer with chips, then the frames, timeline, spans and download; the reasoning (last
        output) apart. `thinking`: None is the model's default (the page's switch starts at PARSED_TASK_THINKING)."""
        try:
            if not video:
                raise UserError("Add a video first (mp4, mov, mkv, webm or avi).")
            prompt = (prompt or "").strip() or build_video_prompt(preset, text, self.session.family)
            budget = self.budget(fps, max_frames, frame_tokens, total_tokens)
            answer = None
            think, think_budget = to_thinking(thinking, thinking_budget)
            steps = ask_video(self.session, video, prompt, budget=budget, start=start or None, end=end or None,
                              sampling=to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session)),
                              thinking=think, thinking_budget=think_budget)
            # answer_html re-links the whole answer: shown per token, its cost would grow with the square.
            with contextlib.closing(throttle(steps, urgent=lambda s: s.answer is not None)) as shown_steps:
                for step in shown_steps:
                    answer = step.answer
                    if answer is None:
                        yield (answer_html(step.raw), gr.skip(), gr.skip(), gr.skip(), gr.skip(), "", step.raw, prompt,
                               step.reasoning)
            assert answer is not None
            chapters = spans_to_chapters(view_spans(answer.spans))
            rows = [[c["start"], c["end"], c["duration"], c["text"]] for c in chapters]
            out = self.files.new_dir("qvl-video-") / "spans.json"
            out.write_text(json.dumps(answer.spans_json(), indent=2, ensure_ascii=False))
            note = self.summary(answer)
            shown = answer_html(answer.raw, answer.clock_offset, answer.video.duration)
            yield (shown, gallery(video, answer), timeline_html(answer), rows, str(out), note, answer.raw, prompt,
                   answer.reasoning)
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    def run_shown(self, *args, **kwargs):
        """`run` for the page: an error is one toast and clears the earlier answer instead of badging it."""
        yield from shown_errors(self.run(*args, **kwargs), ("", None, "", [], None, "", "", gr.skip(), ""))

    def run_page(self, thinking: bool, thinking_budget: float, original: dict | None, video: str | None, *args):
        """The page's event: the Thinking switch and budget, the upload behind a display copy, then `run`'s
        inputs."""
        yield from self.run_shown(model_video(video, original), *args, thinking=thinking,
                                  thinking_budget=thinking_budget)

    def summary(self, answer: VideoAnswer) -> str:
        v = answer.video
        lines = [f"{len(view_spans(answer.spans))} time span(s) found. The model saw {len(v.indices)} frames "
                 f"({v.fps:.2f} fps) of {v.frames.shape[2]}×{v.frames.shape[1]} px. {format_stats(answer.stats)}"]
        if not self.session.family.absolute_time:
            lines.append(f"⚠️ {self.session.family.display_name} does not encode absolute time: its timestamps are "
                         "estimates.")
        return "  \n".join(lines)

    def api_video_qa(self, video: str, question: str, fps: float, max_frames: float,
                     thinking: bool | None = PARSED_TASK_THINKING):
        """/video_qa: video + question -> (answer text, spans JSON in seconds of the file). `thinking` starts off
        like the page's switch; the reasoning is never parsed."""
        try:
            if not video:
                raise UserError("A video is required.")
            if not (question or "").strip():
                raise UserError("A question is required.")
            budget = VideoBudget(fps=as_number("fps", fps), max_frames=as_number("max_frames", max_frames, whole=True))
            *_, last = ask_video(self.session, video, question, budget=budget, thinking=to_thinking(thinking, None)[0])
            return last.answer.raw, last.answer.spans_json()
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    def render(self) -> None:
        with gr.Row():
            with gr.Column(scale=2):
                video = gr.Video(sources=["upload"], label="Video", elem_id="video-player", height=320)
                original = gr.State(None)  # the upload behind a display copy: what the model reads
                display_note = gr.Markdown(elem_id="video-display-note")
                preset = gr.Radio(list(PRESETS), value=PRESETS[0], label="Task", elem_id="video-preset")
                text = gr.Textbox(label="Question or event", elem_id="video-text",
                                  placeholder="e.g. the ball turns blue")
                prompt = gr.Textbox(label="Prompt sent to the model (editable)", lines=3, elem_id="video-prompt",
                                    value=self.prompt_for(PRESETS[0], ""))
                with gr.Accordion("Sampling and budget", open=False):
                    with gr.Row():
                        fps = gr.Slider(0.1, 8, value=DEFAULT_FPS, step=0.1, label="Frames per second")
                        max_frames = gr.Slider(4, MAX_FRAMES_LIMIT, value=DEFAULT_MAX_FRAMES, step=2,
                                               label="Max frames")
                    with gr.Row():
                        frame_tokens = gr.Slider(16, 768, value=DEFAULT_MAX_FRAME_TOKENS, step=16,
                                                 label="Max tokens per frame")
                        total_tokens = gr.Slider(1024, 65536, value=DEFAULT_TOTAL_VIDEO_TOKENS, step=1024,
                                                 label="Total video token budget")
                    with gr.Row():
                        start = gr.Number(None, label="Start (s)", minimum=0)
                        end = gr.Number(None, label="End (s)", minimum=0)
                    sampling = SamplingControls.render(max_new_tokens=DEFAULT_VIDEO_MAX_NEW_TOKENS,
                                                       defaults=model_sampling_defaults(self.session),
                                                       limit=self.session.limits.max_new_tokens)
                    thinking = ThinkingControls.render(model_thinking(self.session), parsed=True)
                estimate_md = gr.Markdown(elem_id="video-estimate")
                with gr.Row():
                    run_btn = gr.Button("Ask", variant="primary", elem_id="video-run")
                    stop_btn = gr.Button("Stop", variant="stop")
            with gr.Column(scale=3):
                answer = gr.HTML(label="Answer", elem_id="video-answer")
                summary = gr.Markdown(elem_id="video-summary")
                frames = gr.Gallery(label="Frames at the answer's times", columns=4, height=260,
                                    elem_id="video-gallery")
                timeline = gr.HTML(elem_id="video-timeline")
                table = gr.Dataframe(headers=["start", "end", "duration", "event"], interactive=False, wrap=True,
                                     label="Spans", elem_id="video-table")
                download = gr.File(label="Spans JSON")
                raw = gr.Textbox(label="Raw model answer", lines=4)
                # Apart from the answer and never parsed: a time weighed in it is not a chip.
                with gr.Accordion("Model's reasoning (not parsed)", open=False, elem_id="video-reasoning-box"):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20, elem_id="video-reasoning")
        gr.Examples([[str(ASSETS / "clock.mp4"), "When does … happen?", "the ball turns blue"]],
                    inputs=[video, preset, text], elem_id="video-examples")

        def sync_prompt(p: str, t: str):
            return self.prompt_for(p, t)

        for trigger in (preset.change, text.change):
            trigger(sync_prompt, [preset, text], prompt, queue=False, api_visibility="private",
                    show_progress="hidden")
        budget_inputs = [fps, max_frames, frame_tokens, total_tokens]

        def show_estimate(v, o, s, e, *b):
            try:
                return estimate_markdown(model_video(v, o), self.session, self.budget(*b), s, e)
            except UserError as exc:
                return f"⚠️ {exc}"

        for trigger in (video.change, start.change, end.change, *(c.release for c in budget_inputs)):
            trigger(show_estimate, [video, original, start, end, *budget_inputs], estimate_md, queue=False,
                    api_visibility="private", show_progress="hidden")
        running = run_btn.click(
            self.run_page, [*thinking.components, original, video, preset, text, prompt, *budget_inputs, start, end,
                            *sampling.components],
            [answer, frames, timeline, table, download, summary, raw, prompt, reasoning],
            **self.gpu, api_visibility="private",
        )
        stop_btn.click(None, None, None, cancels=[running], queue=False, api_visibility="private")
        # Its own queue, not the GPU's: a conversion never waits behind a generation, nor holds one up.
        video.upload(self.for_display, video, [video, original, display_note], concurrency_id="video-display",
                     concurrency_limit=2, api_visibility="private", show_progress="minimal")
        video.clear(lambda: (None, ""), None, [original, display_note], queue=False, api_visibility="private")

        with gr.Group(visible=False):
            api_in = [gr.Video(label="video"), gr.Textbox(label="question"), gr.Number(DEFAULT_FPS, label="fps"),
                      api_number(DEFAULT_MAX_FRAMES, "max_frames"), gr.Checkbox(PARSED_TASK_THINKING, label="thinking")]
            api_out = [gr.Textbox(label="answer"), gr.JSON(label="spans")]
            api_btn = gr.Button()
        api_btn.click(self.api_video_qa, api_in, api_out, api_name="video_qa", **self.gpu)
