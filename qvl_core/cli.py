"""The `qvl` command: `serve` the web app, `chat` about media, `ground` things in an image."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from .config import add_model_args, load_options
from .errors import GenerationError, UserError
from .images import DEFAULT_MAX_IMAGE_TOKENS
from .messages import user_turn
from .sampling import DEFAULT_MAX_NEW_TOKENS, sampling_from_values
from .session import GenerationRequest, ModelSession
from .video import DEFAULT_FPS, DEFAULT_MAX_FRAMES, VideoBudget


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--repetition-penalty", type=float, default=1.05)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-image-tokens", type=int, default=DEFAULT_MAX_IMAGE_TOKENS)
    p.add_argument("--fps", type=float, default=DEFAULT_FPS, help="video sampling rate")
    p.add_argument("--max-frames", type=int, default=DEFAULT_MAX_FRAMES)


def cmd_chat(ns: argparse.Namespace) -> int:
    sampling = _sampling(ns)
    request = GenerationRequest(
        turns=(user_turn(ns.prompt, ns.files),), sampling=sampling, system=ns.system,
        max_image_tokens=ns.max_image_tokens, video=VideoBudget(fps=ns.fps, max_frames=ns.max_frames),
        label_media=len(ns.files) > 1,
    )
    session = ModelSession(load_options(ns))
    stats = None
    with contextlib.closing(session.stream(request)) as stream:
        for chunk in stream:
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
            stats = chunk.stats or stats
    sys.stdout.write("\n")
    if stats and not ns.quiet:
        tps = f", {stats.decode_tps:.1f} tok/s" if stats.decode_tps else ""
        print(f"[{stats.completion_tokens} tokens, {stats.finish_reason}{tps}]", file=sys.stderr)
    return 0


def _sampling(ns: argparse.Namespace):
    return sampling_from_values(max_new_tokens=ns.max_new_tokens, temperature=ns.temperature, top_p=ns.top_p,
                                top_k=ns.top_k, repetition_penalty=ns.repetition_penalty, seed=ns.seed)


def cmd_ground(ns: argparse.Namespace) -> int:
    from .drawing import draw_detections
    from .grounding import build_prompt
    from .grounding_task import ground
    from .images import open_image

    session = ModelSession(load_options(ns))
    prompt = ns.prompt or build_prompt(ns.preset, ns.text, session.family)
    result = None
    with contextlib.closing(ground(session, ns.image, prompt, sampling=_sampling(ns),
                                   max_image_tokens=ns.max_image_tokens)) as steps:
        for step in steps:
            result = step.result or result
    assert result is not None
    detections = result.detections_json()
    text = json.dumps(detections, indent=2, ensure_ascii=False)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    else:
        print(text)
    if ns.draw:
        draw_detections(open_image(ns.image), list(result.detections)).save(ns.draw)
    if not ns.quiet:
        print(f"[{len(detections)} found; image {result.image_size[0]}x{result.image_size[1]}, model saw "
              f"{result.input_size[0]}x{result.input_size[1]}; {result.stats.finish_reason}]", file=sys.stderr)
        if not detections:
            print(f"[the model found nothing; its answer: {result.raw[:500]!r}]", file=sys.stderr)
    return 0


def cmd_serve(ns: argparse.Namespace) -> int:
    from ui.launch import main as serve_main  # the web UI lives outside qvl_core (Gradio)

    return serve_main(ns.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvl", description="QVL Studio: Qwen-VL models from the terminal")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web app (same flags as app.py)", add_help=False)
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(func=cmd_serve)

    chat = sub.add_parser("chat", help="answer one prompt about images/videos, streamed to stdout")
    chat.add_argument("files", nargs="*", help="images and videos")
    chat.add_argument("--prompt", "-p", required=True)
    chat.add_argument("--system", default=None)
    chat.add_argument("--quiet", "-q", action="store_true", help="no stats line on stderr")
    add_model_args(chat)
    _add_sampling_args(chat)
    chat.set_defaults(func=cmd_chat)

    from .grounding import PRESETS
    from .grounding_task import DEFAULT_GROUNDING_MAX_NEW_TOKENS

    grd = sub.add_parser("ground", help="boxes/points for an image, in original pixels, as JSON (+ a drawing)")
    grd.add_argument("image")
    grd.add_argument("text", nargs="?", default="", help="categories, a description, or what to count/point at")
    grd.add_argument("--preset", default="Detect", choices=PRESETS)
    grd.add_argument("--prompt", default=None, help="send this prompt as is instead of the preset's")
    grd.add_argument("--json", default=None, help="write the detections here (default: stdout)")
    grd.add_argument("--draw", default=None, help="write the image with boxes and points drawn here (PNG/JPEG)")
    grd.add_argument("--quiet", "-q", action="store_true")
    add_model_args(grd)
    _add_sampling_args(grd)
    grd.set_defaults(func=cmd_ground, max_new_tokens=DEFAULT_GROUNDING_MAX_NEW_TOKENS)
    return parser


def run(func: Callable[[argparse.Namespace], int], ns: argparse.Namespace) -> int:
    """Run a command; user-facing errors become one line on stderr and a non-zero exit."""
    try:
        return func(ns)
    except (UserError, GenerationError) as exc:
        print(f"qvl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qvl: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ns = build_parser().parse_args(argv)
    return run(ns.func, ns)


if __name__ == "__main__":
    sys.exit(main())
