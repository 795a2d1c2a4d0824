"""The Document parsing tab: pages or PDFs in; QwenVL HTML, a sandboxed preview, layout boxes, Markdown, JSON out."""

from __future__ import annotations

import contextlib
import html as html_lib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr

from qvl_core.draw import draw_layout
from qvl_core.engine.backend import Backend
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.errors import UserError
from qvl_core.media.documents import DEFAULT_DPI, DOCUMENT_SUFFIXES, MAX_DPI, MIN_DPI
from qvl_core.parse.html import iframe_html
from qvl_core.settings import as_number
from qvl_core.tasks.documents import (
    DEFAULT_DOC_IMAGE_TOKENS,
    MODES,
    JobOptions,
    JobProgress,
    PageResult,
    default_max_new_tokens,
    job_html,
    job_json,
    job_markdown,
    parse_fields,
    run_job,
    write_job_files,
)
from ui.common import (
    PARSED_TASK_THINKING,
    SamplingControls,
    ThinkingControls,
    default_sampling_values,
    format_stats,
    gpu_event,
    image_tokens_slider,
    model_sampling_defaults,
    model_thinking,
    plain_markdown,
    throttle,
    to_gr_error,
    to_sampling,
    to_thinking,
)
from ui.files import OutputRoot
from ui.toasts import shown_errors

ASSETS = Path(__file__).resolve().parents[2] / "assets"  # the repository's assets/, beside ui/
PREVIEW_HEIGHT = 720
N_VIEWS = 7  # what `page_views` fills: preview, layout, HTML, Markdown, fields table, fields note, reasoning


def page_status_line(r: PageResult) -> str:
    """A finished page's line in the status: blocks, stats, truncation and field problems."""
    flag = " ⚠️ **hit the token limit: the page may be cut short** (raise Max new tokens)" if r.truncated else ""
    kind = "" if r.is_html or r.fields is not None else " (the answer is not HTML: shown as text)"
    # Field problems quote what the model wrote (its keys) and labels hold file names: shown as text, never markup.
    problems = f" — {'; '.join(plain_markdown(p) for p in r.field_problems)}" if r.field_problems else ""
    return f"- {plain_markdown(r.label)}: {len(r.blocks)} layout blocks, {format_stats(r.stats)}{flag}{kind}{problems}"


def status_markdown(progress: JobProgress, page_lines: list[str] | None = None, *, stopped: bool = False) -> str:
    """One line per finished page (with truncation flags), the page in progress, and any file errors.

    `page_lines`: the finished pages' lines made so far (the first ones are reused, the rest added), so a
    streaming job renders each finished page's line once instead of once per update. `stopped`: the person
    pressed Stop; the page that was in progress is no longer "being parsed".
    """
    lines = []
    n = len(progress.done)
    if stopped:
        lines.append(f"**Stopped: {n} of {progress.total_pages} pages done.** "
                     f"{'The finished pages are kept below.' if n else 'Nothing was finished.'}")
    elif progress.finished:
        lines.append(f"**Done: {n} of {progress.total_pages} pages.**")
    elif progress.current:
        lines.append(f"**Parsing {plain_markdown(progress.current)}** ({n} of {progress.total_pages} pages done)")
    page_lines = [] if page_lines is None else page_lines
    page_lines += [page_status_line(r) for r in progress.done[len(page_lines):]]
    lines += page_lines[:n]
    lines += [f"- ❌ {plain_markdown(e)}" for e in progress.errors]
    return "\n".join(lines)


def _with_view_changes(job: Iterator[JobProgress]) -> Iterator[tuple[JobProgress, bool]]:
    """(state, whether anything but the live text changed: a page, the page in progress, an error, the end)."""
    seen = None
    with contextlib.closing(job):
        for state in job:
            key = (len(state.done), state.current, len(state.errors), state.finished)
            yield state, key != seen
            seen = key


