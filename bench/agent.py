"""Benchmark: one agent step split into model time and app time (screenshot decode, prompt, parsing, drawing);
with --live, steps of the live browser loop split into screenshot, model, drawing and page action.

A scripted checkpoint answers a fixed `left_click` tool call on a 1920x1080 screenshot, so every run does the same
work. `model` is the backend's own generation time (stats.total_s: preprocessing, prefill and decode); `app` is the
rest of `agent_step` (opening the screenshot, the stated resolution, the prompt, parsing the answer) plus drawing
the action on a display-sized copy. Medians of `--repeats` runs after one warm-up.

    python bench/agent.py [--size mid] [--family qwen2_5_vl] [--repeats 3] [--device cpu|cuda] [--live]

--live serves a page with one button on loopback, and a scripted checkpoint clicks it `--repeats` times through
`live_browser.drive` (1280x800 viewport, Debian's Chromium through Playwright). Per step: `screenshot` (the PNG of
the viewport), `model` (stats.total_s), `step_app` (agent_step minus the model), `draw` (the action drawn on the
screenshot, as the tab shows it), `action` (the click on the page plus the settle wait for the page to react).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="mid")
    ap.add_argument("--family", default="qwen2_5_vl")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--live", action="store_true", help="time the live browser loop instead")
    ns = ap.parse_args()
    if ns.live:
        return live(ns)

    import torch
    from PIL import Image

    from qvl_core.draw import draw_action
    from qvl_core.engine.loading import LoadOptions
    from qvl_core.engine.local import ModelSession
    from qvl_core.families import family_for
    from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS, open_image
    from qvl_core.tasks.agent import Trajectory, agent_step, stated_resolution
    from qvl_core.tasks.grounding import planned_input_size
    from qvl_core.testing.tiny import build_checkpoint

    work = Path(tempfile.mkdtemp(prefix="qvl-bench-agent-"))
    shot = work / "screen.png"
    img = Image.new("RGB", (1920, 1080), (235, 235, 235))
    img.paste((30, 90, 200), (1300, 500, 1500, 580))
    img.save(shot)
    spec = family_for(ns.family)
    input_size, tokens = planned_input_size(img.size, spec, DEFAULT_MAX_IMAGE_TOKENS)
    sw, sh = stated_resolution(spec, "computer", input_size)
    point = [round(1400 * sw / 1920), round(540 * sh / 1080)]
    answer = ('<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": '
              f"{json.dumps(point)}}}}}\n</tool_call>")
    ckpt = build_checkpoint(work / "ckpt", family=ns.family, answer=answer, size=ns.size)
    session = ModelSession(LoadOptions(model=str(ckpt), device=ns.device))
    session.load()
    trajectory = Trajectory("Press the blue button")

    rows = []
    for i in range(ns.repeats + 1):
        t0 = time.perf_counter()
        result = list(agent_step(session, shot, trajectory))[-1].result
        step_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        draw_action(open_image(shot, max_pixels=session.limits.max_image_pixels), result.action)
        draw_s = time.perf_counter() - t1
        assert result.action is not None and abs(result.action.coordinate[0] - 1400) < 2, result
        if i:  # the first run warms up
            rows.append({"step": step_s, "model": result.stats.total_s, "app": step_s - result.stats.total_s,
                         "draw": draw_s, "tokens": result.stats.completion_tokens})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(json.dumps({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                      "torch": torch.__version__, "family": ns.family, "size": ns.size, "device": ns.device,
                      "input_size": input_size, "visual_tokens": tokens, "prompt_tokens": result.stats.prompt_tokens,
                      **{k: round(v, 3) for k, v in med.items()}}, indent=1))


def live(ns: argparse.Namespace) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import torch
    from PIL import Image

    from qvl_core.draw import draw_action
    from qvl_core.engine.loading import LoadOptions
    from qvl_core.engine.local import ModelSession
    from qvl_core.families import family_for
    from qvl_core.media.images import DEFAULT_MAX_IMAGE_TOKENS
    from qvl_core.tasks.agent import stated_resolution
    from qvl_core.tasks.grounding import planned_input_size
    from qvl_core.tasks.live_browser import SETTLE_S, VIEWPORTS, LiveBrowser, drive
    from qvl_core.testing.tiny import build_checkpoint

    page = (b'<!doctype html><body style="margin:0"><button style="position:absolute;left:600px;top:300px;'
            b'width:200px;height:80px" onclick="fetch(\'/c\',{method:\'POST\'})">Press</button></body>')
    clicks = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def do_POST(self):
            clicks.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = family_for(ns.family)
    size = VIEWPORTS["computer"]
    input_size, tokens = planned_input_size(size, spec, DEFAULT_MAX_IMAGE_TOKENS)
    sw, sh = stated_resolution(spec, "computer", input_size)
    point = [round(700 * sw / size[0]), round(340 * sh / size[1])]
    answer = ('<tool_call>\n{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": '
              f"{json.dumps(point)}}}}}\n</tool_call>")
    work = Path(tempfile.mkdtemp(prefix="qvl-bench-live-"))
    ckpt = build_checkpoint(work / "ckpt", family=ns.family, answer=answer, size=ns.size)
    session = ModelSession(LoadOptions(model=str(ckpt), device=ns.device))
    session.load()
    browser = LiveBrowser()
    timings: dict[str, list[float]] = {"screenshot": [], "action": []}
    for name in timings:
        original = getattr(browser, "perform" if name == "action" else name)

        def timed(*args, _original=original, _name=name, **kwargs):
            t0 = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                timings[_name].append(time.perf_counter() - t0)

        setattr(browser, "perform" if name == "action" else name, timed)
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        browser.open("bench", url)  # Chromium's start-up, not a step
        t0 = time.perf_counter()
        steps = list(drive(session, browser, "bench", url, "Press the button", folder=work, max_steps=ns.repeats))
        total = time.perf_counter() - t0
    finally:
        browser.close()
        server.shutdown()
    done = steps[-1].steps
    assert len(clicks) == ns.repeats == len(done), (clicks, len(done))
    draws = []
    for step in done:
        t1 = time.perf_counter()
        draw_action(Image.open(step.screenshot), step.result.action)
        draws.append(time.perf_counter() - t1)
    model = [s.result.stats.total_s for s in done]
    med = {"screenshot": statistics.median(timings["screenshot"][:ns.repeats]),
           "model": statistics.median(model), "draw": statistics.median(draws),
           "action": statistics.median(timings["action"]), "step_total": total / ns.repeats}
    med["step_app"] = med["step_total"] - med["model"] - med["screenshot"] - med["action"]
    print(json.dumps({"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
                      "torch": torch.__version__, "family": ns.family, "size": ns.size, "device": ns.device,
                      "viewport": size, "input_size": input_size, "visual_tokens": tokens, "settle_s": SETTLE_S,
                      "steps": ns.repeats, "clicks_counted": len(clicks),
                      **{k: round(v, 3) for k, v in med.items()}}, indent=1))


if __name__ == "__main__":
    main()
