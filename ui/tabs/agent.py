"""The Agent tab: the model acting on screenshots (computer and phone), zooming in to look closer, and (when the
app enables it) driving a live browser page; its /agent_step and /agent_zoom API."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from qvl_core.draw import draw_action, draw_zoom
from qvl_core.engine.backend import Backend
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.errors import UserError
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, open_image
from qvl_core.parse.safe_markdown import safe_markdown
from qvl_core.settings import as_number
from qvl_core.tasks.agent import (
    DEFAULT_AGENT_MAX_NEW_TOKENS,
    DEFAULT_MAX_ZOOMS,
    MAX_ZOOMS_LIMIT,
    SCREENS,
    AgentStepResult,
    Trajectory,
    ZoomResult,
    agent_step,
    trajectory_from_text,
    zoom_answer,
)
from qvl_core.tasks.live_browser import (
    DEFAULT_LIVE_STEPS,
    MAX_LIVE_STEPS,
    LiveBrowser,
    LiveProgress,
    LiveStep,
    describe,
    drive,
)
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
    plain_markdown,
    throttle,
    to_gr_error,
    to_sampling,
    to_thinking,
)
from ui.files import OutputRoot
from ui.tabs.grounding import image_path_input
from ui.toasts import shown_errors

STEP_HEADERS = ["step", "action", "at (x, y)", "to (x, y)", "model wrote", "text", "thought"]
STEP_WIDTHS = ["7%", "14%", "13%", "13%", "13%", "15%", "25%"]
LIVE_OFF = ("The live browser is off. Start the app with `--agent-browser` to let the model drive a page here "
            "(loopback pages only, unless `--agent-browser-hosts` names more hosts).")


@dataclass(frozen=True)
class AgentView:
    """The Screenshots view's per-session state: the task so far and each step's drawing (path, caption)."""

    trajectory: Trajectory | None = None
    drawings: tuple[tuple[str, str], ...] = ()


def _pt(p: list[float] | tuple[float, float] | None) -> str:
    return f"({p[0]:g}, {p[1]:g})" if p else ""


def step_summary(n: int, result: AgentStepResult) -> str:
    """Markdown for one step; everything the model wrote goes through plain_markdown (shown as text)."""
    (w, h), (iw, ih), (sw, sh) = result.image_size, result.input_size, result.stated_size
    lines = []
    if result.action is None:
        lines.append(f"**Step {n}: no action.** {plain_markdown(result.problem.message if result.problem else '')}")
    else:
        a = result.action
        head = f"**Step {n}: {plain_markdown(describe(a))}**"
        if a.coordinate and a.model_coordinate:
            mx, my = a.model_coordinate
            head += f" px in the screenshot (the model wrote ({mx:g}, {my:g}) on its {sw}×{sh} screen)"
        lines.append(head)
        if a.final:
            lines.append("The task is finished: press **New task** to start another.")
    if result.thought:
        lines.append(f"*The model:* {plain_markdown(result.thought)}")
    lines += [f"Screenshot {w}×{h} px, seen by the model as {iw}×{ih} px. {format_stats(result.stats)}",
              *(f"Note: {plain_markdown(note)}" for note in result.notes)]
    return "  \n".join(lines)


def zoom_summary(result: ZoomResult) -> str:
    parts = [safe_markdown(result.answer) if result.answer.strip() else "*(no answer)*"]
    if result.problem is not None:
        parts.append(f"⚠️ {plain_markdown(result.problem.message)}")
    n = len(result.zooms)
    parts.append(f"*{n} zoom{'s' if n != 1 else ''} · image {result.image_size[0]}×{result.image_size[1]} px · "
                 f"{format_stats(result.stats)}*")
    return "\n\n".join(parts)


class AgentTab:
    """Builds the Agent tab and its API; handlers work on plain data and the core's agent functions."""

    def __init__(self, session: Backend, *, concurrency: int = 1, files: OutputRoot | None = None,
                 browser: LiveBrowser | None = None) -> None:
        self.gpu = gpu_event(concurrency)
        self.session = session
        self.files = files or OutputRoot()
        self.browser = browser  # None: the live browser is off

    # ---- screenshots ---------------------------------------------------------------------------------------------
    def _trajectory_file(self, trajectory: Trajectory) -> str:
        out = self.files.new_dir("qvl-agent-") / "trajectory.json"
        out.write_text(json.dumps(trajectory.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        return str(out)

    def step(self, view: AgentView | None, screenshot: str | None, task: str, screen: str, max_tokens: float,
             *sampling_values, thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET):
        """One step on `screenshot`, continuing `view`'s task (a changed task or device starts a new one).
        Yields (drawing, summary, step JSON, steps table, gallery, trajectory file, raw, reasoning, view)."""
        view = view or AgentView()
        if not screenshot:
            raise UserError("Add a screenshot first (upload, drag and drop or paste).")
        task = (task or "").strip()
        trajectory = view.trajectory
        if trajectory is None or trajectory.task != task or trajectory.screen != screen:
            trajectory, view = Trajectory(task, screen), AgentView()
        elif trajectory.done:
            raise UserError("This task has ended (the model said terminate or answer): press New task to start "
                            "another, or change the task.")
        sampling = to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session))
        think, budget = to_thinking(thinking, thinking_budget)
        tokens = as_number("max_image_tokens", max_tokens, whole=True)
        result = None
        steps = agent_step(self.session, screenshot, trajectory, sampling=sampling, max_image_tokens=tokens,
                           thinking=think, thinking_budget=budget)
        keep = (gr.skip(),) * 6
        with contextlib.closing(throttle(steps, urgent=lambda s: s.result is not None)) as shown:
            for progress in shown:
                result = progress.result
                if result is None:
                    yield *keep, progress.raw, progress.reasoning, view
        assert result is not None
        n = len(trajectory.steps) + 1
        trajectory = trajectory.with_step(result, screenshot)
        original = open_image(screenshot, max_pixels=self.session.limits.max_image_pixels)
        drawn = draw_action(original, result.action, start=result.start,
                            problem=result.problem.message if result.problem else None)
        path = self.files.new_dir("qvl-agent-") / f"step-{n:02d}.png"
        drawn.save(path)
        caption = f"{n}. {describe(result.action)}" if result.action else f"{n}. no action"
        view = AgentView(trajectory, (*view.drawings, (str(path), caption)))
        yield (drawn, step_summary(n, result), {**result.to_json(), "step": n}, self._rows(view), list(view.drawings),
               self._trajectory_file(trajectory), result.raw, result.reasoning, view)

    @staticmethod
    def _rows(view: AgentView) -> list[list]:
        rows = []
        for i, s in enumerate(view.trajectory.steps if view.trajectory else (), 1):
            r = s.result
            wrote = ", ".join(f"{v:g}" for v in r.get("model_coordinate") or [])
            detail = r.get("text") if r.get("text") is not None else "+".join(r.get("keys") or []) or (
                r.get("button") or "")
            problem = (r.get("problem") or {}).get("message", "")
            rows.append([i, r.get("action") or "(none)", _pt(r.get("coordinate")), _pt(r.get("coordinate2")), wrote,
                         detail, s.thought or problem])
        return rows

    def step_shown(self, *args, **kwargs):
        """`step` for the page: an error is one toast and leaves the trajectory as it was."""
        view = args[0]
        cleared = (gr.skip(),) * 8 + (view,)
        with contextlib.closing(shown_errors(self._guarded(self.step(*args, **kwargs)), cleared)) as outputs:
            yield from outputs

    @staticmethod
    def _guarded(steps):
        try:
            yield from steps
        except Exception as exc:  # noqa: BLE001 - every error becomes a message; the app keeps serving
            raise to_gr_error(exc) from None

    def step_page(self, thinking: bool, thinking_budget: float, *args):
        yield from self.step_shown(*args, thinking=thinking, thinking_budget=thinking_budget)

    @staticmethod
    def new_task():
        return None, "", None, [], [], None, "", "", AgentView()

    def api_step(self, screenshot: str, task: str, screen: str, history: str, max_new_tokens: float,
                 thinking: bool | None = PARSED_TASK_THINKING):
        """/agent_step: screenshot + task (+ the previous step's JSON as history) -> (drawing, step JSON).

        The JSON is the CLI's (`qvl agent --json`): action, coordinate(s) in original pixels, model_coordinate(s)
        as written, image_size, input_size, raw, and `trajectory`, which the next call passes back as history."""
        try:
            if not screenshot:
                raise UserError("A screenshot is required.")
            steps = trajectory_from_text(history, "history").steps if history and str(history).strip() else ()
            trajectory = Trajectory((task or "").strip(), screen or "computer", steps)
            sampling = to_sampling(*default_sampling_values(max_new_tokens))
            result = None
            with contextlib.closing(agent_step(self.session, screenshot, trajectory, sampling=sampling,
                                               thinking=to_thinking(thinking, None)[0])) as progress:
                for p in progress:
                    result = p.result or result
            assert result is not None
            drawn = draw_action(open_image(screenshot, max_pixels=self.session.limits.max_image_pixels),
                                result.action, start=result.start,
                                problem=result.problem.message if result.problem else None)
            return drawn, {**result.to_json(), "trajectory": trajectory.with_step(result, screenshot).to_json()}
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    # ---- zooming in ---------------------------------------------------------------------------------------------
    def zoom(self, image: str | None, question: str, max_zooms: float, max_tokens: float, *sampling_values,
             thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET):
        """Yields (original with zoom boxes, crops gallery, answer, JSON file, raw, reasoning)."""
        try:
            if not image:
                raise UserError("Add an image first (upload, drag and drop or paste).")
            sampling = to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session))
            think, budget = to_thinking(thinking, thinking_budget)
            steps = zoom_answer(self.session, image, question or "",
                                max_zooms=as_number("zoom steps", max_zooms, whole=True),
                                sampling=sampling, max_image_tokens=as_number("max_image_tokens", max_tokens,
                                                                              whole=True),
                                thinking=think, thinking_budget=budget)
            original = open_image(image, max_pixels=self.session.limits.max_image_pixels)
            result, shown_zooms = None, -1
            with contextlib.closing(throttle(steps, urgent=lambda s: s.result is not None or
                                             len(s.zooms) != shown_zooms)) as shown:
                for progress in shown:
                    result = progress.result
                    if result is None:
                        if len(progress.zooms) != shown_zooms:  # a new zoom: redraw the boxes and crops
                            shown_zooms = len(progress.zooms)
                            yield (draw_zoom(original, [z.call for z in progress.zooms]),
                                   self._crops(progress.zooms), "", None, progress.raw, progress.reasoning)
                        else:
                            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), progress.raw, progress.reasoning
            assert result is not None
            out = self.files.new_dir("qvl-zoom-") / "zoom.json"
            out.write_text(json.dumps(result.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
            yield (draw_zoom(original, [z.call for z in result.zooms]), self._crops(result.zooms),
                   zoom_summary(result), str(out), result.answer, result.reasoning)
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    @staticmethod
    def _crops(zooms) -> list[tuple[Image.Image, str]]:
        out = []
        for n, z in enumerate(zooms, 1):
            x1, y1, x2, y2 = z.call.box
            out.append((z.crop, f"zoom {n}: {z.call.label or 'region'} ({x1}, {y1}) - ({x2}, {y2})"))
        return out

    def zoom_page(self, thinking: bool, thinking_budget: float, *args):
        cleared = (None, [], "", None, "", "")
        with contextlib.closing(shown_errors(self.zoom(*args, thinking=thinking, thinking_budget=thinking_budget),
                                             cleared)) as outputs:
            yield from outputs

    def api_zoom(self, image: str, question: str, max_zooms: float, max_new_tokens: float,
                 thinking: bool | None = PARSED_TASK_THINKING):
        """/agent_zoom: image + question -> (original with the zoom boxes, {answer, zooms (original pixels), ...})."""
        try:
            if not image:
                raise UserError("An image is required.")
            result = None
            with contextlib.closing(zoom_answer(self.session, image, question or "",
                                                max_zooms=as_number("max_zooms", max_zooms, whole=True),
                                                sampling=to_sampling(*default_sampling_values(max_new_tokens)),
                                                thinking=to_thinking(thinking, None)[0])) as steps:
                for s in steps:
                    result = s.result or result
            assert result is not None
            original = open_image(image, max_pixels=self.session.limits.max_image_pixels)
            return draw_zoom(original, [z.call for z in result.zooms]), result.to_json()
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    # ---- the live browser ---------------------------------------------------------------------------------------
    def live(self, url: str, task: str, screen: str, max_steps: float, max_tokens: float, *sampling_values,
             thinking: bool | None = None, thinking_budget: float | None = DEFAULT_THINKING_BUDGET,
             owner: str = ""):
        """Drive `owner`'s live page. Yields (current screenshot with the action, log, steps gallery, JSON file,
        raw, reasoning)."""
        try:
            if self.browser is None:
                raise UserError(LIVE_OFF.replace("`", ""))
            sampling = to_sampling(*sampling_values, defaults=model_sampling_defaults(self.session))
            think, budget = to_thinking(thinking, thinking_budget)
            folder = self.files.new_dir("qvl-live-")
            log: list[str] = []
            steps = drive(self.session, self.browser, owner, url, task, folder=folder, screen=screen,
                          max_steps=as_number("steps", max_steps, whole=True), sampling=sampling,
                          max_image_tokens=as_number("max_image_tokens", max_tokens, whole=True),
                          thinking=think, thinking_budget=budget)
            last: LiveProgress | None = None
            with contextlib.closing(throttle(steps, urgent=lambda p: p.phase != "thinking" or p.raw == "")) as shown:
                for p in shown:
                    last = p
                    if p.phase == "acted" and log and log[-1].endswith(" …"):
                        log.pop()  # "Step n: type 'hi' …" (before) becomes "Step n: type 'hi' ✓" (after)
                    if p.note:
                        log.append(p.note)
                    if p.phase == "thinking" and p.raw:
                        yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), p.raw, p.reasoning
                        continue
                    yield (self._live_image(p), self._live_log(p, log), self._live_gallery(p.steps), None, p.raw,
                           p.reasoning)
            if last is not None:
                out = folder / "trajectory.json"
                data = {**last.trajectory.to_json(), "url": last.url, "steps": [s.to_json() for s in last.steps]}
                out.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
                yield gr.skip(), gr.skip(), gr.skip(), str(out), gr.skip(), gr.skip()
        except Exception as exc:  # noqa: BLE001
            raise to_gr_error(exc) from None

    def _live_image(self, p: LiveProgress) -> Image.Image | None:
        if p.screenshot is None:
            return None
        shot = Image.open(p.screenshot)
        result = p.pending or (p.steps[-1].result if p.phase in ("acted", "done") and p.steps and
                               p.steps[-1].screenshot == p.screenshot else None)
        if result is None:
            return shot.convert("RGB")
        return draw_action(shot, result.action, start=result.start,
                           problem=result.problem.message if result.problem else None)

    @staticmethod
    def _live_log(p: LiveProgress, log: list[str]) -> str:
        lines = [f"Page: {plain_markdown(p.url)}"] if p.url else []
        lines += [plain_markdown(line) for line in log[-30:]]
        for step in p.steps[-1:]:
            if step.outcome is not None and step.outcome.blocked:
                lines.append(f"Blocked {len(step.outcome.blocked)} request(s) to hosts outside the allowlist: "
                             + ", ".join(f"`{plain_markdown(u[:80])}`" for u in step.outcome.blocked[:3]))
        if p.phase == "thinking":
            lines.append(f"Step {len(p.steps) + 1}: the model is looking at the page …")
        return "  \n".join(lines)

    @staticmethod
    def _live_gallery(steps: tuple[LiveStep, ...]) -> list[tuple[str, str]]:
        def caption(s: LiveStep) -> str:
            if s.outcome is not None:
                return s.outcome.done
            return describe(s.result.action) if s.result.action else "no action"

        return [(str(s.screenshot), f"{n}. {caption(s)}") for n, s in enumerate(steps, 1)]

    def live_page(self, request: gr.Request, thinking: bool, thinking_budget: float, *args):
        """The page's event: Gradio passes the browser session (whose page this is) first."""
        cleared = (gr.skip(),) * 6
        steps = self.live(*args, thinking=thinking, thinking_budget=thinking_budget, owner=_owner(request))
        with contextlib.closing(shown_errors(steps, cleared)) as outputs:
            yield from outputs

    def close_live(self, request: gr.Request) -> str:
        if self.browser is not None:
            self.browser.close_page(_owner(request))
        return "The live page is closed."

    def on_unload(self, request: gr.Request) -> None:
        """The browser session ended: its live page goes too."""
        if self.browser is not None:
            self.browser.close_page(_owner(request))

    # ---- construction -------------------------------------------------------------------------------------------
    def _options(self, parsed_tokens: int):
        with gr.Accordion("Options", open=False):
            max_tokens = image_tokens_slider(DEFAULT_MAX_IMAGE_TOKENS)
            sampling = SamplingControls.render(max_new_tokens=parsed_tokens,
                                               defaults=model_sampling_defaults(self.session),
                                               limit=self.session.limits.max_new_tokens)
            thinking = ThinkingControls.render(model_thinking(self.session), parsed=True)
        return max_tokens, sampling, thinking

    def render(self) -> None:
        with gr.Tabs():
            with gr.Tab("Screenshots", id="agent-steps"):
                self._render_steps()
            with gr.Tab("Look closer (zoom)", id="agent-zoom"):
                self._render_zoom()
            with gr.Tab("Live browser", id="agent-live"):
                self._render_live()
        self._render_api()

    def _render_steps(self) -> None:
        view = gr.State(AgentView())
        with gr.Row():
            with gr.Column(scale=2):
                shot = image_path_input(sources=["upload", "clipboard"], label="Screenshot (the screen as it is now)",
                                        height=340, elem_id="agent-screenshot")
                task = gr.Textbox(label="Task", placeholder="What the agent should do: open the settings and turn "
                                  "on dark mode", elem_id="agent-task")
                screen = gr.Radio(list(SCREENS), value="computer", label="Device", elem_id="agent-screen")
                gr.Markdown("Upload the next screenshot after each step and press **Next step** again: the "
                            "earlier steps go back to the model as its history.", elem_classes=["qvl-hint"])
                with gr.Row():
                    run_btn = gr.Button("Next step", variant="primary", elem_id="agent-run")
                    stop_btn = gr.Button("Stop", variant="stop")
                    new_btn = gr.Button("New task", elem_id="agent-new")
                max_tokens, sampling, thinking = self._options(DEFAULT_AGENT_MAX_NEW_TOKENS)
            with gr.Column(scale=3):
                drawn = gr.Image(label="The action on the screenshot", type="pil", interactive=False, height=420,
                                 elem_id="agent-drawn")
                summary = gr.Markdown(elem_id="agent-summary")
                table = gr.Dataframe(headers=STEP_HEADERS, label="Trajectory (original screenshot pixels)",
                                     interactive=False, wrap=True, column_widths=STEP_WIDTHS,
                                     elem_id="agent-table")
                gallery = gr.Gallery(label="Steps", columns=4, height="auto", object_fit="contain",
                                     elem_id="agent-gallery")
                with gr.Row():
                    download = gr.File(label="Trajectory JSON")
                with gr.Accordion("This step's JSON", open=False):
                    step_json = gr.JSON(elem_id="agent-json")
                raw = gr.Textbox(label="Raw model answer", lines=5, elem_id="agent-raw")
                with gr.Accordion("Model's reasoning (not parsed)", open=False):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20, elem_id="agent-reasoning")
        outputs = [drawn, summary, step_json, table, gallery, download, raw, reasoning, view]
        running = run_btn.click(self.step_page, [*thinking.components, view, shot, task, screen, max_tokens,
                                                 *sampling.components], outputs, **self.gpu, api_visibility="private")
        stop_btn.click(None, None, None, cancels=[running], queue=False, api_visibility="private")
        new_btn.click(self.new_task, None, outputs, queue=False, api_visibility="private")

    def _render_zoom(self) -> None:
        with gr.Row():
            with gr.Column(scale=2):
                image = image_path_input(sources=["upload", "clipboard"], label="Image", height=340,
                                         elem_id="zoom-image")
                question = gr.Textbox(label="Question about a small detail", elem_id="zoom-question",
                                      placeholder="What is the price on the small sign in the window?")
                max_zooms = gr.Slider(0, MAX_ZOOMS_LIMIT, value=DEFAULT_MAX_ZOOMS, step=1, label="Zoom steps",
                                      info="How many times the model may crop the original to look closer")
                with gr.Row():
                    run_btn = gr.Button("Ask", variant="primary", elem_id="zoom-run")
                    stop_btn = gr.Button("Stop", variant="stop")
                max_tokens, sampling, thinking = self._options(DEFAULT_AGENT_MAX_NEW_TOKENS)
            with gr.Column(scale=3):
                boxes = gr.Image(label="Where the model looked (original image)", type="pil", interactive=False,
                                 height=360, elem_id="zoom-boxes")
                crops = gr.Gallery(label="Crops given back to the model (full resolution)", columns=3, height=220,
                                   object_fit="contain",
                                   elem_id="zoom-crops")
                answer = gr.Markdown(elem_id="zoom-answer")
                download = gr.File(label="Zoom JSON")
                raw = gr.Textbox(label="Raw model answer", lines=4, elem_id="zoom-raw")
                with gr.Accordion("Model's reasoning (not parsed)", open=False):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20)
        running = run_btn.click(self.zoom_page, [*thinking.components, image, question, max_zooms, max_tokens,
                                                 *sampling.components],
                                [boxes, crops, answer, download, raw, reasoning], **self.gpu, api_visibility="private")
        stop_btn.click(None, None, None, cancels=[running], queue=False, api_visibility="private")

    def _render_live(self) -> None:
        if self.browser is None:
            gr.Markdown(LIVE_OFF, elem_id="live-off")
            return
        hosts = ", ".join(self.browser.hosts) or "none besides this machine"
        with gr.Row():
            with gr.Column(scale=2):
                url = gr.Textbox(label="Page URL", placeholder="http://127.0.0.1:8000/", elem_id="live-url",
                                 info=f"Allowed hosts: loopback; {hosts}")
                task = gr.Textbox(label="Task", elem_id="live-task", placeholder="Add two apples to the basket")
                screen = gr.Radio(list(SCREENS), value="computer", label="Device (viewport)", elem_id="live-screen")
                max_steps = gr.Slider(1, MAX_LIVE_STEPS, value=DEFAULT_LIVE_STEPS, step=1, label="Step limit")
                with gr.Row():
                    run_btn = gr.Button("Start", variant="primary", elem_id="live-run")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="live-stop")
                    close_btn = gr.Button("Close page", elem_id="live-close")
                max_tokens, sampling, thinking = self._options(DEFAULT_AGENT_MAX_NEW_TOKENS)
            with gr.Column(scale=3):
                current = gr.Image(label="The page (the action drawn where it goes)", type="pil", interactive=False,
                                   height=420, elem_id="live-shot")
                log = gr.Markdown(elem_id="live-log")
                gallery = gr.Gallery(label="Steps", columns=4, height="auto", object_fit="contain",
                                     elem_id="live-gallery")
                download = gr.File(label="Trajectory JSON")
                raw = gr.Textbox(label="Raw model answer", lines=4, elem_id="live-raw")
                with gr.Accordion("Model's reasoning (not parsed)", open=False):
                    reasoning = gr.Textbox(show_label=False, lines=6, max_lines=20)
        running = run_btn.click(self.live_page, [*thinking.components, url, task, screen, max_steps, max_tokens,
                                                 *sampling.components],
                                [current, log, gallery, download, raw, reasoning], **self.gpu,
                                api_visibility="private")
        stop_btn.click(None, None, None, cancels=[running], queue=False, api_visibility="private")
        close_btn.click(self.close_live, None, log, cancels=[running], queue=False, api_visibility="private")

    def _render_api(self) -> None:
        with gr.Group(visible=False):
            step_in = [image_path_input(label="screenshot"), gr.Textbox(label="task"),
                       gr.Dropdown(list(SCREENS), value="computer", label="screen"),
                       gr.Textbox(label="history", info="the previous /agent_step JSON (or its trajectory); empty "
                                  "for the first step"),
                       api_number(DEFAULT_AGENT_MAX_NEW_TOKENS, "max_new_tokens"),
                       gr.Checkbox(PARSED_TASK_THINKING, label="thinking")]
            step_out = [gr.Image(type="pil", label="drawn"), gr.JSON(label="step")]
            zoom_in = [image_path_input(label="image"), gr.Textbox(label="question"),
                       api_number(DEFAULT_MAX_ZOOMS, "max_zooms"),
                       api_number(DEFAULT_AGENT_MAX_NEW_TOKENS, "max_new_tokens"),
                       gr.Checkbox(PARSED_TASK_THINKING, label="thinking")]
            zoom_out = [gr.Image(type="pil", label="drawn"), gr.JSON(label="zoom")]
            step_btn, zoom_btn = gr.Button(), gr.Button()
        step_btn.click(self.api_step, step_in, step_out, api_name="agent_step", **self.gpu)
        zoom_btn.click(self.api_zoom, zoom_in, zoom_out, api_name="agent_zoom", **self.gpu)


def _owner(request: gr.Request | None) -> str:
    """The live page's owner: the browser session (each tab of each visitor gets its own page)."""
    owner = getattr(request, "session_hash", None) if request is not None else None
    if not owner:
        raise UserError("The live browser needs a browser session (it is not available through the API).")
    return owner

