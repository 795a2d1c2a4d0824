"""The Grounding tab: find, count, point at and read things; boxes drawn back exactly in original pixels."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import gradio as gr
from PIL import Image

from qvl_core.draw import draw_for_display
from qvl_core.engine.backend import Backend
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.errors import UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, open_image
from qvl_core.parse.grounding import PRESETS, build_prompt
from qvl_core.settings import as_number
from qvl_core.tasks.grounding import DEFAULT_GROUNDING_MAX_NEW_TOKENS, GroundingResult, ground, planned_input_size
from ui.common import (
    PARSED_TASK_THINKING,
    SamplingControls,
    ThinkingControls,
    api_number,
    default_sampling_values,
    format_stats,
    gpu_event,
    image_tokens_slider,
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
TABLE_HEADERS = ["label", "text", "x1", "y1", "x2", "y2", "x", "y"]
PLACEHOLDERS = {
    "Detect": "Categories, comma-separated: person, helmet, car",
    "Locate": "A description: the man in the red jacket",
    "Point": "What to point at: every cup on the table",
    "Count": "What to count: apples",
    "Text spotting": "(not used: text spotting reads every line)",
    "Custom": "Any prompt; every box and point in the answer is drawn",
}


def image_path_input(**kwargs) -> gr.Image:
    """A gr.Image that hands the handler the uploaded file's path without opening it.

    gr.Image(type="filepath") opens the file with PIL first, so an empty or fake file failed inside Gradio with
    a generic "the app raised an exception"; our `open_image` checks it instead and names the problem. (An
    instance override: a gr.Image subclass would make Gradio write a .pyi file next to this module.)
    """
    image = gr.Image(type="filepath", **kwargs)
    gradio_preprocess = image.preprocess

    def preprocess(payload):
        if payload is None or (payload.url or "").startswith("data:"):  # pasted or webcam images arrive inline
            return gradio_preprocess(payload)
        return str(payload.path)

    image.preprocess = preprocess
    return image


def table_rows(result: GroundingResult) -> list[list]:
    rows = []
    for d in result.detections:
        box = [round(v, 1) for v in d.box] if d.box else [None] * 4
        point = [round(v, 1) for v in d.point] if d.point else [None] * 2
        rows.append([d.label or "", d.text or "", *box, *point])
    return rows


def summary_markdown(result: GroundingResult) -> str:
    n = len(result.detections)
    w, h = result.image_size
    iw, ih = result.input_size
    lines = [f"**{n} found**" if n else "**The model found nothing** (no coordinates in its answer; see the raw "
             "answer below)."]
    if result.stated_count is not None and result.stated_count != n:
        lines.append(f"The model says **{result.stated_count}**.")
    lines.append(f"Image {w}×{h} px, seen by the model as {iw}×{ih} px. {format_stats(result.stats)}")
    if result.truncated:
        lines.append("⚠️ The answer hit the token limit: the last items may be missing. Raise *Max new tokens*.")
    return "  \n".join(lines)


def write_json(result: GroundingResult, files: OutputRoot) -> str:
    out = files.new_dir("qvl-ground-") / "detections.json"
    out.write_text(json.dumps(result.detections_json(), indent=2, ensure_ascii=False))
    return str(out)


def drawn_image(image_path: str, result: GroundingResult, *, max_pixels: int) -> Image.Image:
    """Every box and point with its label, on a display-sized copy (the table and JSON keep original pixels)."""
    return draw_for_display(open_image(image_path, max_pixels=max_pixels), list(result.detections))


class GroundingTab:
    """Builds the Grounding tab and its /ground API; handlers work on plain data."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None) -> None:
        self.gpu = gpu_event(concurrency)  # the shared GPU queue, and how many of its requests run at once
        self.session = session
        self.files = files or OutputRoot()  # the app's output folder; a tab built on its own gets one, unswept

    def prompt_for(self, preset: str, text: str) -> str:
        try:
            return build_prompt(preset, text, self.session.family)
        except UserError:
            return ""  # nothing typed yet: leave the prompt box empty rather than erroring while typing

    def resolution_info(self, image: str | None, max_tokens: float) -> str:
        if not image:
            return ""
        try:
            size = open_image(image, max_pixels=self.session.limits.max_image_pixels).size
            (w, h), tokens = planned_input_size(size, self.session.family, int(max_tokens))
        except UserError as exc:
            return f"⚠️ {exc}"
        return f"The model will see this image as {w}×{h} px = {tokens} visual tokens (original {size[0]}×{size[1]})."

    def run(self, image: str | None, preset: str, text: str, prompt: str, max_tokens: float, *sampling_values,
            thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET):
        """Stream the raw answer, then show the drawing, table, count and JSON download; the reasoning (last
        output) apart. `thinking`: None is the model's default (the page's switch starts at PARSED_TASK_THINKING)."""
        empty = (None, [], "", None)
        try:
            if not image:
                raise UserError("Add an image first (upload, drag and drop, paste or webcam).")
            prompt = (prompt or "").strip() or build_prompt(preset, text, self.session.family)
            sampling = to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session))
            think, budget = to_thinking(thinking, thinking_budget)
            result = None
            steps = ground(self.session, image, prompt, sampling=sampling,
                           max_image_tokens=as_number("max_image_tokens", max_tokens, whole=True),
                           thinking=think, thinking_budget=budget)
            with contextlib.closing(throttle(steps, urgent=lambda s: s.result is not None)) as shown_steps:
                for step in shown_steps:
                    result = step.result
                    if result is None:
                        yield *empty, step.raw, prompt, step.reasoning
            assert result is not None
            # Labelled outlines on the image itself, as Chat's figure draws them: gr.AnnotatedImage tinted every
            # object and named them only in a legend.
            shown = drawn_image(image, result, max_pixels=self.session.limits.max_image_pixels)
            yield (shown, table_rows(result), summary_markdown(result), write_json(result, self.files), result.raw,
                   prompt, result.reasoning)
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    def run_shown(self, *args, **kwargs):
        """`run` for the page, plus the resolution note as a last output: an error is one toast and clears the
        earlier result instead of badging it, and the note, which said the same words under the prompt."""
        cleared = (None, [], "", None, "", gr.skip(), "", "")
        with contextlib.closing(shown_errors(self.run(*args, **kwargs), cleared)) as outputs:
            for out in outputs:
                yield out if out is cleared else (*out, gr.skip())

    def run_page(self, thinking: bool, thinking_budget: float, *args):
        """The page's event: the Thinking switch and budget first, then `run`'s inputs."""
        yield from self.run_shown(*args, thinking=thinking, thinking_budget=thinking_budget)

    def api_ground(self, image: str, text: str, preset: str, max_image_tokens: float, max_new_tokens: float,
                   thinking: bool | None = PARSED_TASK_THINKING):
        """/ground: image + text (+ preset) -> (drawn image, detections JSON in original pixels). `thinking`
        starts off like the page's switch; the reasoning is never parsed."""
        try:
            if not image:
                raise UserError("An image is required.")
            prompt = build_prompt(preset or "Detect", text, self.session.family)
            sampling = to_sampling(*default_sampling_values(max_new_tokens))
            result = None
            tokens = as_number("max_image_tokens", max_image_tokens, whole=True)
            with contextlib.closing(ground(self.session, image, prompt, sampling=sampling, max_image_tokens=tokens,
                                           thinking=to_thinking(thinking, None)[0])) as steps:
                for step in steps:
                    result = step.result or result
            assert result is not None
            return drawn_image(image, result, max_pixels=self.session.limits.max_image_pixels), result.detections_json()
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    def render(self) -> None:
        with gr.Row():
            with gr.Column(scale=2):
                image = image_path_input(sources=["upload", "clipboard", "webcam"], label="Image",
                                 height=360, elem_id="ground-image")
                preset = gr.Radio(list(PRESETS), value="Detect", label="Task", elem_id="ground-preset")
                text = gr.Textbox(label="What to find", placeholder=PLACEHOLDERS["Detect"], elem_id="ground-text")
                prompt = gr.Textbox(label="Prompt sent to the model (editable)", lines=3, elem_id="ground-prompt")
                res_info = gr.Markdown(elem_id="ground-resolution")
                with gr.Row():
                    run_btn = gr.Button("Run", variant="primary", elem_id="ground-run")
                    stop_btn = gr.Button("Stop", variant="stop")
                with gr.Accordion("Options", open=False):
                    max_tokens = image_tokens_slider(DEFAULT_MAX_IMAGE_TOKENS)
                    sampling = SamplingControls.render(max_new_tokens=DEFAULT_GROUNDING_MAX_NEW_TOKENS,
                                                       defaults=model_sampling_defaults(self.session),
                                                       limit=self.session.limits.max_new_tokens)
                    thinking = ThinkingControls.render(model_thinking(self.session), parsed=True)
            with gr.Column(scale=3):
                annotated = gr.Image(label="Detections", height=460, type="pil", interactive=False,
                                     elem_id="ground-annotated")
                summary = gr.Markdown(elem_id="ground-summary")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections (original image pixels)",
                                     interactive=False, wrap=True, elem_id="ground-table")
                download = gr.File(label="Detections JSON")
                raw = gr.Textbox(label="Raw model answer", lines=6, elem_id="ground-raw")
                # Apart from the answer and never parsed: a draft box in it is not drawn.
                with gr.Accordion("Model's reasoning (not parsed)", open=False, elem_id="ground-reasoning-box"):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20, elem_id="ground-reasoning")
        examples = [[str(ASSETS / "shapes.png"), "Detect", "circle, rectangle, triangle"],
                    [str(ASSETS / "receipt.png"), "Text spotting", ""]]
        gr.Examples([e for e in examples if Path(e[0]).is_file()], inputs=[image, preset, text])

        def sync_prompt(p: str, t: str):
            return self.prompt_for(p, t), gr.Textbox(placeholder=PLACEHOLDERS.get(p, ""))

        for trigger in (preset.change, text.change):
            trigger(sync_prompt, [preset, text], [prompt, text], queue=False, api_visibility="private",
                    show_progress="hidden")
        for trigger in (image.change, max_tokens.release):
            trigger(self.resolution_info, [image, max_tokens], res_info, queue=False, api_visibility="private",
                    show_progress="hidden")
        running = run_btn.click(
            self.run_page, [*thinking.components, image, preset, text, prompt, max_tokens, *sampling.components],
            [annotated, table, summary, download, raw, prompt, reasoning, res_info],
            **self.gpu, api_visibility="private",
        )
        stop_btn.click(None, None, None, cancels=[running], queue=False, api_visibility="private")

        with gr.Group(visible=False):
            api_in = [image_path_input(label="image"), gr.Textbox(label="text"),
                      gr.Dropdown(list(PRESETS), value="Detect", label="preset"),
                      api_number(DEFAULT_MAX_IMAGE_TOKENS, "max_image_tokens"),
                      api_number(DEFAULT_GROUNDING_MAX_NEW_TOKENS, "max_new_tokens"),
                      gr.Checkbox(PARSED_TASK_THINKING, label="thinking")]
            api_out = [gr.Image(type="pil", label="drawn"), gr.JSON(label="detections")]
            api_btn = gr.Button()
        api_btn.click(self.api_ground, api_in, api_out, api_name="ground", **self.gpu)