def fields_note(page: PageResult) -> str:
    """Above the Fields table: what is wrong with the page's fields, in plain view (empty when nothing is)."""
    if page.fields is None or not page.field_problems:
        return ""
    # The problems quote what the model wrote (its keys): shown as text, never markup.
    return "\n".join(["⚠️ **This page's fields have problems** (the model's whole answer is in the HTML tab):",
                      *(f"- **{plain_markdown(p)}**" for p in page.field_problems)])


def page_views(pages: list[PageResult], label: str | None):
    """(preview, layout image, raw HTML, Markdown, fields rows, fields note, reasoning) for the chosen page."""
    page = next((p for p in pages if p.label == label), pages[-1] if pages else None)
    if page is None:
        return "", None, "", "", [], "", ""
    preview = iframe_html(page.html if page.is_html else f"<pre>{html_lib.escape(page.raw)}</pre>",
                          height=PREVIEW_HEIGHT, title=f"Preview of {page.label}")
    layout = draw_layout(page.image, [b for b in page.blocks if b.box is not None])
    rows = [[k, "" if v is None else str(v)] for k, v in (page.fields or {}).items()]
    return preview, layout, page.html or page.raw, page.markdown, rows, fields_note(page), page.reasoning


def job_views(progress: JobProgress | None, label: str | None):
    """`page_views` of a job's finished pages (the tab keeps the job's last JobProgress)."""
    return page_views(list(progress.done) if progress else [], label)


def stopped_status(progress: JobProgress | None) -> str:
    """The status after Stop: what was finished, and no page still "being parsed"."""
    return status_markdown(progress, stopped=True) if progress else "**Stopped before any page started.**"


def job_stem(files: list[str] | None) -> str:
    """Downloads are named after the file when there is one, else "document"."""
    return Path(files[0]).stem if files and len(files) == 1 else "document"


