"""The `qvl` batch commands: `chat` about media, `ground` things, `parse` documents, ask about a `video`, `agent`.

`qvl serve` (the web app) is added by `ui.cli`, which is what the installed `qvl` script runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from qvl_core.engine.backend import Backend, close_backend, open_backend
from qvl_core.engine.sampling import DEFAULT_MAX_NEW_TOKENS, DEFAULT_SAMPLING, SAMPLING_PRESETS, sampling_from_values
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import GenerationError, UserError
from qvl_core.flags import add_model_args, backend_options
from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
from qvl_core.media.video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, VideoBudget
from qvl_core.tasks.conversation import Conversation

DIM, UNDIM = "\x1b[2m", "\x1b[0m"  # ANSI dim for the reasoning on a terminal


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    """Sampling and media flags, defaulting to DEFAULT_SAMPLING and the media defaults (a command sets its own
    task's max new tokens with set_defaults)."""
    d = DEFAULT_SAMPLING
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    model = "default: the checkpoint's generation_config (a served model: the server's)"
    p.add_argument("--temperature", type=float, default=d.temperature, help=f"0 = greedy; {model}")
    p.add_argument("--top-p", type=float, default=d.top_p, help=model)
    p.add_argument("--top-k", type=int, default=d.top_k, help=f"0 = off; {model}")
    p.add_argument("--repetition-penalty", type=float, default=d.repetition_penalty, help=model)
    p.add_argument("--presence-penalty", type=float, default=d.presence_penalty,
                   help=f"subtracted once from every token already generated (-2..2); {model}")
    p.add_argument("--sampling-preset", choices=sorted(SAMPLING_PRESETS), default=None,
                   help="a model card's recommended settings; the flags above override it")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-image-tokens", type=int, default=DEFAULT_MAX_IMAGE_TOKENS)
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="video sampling rate")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES)


def cmd_chat(ns: argparse.Namespace) -> int:
    sampling = _sampling(ns)
    request = GenerationRequest(
        # The same checks as a chat message in the browser (length, number of files).
        turns=Conversation().send(ns.prompt, ns.files).turns, sampling=sampling, system=ns.system,
        max_image_tokens=ns.max_image_tokens, video=VideoBudget(fps=ns.fps, max_frames=ns.max_frames),
        label_media=len(ns.files) > 1, thinking=ns.thinking, thinking_budget=ns.thinking_budget,
    )
    session = _open(ns)
    stats = None
    # The answer alone on stdout (pipes get only it); the reasoning on stderr, dimmed on a terminal, never with
    # --no-thinking (a model that cannot switch thinking off may still reason).
    show_reasoning = ns.thinking is not False
    dim, undim = (DIM, UNDIM) if sys.stderr.isatty() else ("", "")
    reasoned = False
    with contextlib.closing(session.stream(request)) as stream:
        for chunk in stream:
            if chunk.reasoning and show_reasoning:
                sys.stderr.write(dim + chunk.reasoning + undim)
                sys.stderr.flush()
                reasoned = True
            if chunk.text and reasoned:
                sys.stderr.write("\n\n")
                reasoned = False
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            stats = chunk.stats or stats
    sys.stdout.write("\n")
    if stats and stats.thinking_note:
        print(f"[{stats.thinking_note}]", file=sys.stderr)
    if stats and not ns.quiet:
        tps = f", {stats.decode_tps:.1f} tok/s" if stats.decode_tps else ""
        thought = f", {stats.reasoning_tokens} reasoning" if stats.reasoning_tokens else ""
        print(f"[{stats.completion_tokens} tokens{thought}, {stats.finish_reason}{tps}]", file=sys.stderr)
    return 0


def _print_reasoning(reasoning: str, ns: argparse.Namespace) -> None:
    """A parsed task's reasoning (with --thinking) on stderr, dimmed on a terminal; never parsed."""
    if reasoning and not getattr(ns, "quiet", False):
        dim, undim = (DIM, UNDIM) if sys.stderr.isatty() else ("", "")
        print(f"{dim}{reasoning.strip()}{undim}", file=sys.stderr)


def _add_parsed_thinking_args(p: argparse.ArgumentParser, what: str) -> None:
    """--thinking / --thinking-budget for a task whose answer is parsed: off by default, like its tab (the
    answer is parsed, which reasoning first rarely improves, and a thinking model spends thousands of tokens)."""
    p.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=False,
                   help=f"let a thinking model reason before {what} (default: off, as in the app); only the answer "
                        "is parsed, the reasoning goes to stderr")
    p.add_argument("--thinking-budget", type=int, default=DEFAULT_THINKING_BUDGET,
                   help="reasoning tokens before the reasoning is closed and the model made to answer")


def _sampling(ns: argparse.Namespace):
    preset = SAMPLING_PRESETS.get(ns.sampling_preset or "", {})
    flags = {"temperature": ns.temperature, "top_p": ns.top_p, "top_k": ns.top_k,
             "repetition_penalty": ns.repetition_penalty, "presence_penalty": ns.presence_penalty}
    return sampling_from_values(max_new_tokens=ns.max_new_tokens, seed=ns.seed,
                                **(preset | {k: v for k, v in flags.items() if v is not None}))


def cmd_ground(ns: argparse.Namespace) -> int:
    from qvl_core.draw import draw_detections
    from qvl_core.media.images import open_image
    from qvl_core.parse.grounding import build_prompt
    from qvl_core.tasks.grounding import ground

    session = _open(ns)
    prompt = ns.prompt or build_prompt(ns.preset, ns.text, session.family)
    result = None
    with contextlib.closing(ground(session, ns.image, prompt, sampling=_sampling(ns),
                                   max_image_tokens=ns.max_image_tokens, thinking=ns.thinking,
                                   thinking_budget=ns.thinking_budget)) as steps:
        for step in steps:
            result = step.result or result
    assert result is not None
    _print_reasoning(result.reasoning, ns)
    detections = result.detections_json()
    text = json.dumps(detections, indent=2, ensure_ascii=False)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    else:
        print(text)
    if ns.draw:
        draw_detections(open_image(ns.image, max_pixels=session.limits.max_image_pixels),
                        list(result.detections)).save(ns.draw)
    if not ns.quiet:
        print(f"[{len(detections)} found; image {result.image_size[0]}x{result.image_size[1]}, model saw "
              f"{result.input_size[0]}x{result.input_size[1]}; {result.stats.finish_reason}]", file=sys.stderr)
        if not detections:
            print(f"[the model found nothing; its answer: {result.raw[:500]!r}]", file=sys.stderr)
    return 0


def cmd_agent(ns: argparse.Namespace) -> int:
    from qvl_core.draw import draw_action, draw_zoom
    from qvl_core.media.images import open_image
    from qvl_core.tasks.agent import Trajectory, agent_step, trajectory_from_text, zoom_answer

    if ns.zoom:  # think with images: answer TASK as a question, zooming into the original
        session = _open(ns)
        result = None
        with contextlib.closing(zoom_answer(session, ns.screenshot, ns.task, max_zooms=ns.max_zooms,
                                            sampling=_sampling(ns), max_image_tokens=ns.max_image_tokens,
                                            thinking=ns.thinking, thinking_budget=ns.thinking_budget)) as steps:
            for step in steps:
                result = step.result or result
        assert result is not None
        out = result.to_json()
        if ns.draw:
            draw_zoom(open_image(ns.screenshot, max_pixels=session.limits.max_image_pixels),
                      [z.call for z in result.zooms]).save(ns.draw)
        problem = result.problem
        print(result.answer)
    else:
        history = None
        if ns.history:
            try:
                text = Path(ns.history).read_text(encoding="utf-8")
            except (OSError, ValueError) as exc:
                raise UserError(f"--history {ns.history!r} is not a trajectory JSON file: {exc}") from None
            history = trajectory_from_text(text, f"--history {ns.history!r}")
        trajectory = Trajectory(ns.task, ns.screen, history.steps if history else ())
        session = _open(ns)
        step_result = None
        with contextlib.closing(agent_step(session, ns.screenshot, trajectory, sampling=_sampling(ns),
                                           max_image_tokens=ns.max_image_tokens, thinking=ns.thinking,
                                           thinking_budget=ns.thinking_budget)) as steps:
            for step in steps:
                step_result = step.result or step_result
        assert step_result is not None
        trajectory = trajectory.with_step(step_result, ns.screenshot)
        out = {**step_result.to_json(), "trajectory": trajectory.to_json()}
        if ns.draw:
            draw_action(open_image(ns.screenshot, max_pixels=session.limits.max_image_pixels), step_result.action,
                        start=step_result.start,
                        problem=step_result.problem.message if step_result.problem else None).save(ns.draw)
        problem = step_result.problem
        print(json.dumps(step_result.action.to_json() if step_result.action else None, ensure_ascii=False))
    text = json.dumps(out, indent=2, ensure_ascii=False)
    if ns.json:
        Path(ns.json).write_text(text + "\n", encoding="utf-8")
    if problem is not None:
        print(f"qvl: no action: {problem.message}", file=sys.stderr)
        return 1
    return 0