class DocumentsTab:
    """Builds the Document parsing tab and its /parse_document API."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None) -> None:
        self.gpu = gpu_event(concurrency)  # the shared GPU queue, and how many of its requests run at once
        self.session = session
        self.files = files or OutputRoot()  # the app's output folder; a tab built on its own gets one, unswept

    def options(self, mode: str, fields: str, pages: str, dpi: float, max_tokens: float, sampling_values,
                n_files: int = 1, *, thinking: bool | None = None,
                thinking_budget: float | None = DEFAULT_THINKING_BUDGET) -> JobOptions:
        spec = parse_fields(fields) if mode == MODES[3] else None
        think, budget = to_thinking(thinking, thinking_budget)
        return JobOptions(mode=mode, pages=(pages or "").strip() or None, dpi=dpi,  # JobOptions checks it
                          max_image_tokens=as_number("max_image_tokens", max_tokens, whole=True),
                          sampling=to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session)),
                          fields=spec, thinking=think, thinking_budget=budget,
                          clamp_pages=n_files > 1)  # pages per job: the backend's limits.max_pdf_pages

    def run(self, files: list[str] | None, mode: str, fields: str, pages: str, dpi: float, max_tokens: float,
            *sampling_values, thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET,
            progress=gr.Progress()):  # noqa: B008 - Gradio injects the progress tracker here
        """Stream a whole job. Views change when a page finishes; the live box streams the current page, the
        reasoning box its reasoning (the last view). `thinking`: None is the model's default (the page's switch
        starts at PARSED_TASK_THINKING)."""
        skip = gr.skip()
        try:
            options = self.options(mode, fields, pages, dpi, max_tokens, sampling_values, len(files or []),
                                   thinking=thinking, thinking_budget=thinking_budget)
            outdir = self.files.new_dir("qvl-docjob-")
            downloads: list[str] = []
            page_lines: list[str] = []  # status lines of finished pages, each rendered once
            shown = 0
            # Token-only updates (the live box) are throttled; a page finishing or starting is shown at once.
            job = throttle(_with_view_changes(run_job(self.session, files or [], options)), urgent=lambda s: s[1])
            limit = options.sampling.max_new_tokens
            with contextlib.closing(job):
                for state, changed in job:
                    pages_done = list(state.done)
                    # Tokens too: a long page is minutes without a page finishing, and "0/1" looked stuck.
                    tokens = f" · {state.tokens} of at most {limit} tokens" if state.current and state.tokens else ""
                    progress((len(pages_done), max(state.total_pages, 1)),
                             desc=f"{state.current or 'Parsing'}{tokens}", unit="pages")
                    kept = replace(state, partial="", reasoning="")  # for Stop and the picker; the live text is shown
                    if len(pages_done) != shown or state.finished:
                        # A page finished: refresh views and downloads (Stop keeps what is here now).
                        shown = len(pages_done)
                        if pages_done:
                            downloads = [str(p) for p in write_job_files(pages_done, outdir, job_stem(files))]
                        labels = [p.label for p in pages_done]
                        views = page_views(pages_done, labels[-1] if labels else None)
                        live = state.partial or (pages_done[-1].raw if pages_done else "")
                        yield (kept, gr.Dropdown(choices=labels, value=labels[-1] if labels else None),
                               *views, live, status_markdown(state, page_lines), downloads or None)
                    elif changed:
                        yield (kept, skip, *[skip] * (N_VIEWS - 1), state.reasoning, state.partial,
                               status_markdown(state, page_lines), skip)
                    else:
                        yield (skip, skip, *[skip] * (N_VIEWS - 1), state.reasoning, state.partial, skip, skip)
                    if state.finished and not state.done and state.errors:
                        raise UserError("Nothing could be parsed: " + " ".join(state.errors))
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    def run_shown(self, *args, progress=gr.Progress(), **kwargs):  # noqa: B008 - Gradio injects the tracker here
        """`run` for the page: an error is one toast and clears the earlier job's views, status and downloads
        (a refused job left the last one's preview and "Done" under red badges, looking current)."""
        cleared = (None, gr.Dropdown(choices=[], value=None), "", None, "", "", [], "", "", "", "", None)
        yield from shown_errors(self.run(*args, progress=progress, **kwargs), cleared)

    def run_page(self, thinking: bool, thinking_budget: float, *args,
                 progress=gr.Progress()):  # noqa: B008 - Gradio injects the progress tracker here
        """The page's event: the Thinking switch and budget first, then `run`'s inputs."""
        yield from self.run_shown(*args, thinking=thinking, thinking_budget=thinking_budget, progress=progress)

    def api_parse(self, file: str, mode: str, pages: str, dpi: float, fields: str,
                  thinking: bool | None = PARSED_TASK_THINKING):
        """/parse_document: one file in; the job's sanitized HTML, Markdown and per-page layout JSON out.
        `thinking` (last, so positional callers keep working) starts off like the page's switch; the reasoning
        is never parsed, and each page's is in its layout entry."""
        try:
            if not file:
                raise UserError("A PDF or page image is required.")
            # An empty dpi is the default; 0 is refused like any value out of range, never replaced.
            options = self.options(mode or MODES[0], fields or "", pages or "", DEFAULT_DPI if dpi is None else dpi,
                                   DEFAULT_DOC_IMAGE_TOKENS,
                                   default_sampling_values(default_max_new_tokens(self.session.status())),
                                   thinking=to_thinking(thinking, None)[0])
            *_, last = run_job(self.session, [file], options)
            if last.errors and not last.done:
                raise UserError("; ".join(last.errors))
            return job_html(last.done), job_markdown(last.done), job_json(last.done)
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    def render(self) -> None:
        state = gr.State(None)  # the job's last JobProgress: its finished pages, for the page picker and Stop
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(file_count="multiple", file_types=list(DOCUMENT_SUFFIXES), type="filepath",
                                label=f"Pages or PDFs (up to {self.session.limits.max_pdf_pages} pages per job)",
                                elem_id="doc-files")
                mode = gr.Radio(list(MODES), value=MODES[0], label="Output", elem_id="doc-mode")
                fields = gr.Textbox(label="Fields to extract (comma-separated) or a JSON schema", lines=3,
                                    visible=False, placeholder="invoice number, date, vendor, total")
                with gr.Row():
                    pages = gr.Textbox(label="Pages", placeholder="all, or 1-5, 2,4,7-9", scale=1)
                    dpi = gr.Slider(MIN_DPI, MAX_DPI, value=DEFAULT_DPI, step=10, label="PDF render DPI", scale=2)
                with gr.Accordion("Options", open=False):
                    max_tokens = image_tokens_slider(DEFAULT_DOC_IMAGE_TOKENS)
                    sampling = SamplingControls.render(max_new_tokens=default_max_new_tokens(self.session.status()),
                                                       defaults=model_sampling_defaults(self.session),
                                                       limit=self.session.limits.max_new_tokens)
                    thinking = ThinkingControls.render(model_thinking(self.session), parsed=True)
                with gr.Row():
                    run_btn = gr.Button("Parse", variant="primary", elem_id="doc-run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="doc-stop")
                status = gr.Markdown(elem_id="doc-status")
                downloads = gr.File(label="Downloads (.html, .md, .json)", file_count="multiple", interactive=False,
                                    elem_id="doc-downloads")
            with gr.Column(scale=3):
                page_pick = gr.Dropdown(label="Page", choices=[], elem_id="doc-page")
                with gr.Tabs(elem_id="doc-views") as view_tabs:
                    with gr.Tab("Preview", id="preview"):
                        preview = gr.HTML(elem_id="doc-preview")
                    with gr.Tab("Layout"):
                        layout = gr.Image(label="Layout boxes by kind", type="pil", interactive=False,
                                          elem_id="doc-layout")
                    with gr.Tab("HTML"):
                        raw_html = gr.Code(language="html", label="QwenVL HTML (as the model wrote it)")
                    with gr.Tab("Markdown"):
                        markdown = gr.Code(language="markdown", label="Markdown", elem_id="doc-markdown")
                    with gr.Tab("Fields", id="fields"):
                        fields_problems = gr.Markdown(elem_id="doc-field-problems")
                        fields_table = gr.Dataframe(headers=["field", "value"], interactive=False,
                                                    elem_id="doc-fields")
                live = gr.Textbox(label="Live output (current page)", lines=6, max_lines=12, elem_id="doc-live")
                # Apart from the answer and never parsed: a draft block in it is not laid out. A Textbox: plain text.
                with gr.Accordion("Model's reasoning (not parsed)", open=False, elem_id="doc-reasoning-box"):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20, elem_id="doc-reasoning")
        examples = [[[str(ASSETS / "receipt.png")], MODES[0]], [[str(ASSETS / "receipt.png")], MODES[3]]]
        gr.Examples([e for e in examples if Path(e[0][0]).is_file()], inputs=[files, mode])

        def show_mode(m: str):  # Extract fields: its list box, and its results in view
            return gr.Textbox(visible=m == MODES[3]), gr.Tabs(selected="fields" if m == MODES[3] else "preview")

        mode.change(show_mode, mode, [fields, view_tabs], queue=False, api_visibility="private")
        views = [preview, layout, raw_html, markdown, fields_table, fields_problems, reasoning]
        page_pick.change(job_views, [state, page_pick], views, queue=False, api_visibility="private")
        running = run_btn.click(
            self.run_page, [*thinking.components, files, mode, fields, pages, dpi, max_tokens, *sampling.components],
            [state, page_pick, *views, live, status, downloads],
            **self.gpu, api_visibility="private",
        )
        # Stop ends the job where it is: the status then says so, instead of "Parsing page 3/12" for ever.
        stop_btn.click(stopped_status, state, status, cancels=[running], queue=False, api_visibility="private")

        with gr.Group(visible=False):
            api_in = [gr.File(type="filepath", label="file"), gr.Dropdown(list(MODES), value=MODES[0], label="mode"),
                      gr.Textbox("all", label="pages"), gr.Number(DEFAULT_DPI, label="dpi"),
                      gr.Textbox("", label="fields"), gr.Checkbox(PARSED_TASK_THINKING, label="thinking")]
            api_out = [gr.Textbox(label="html"), gr.Textbox(label="markdown"), gr.JSON(label="layout")]
            api_btn = gr.Button()
        api_btn.click(self.api_parse, api_in, api_out, api_name="parse_document", **self.gpu)