PARSE_FORMATS = {"html": ".html", "md": ".md", "json": ".json", "text": ".txt"}


def _document_inputs(items: list[str]) -> list[Path]:
    from qvl_core.media.documents import DOCUMENT_SUFFIXES

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in DOCUMENT_SUFFIXES)
        elif p.exists():
            out.append(p)
        else:
            raise UserError(f"{item!r} does not exist.")
    if not out:
        raise UserError("No PDF or page image found in the given paths.")
    return out


def cmd_parse(ns: argparse.Namespace) -> int:
    from tqdm import tqdm

    from qvl_core.tasks.documents import (
        MODES,
        JobOptions,
        PageCache,
        job_html,
        job_json,
        job_markdown,
        job_text,
        parse_fields,
        run_job,
    )

    inputs = _document_inputs(ns.inputs)
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    mode = MODES[3] if ns.fields else MODES[0]
    options = JobOptions(mode=mode, pages=ns.pages, dpi=ns.dpi, sampling=_sampling(ns),
                         max_image_tokens=ns.max_image_tokens,
                         fields=parse_fields(ns.fields) if ns.fields else None, clamp_pages=len(inputs) > 1,
                         thinking=ns.thinking, thinking_budget=ns.thinking_budget)
    session = _open(ns)
    cache = PageCache(out / ".qvl-cache", session, options)
    render = {"html": job_html, "md": job_markdown, "text": job_text,
              "json": lambda pages: json.dumps(job_json(pages), indent=2, ensure_ascii=False)}[ns.format]
    failures = 0
    for path in inputs:  # one output per input file, written as soon as that file is done
        target = out / (path.stem + PARSE_FORMATS[ns.format])
        last = None
        bar = None  # no bar until the input is known good (it has pages): a bad file shows its error alone
        with contextlib.closing(run_job(session, [path], options, cache=cache)) as job:
            try:
                for progress in job:
                    if bar is None and progress.total_pages and not ns.quiet:
                        bar = tqdm(desc=path.name, unit="page", file=sys.stderr, total=progress.total_pages)
                    if bar is not None and (bar.total, bar.n) != (progress.total_pages, len(progress.done)):
                        bar.total, bar.n = progress.total_pages, len(progress.done)
                        bar.refresh()
                    last = progress
            finally:
                if bar is not None:
                    bar.close()
        assert last is not None
        for error in last.errors:
            print(f"qvl: error: {error}", file=sys.stderr)
        if last.done:
            target.write_text(render(list(last.done)), encoding="utf-8")
            truncated = [p.page_number for p in last.done if p.truncated]
            if not ns.quiet:
                reused = sum(p.cached for p in last.done)
                print(f"[{path.name}: {len(last.done)} pages ({reused} from an earlier run) -> {target}]",
                      file=sys.stderr)
            if truncated and not ns.quiet:
                print(f"qvl: warning: {path.name} pages {truncated} hit --max-new-tokens and may be cut short",
                      file=sys.stderr)
        failures += bool(last.errors)
    return 1 if failures else 0


def cmd_video(ns: argparse.Namespace) -> int:
    from qvl_core.parse.timespans import format_timestamp
    from qvl_core.tasks.video import ask_video

    session = _open(ns)
    budget = VideoBudget(fps=ns.fps, max_frames=ns.max_frames)
    answer = None
    shown = 0
    with contextlib.closing(ask_video(session, ns.video, ns.question, budget=budget, start=ns.start, end=ns.end,
                                      sampling=_sampling(ns), thinking=ns.thinking,
                                      thinking_budget=ns.thinking_budget)) as steps:
        for step in steps:
            sys.stdout.write(step.raw[shown:])  # stream the answer as it comes
            sys.stdout.flush()
            shown = len(step.raw)
            answer = step.answer or answer
    sys.stdout.write("\n")
    assert answer is not None
    _print_reasoning(answer.reasoning, ns)
    if ns.json:
        Path(ns.json).write_text(json.dumps(answer.spans_json(), indent=2, ensure_ascii=False) + "\n")
    if not ns.quiet:
        spans = ", ".join(format_timestamp(s.start) + (f"-{format_timestamp(s.end)}" if s.end is not None else "")
                          for s in answer.spans)
        print(f"[{len(answer.video.indices)} frames at {answer.video.fps:.2f} fps; spans: {spans or 'none'}]",
              file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The batch commands' parser; callers may add subcommands (`ui.cli` adds `serve`)."""
    parser = argparse.ArgumentParser(prog="qvl", description="QVL Studio: Qwen-VL models from the terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    chat = sub.add_parser("chat", help="answer one prompt about images/videos, streamed to stdout")
    chat.add_argument("files", nargs="*", help="images and videos")
    chat.add_argument("--prompt", "-p", required=True)
    chat.add_argument("--system", default=None)
    chat.add_argument("--quiet", "-q", action="store_true", help="no stats line on stderr")
    chat.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=None,
                      help="let a thinking model reason first (default: the model's own); its reasoning goes to "
                           "stderr, dimmed on a terminal; --no-thinking turns it off and prints none")
    chat.add_argument("--thinking-budget", type=int, default=DEFAULT_THINKING_BUDGET,
                      help="reasoning tokens before the reasoning is closed and the model made to answer")
    add_model_args(chat)
    _add_sampling_args(chat)
    chat.set_defaults(func=cmd_chat)

    from qvl_core.parse.grounding import PRESETS
    from qvl_core.tasks.grounding import DEFAULT_GROUNDING_MAX_NEW_TOKENS

    grd = sub.add_parser("ground", help="boxes/points for an image, in original pixels, as JSON (+ a drawing)")
    grd.add_argument("image")
    grd.add_argument("text", nargs="?", default="", help="categories, a description, or what to count/point at")
    grd.add_argument("--preset", default="Detect", choices=PRESETS)
    grd.add_argument("--prompt", default=None, help="send this prompt as is instead of the preset's")
    grd.add_argument("--json", default=None, help="write the detections here (default: stdout)")
    grd.add_argument("--draw", default=None, help="write the image with boxes and points drawn here (PNG/JPEG)")
    grd.add_argument("--quiet", "-q", action="store_true")
    _add_parsed_thinking_args(grd, "answering")
    add_model_args(grd)
    _add_sampling_args(grd)
    grd.set_defaults(func=cmd_ground, max_new_tokens=DEFAULT_GROUNDING_MAX_NEW_TOKENS)

    from qvl_core.media.documents import DEFAULT_DPI
    from qvl_core.tasks.documents import DEFAULT_DOC_IMAGE_TOKENS, DEFAULT_DOC_MAX_NEW_TOKENS

    prs = sub.add_parser("parse", help="documents (PDFs, page images, folders) -> HTML / Markdown / JSON / text")
    prs.add_argument("inputs", nargs="+", help="files or folders (searched recursively)")
    prs.add_argument("--format", choices=sorted(PARSE_FORMATS), default="md")
    prs.add_argument("--out", required=True, help="output folder: one file per input; re-runs resume from here")
    prs.add_argument("--pages", default=None, help="page range, e.g. 1-5 or 2,4,7-9 (default: all)")
    prs.add_argument("--dpi", type=float, default=DEFAULT_DPI, help="PDF render resolution")
    prs.add_argument("--fields", default=None, help="extract these fields as JSON instead (list or JSON schema)")
    prs.add_argument("--quiet", "-q", action="store_true")
    # Off by default, like the app's Documents tab: the answer is parsed, which reasoning first rarely improves,
    # and a thinking model spends thousands of tokens per page on it.
    prs.add_argument("--thinking", action=argparse.BooleanOptionalAction, default=False,
                     help="let a thinking model reason before each page (default: off); only the answer is parsed, "
                          "each page's reasoning goes into --format json")
    prs.add_argument("--thinking-budget", type=int, default=DEFAULT_THINKING_BUDGET,
                     help="reasoning tokens per page before the reasoning is closed and the model made to answer")
    add_model_args(prs)
    _add_sampling_args(prs)
    prs.set_defaults(func=cmd_parse, max_new_tokens=DEFAULT_DOC_MAX_NEW_TOKENS,
                     max_image_tokens=DEFAULT_DOC_IMAGE_TOKENS)

    from qvl_core.tasks.video import DEFAULT_VIDEO_MAX_NEW_TOKENS

    vid = sub.add_parser("video", help="ask about a video; answers stream, times come out in seconds of the file")
    vid.add_argument("video")
    vid.add_argument("question")
    vid.add_argument("--start", type=float, default=None, help="trim: first second to look at")
    vid.add_argument("--end", type=float, default=None, help="trim: last second to look at")
    vid.add_argument("--json", default=None, help="write the time spans here")
    vid.add_argument("--quiet", "-q", action="store_true")
    _add_parsed_thinking_args(vid, "answering")
    add_model_args(vid)
    _add_sampling_args(vid)
    vid.set_defaults(func=cmd_video, max_new_tokens=DEFAULT_VIDEO_MAX_NEW_TOKENS)
    from qvl_core.tasks.agent import DEFAULT_AGENT_MAX_NEW_TOKENS, DEFAULT_MAX_ZOOMS, SCREENS

    agt = sub.add_parser("agent", help="the next computer/phone action on a screenshot, in original pixels "
                                      "(or --zoom: answer by zooming in)")
    agt.add_argument("screenshot")
    agt.add_argument("task", help="what the agent should do (with --zoom: the question)")
    agt.add_argument("--screen", choices=SCREENS, default="computer")
    agt.add_argument("--json", default=None, help="write the step (action, coordinates, sizes, raw answer) and "
                                                  "the trajectory so far here")
    agt.add_argument("--draw", default=None, help="write the screenshot with the action drawn here (PNG/JPEG)")
    agt.add_argument("--history", default=None, help="continue a task: an earlier step's --json file")
    agt.add_argument("--zoom", action="store_true", help="answer TASK as a question, zooming into the image")
    agt.add_argument("--max-zooms", type=int, default=DEFAULT_MAX_ZOOMS)
    _add_parsed_thinking_args(agt, "each action")
    add_model_args(agt)
    _add_sampling_args(agt)
    agt.set_defaults(func=cmd_agent, max_new_tokens=DEFAULT_AGENT_MAX_NEW_TOKENS)
    for command in (chat, grd, prs, vid, agt):
        command.add_argument("--verbose", "-v", action="store_true",
                             help="also log what led to an error (each video decoder tried, native decoder output)")
    return parser


def _open(ns: argparse.Namespace) -> Backend:
    """The command's backend, closed by `run` when the command ends (however it ends)."""
    backend = open_backend(backend_options(ns))
    ns.opened_backends.append(backend)
    return backend


def run(func: Callable[[argparse.Namespace], int], ns: argparse.Namespace) -> int:
    """Run a command; user-facing errors become one line on stderr and a non-zero exit."""
    ns.opened_backends = []
    try:
        return func(ns)
    except (UserError, GenerationError) as exc:
        print(f"qvl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qvl: interrupted", file=sys.stderr)
        return 130
    finally:
        for backend in ns.opened_backends:
            close_backend(backend)


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    ns = (parser or build_parser()).parse_args(argv)
    _quiet_logs(getattr(ns, "verbose", False))
    return run(ns.func, ns)


def _quiet_logs(verbose: bool) -> None:
    """An error is one line on stderr; --verbose adds what led to it (our debug log, every library warning)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        logging.getLogger("qvl_core").setLevel(logging.DEBUG)
    else:
        # torch logs its own deprecation warnings at import (e.g. when loading pulls in torchao); "-torch"
        # lowers that logger to errors, read once when torch is imported (a TORCH_LOGS of the user's wins).
        os.environ.setdefault("TORCH_LOGS", "-torch")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would bury the answer and our own progress


if __name__ == "__main__":
    sys.exit(main())
