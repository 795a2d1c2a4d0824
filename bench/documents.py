"""Benchmark: document pages per minute, for rendering, rendering + model preprocessing, and the full path.

Makes its own PDF (text-heavy pages), then measures in one run:
  render      pypdfium2 pages -> PIL images at the chosen DPI
  preprocess  render + our resize + the processor (what happens before the GPU), no model
  full        the whole job (`run_job`) on a scripted tiny checkpoint answering a realistic page of QwenVL HTML

    python bench/documents.py [--pages 20] [--dpi 150] [--image-tokens 4096]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGE_HTML = "```html\n<html><body>\n" + "\n".join(
    f'<p data-bbox="{40} {60 + 30 * i} {780} {84 + 30 * i}">Line {i} of a dense page of body text, numbers 12.5% '
    f"and 1,234.</p>" for i in range(30)
) + '\n<table data-bbox="40 1000 780 1100"><tr><th>A</th><th>B</th></tr><tr><td>1</td><td>2</td></tr></table>' \
    "\n</body></html>\n```"


def make_pdf(path: Path, pages: int) -> None:
    font = ImageFont.load_default(size=18)
    images = []
    for n in range(pages):
        img = Image.new("RGB", (1240, 1754), "white")  # A4 at 150 dpi
        d = ImageDraw.Draw(img)
        for line in range(50):
            d.text((80, 80 + line * 32), f"Page {n + 1}, line {line}: the quick brown fox jumps over the lazy dog.",
                   fill="black", font=font)
        images.append(img)
    images[0].save(path, save_all=True, append_images=images[1:], resolution=150)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pages", type=int, default=20)
    ap.add_argument("--dpi", type=float, default=150)
    ap.add_argument("--image-tokens", type=int, default=4096)
    ns = ap.parse_args()

    from qvl_core.engine.loading import LoadOptions
    from qvl_core.engine.local import ModelSession
    from qvl_core.engine.messages import user_turn
    from qvl_core.engine.sampling import SamplingParams
    from qvl_core.engine.types import GenerationRequest
    from qvl_core.media.documents import load_document
    from qvl_core.tasks.documents import JobOptions, run_job
    from qvl_core.testing.tiny import build_checkpoint

    work = Path(tempfile.mkdtemp(prefix="qvl-bench-doc-"))
    pdf = work / "bench.pdf"
    make_pdf(pdf, ns.pages)
    session = ModelSession(LoadOptions(model=str(build_checkpoint(work / "ckpt", answer=PAGE_HTML)), device="cpu"))
    session.load()
    rows = []

    start = time.perf_counter()
    sizes = [page.image.size for page in load_document(pdf, dpi=ns.dpi, max_pages=ns.pages)]
    rows.append(("render", time.perf_counter() - start))

    start = time.perf_counter()
    for page in load_document(pdf, dpi=ns.dpi, max_pages=ns.pages):
        path = work / "page.png"
        page.image.save(path, compress_level=1)
        session.prepare(GenerationRequest(turns=(user_turn("QwenVL HTML", [str(path)]),),
                                          max_image_tokens=ns.image_tokens))
    rows.append(("render + preprocess", time.perf_counter() - start))

    options = JobOptions(dpi=ns.dpi, max_pages=ns.pages, max_image_tokens=ns.image_tokens,
                         sampling=SamplingParams(max_new_tokens=4096))
    start = time.perf_counter()
    *_, last = run_job(session, [pdf], options)
    rows.append(("full (tiny checkpoint)", time.perf_counter() - start))
    assert len(last.done) == ns.pages and all(len(p.blocks) == 31 for p in last.done)

    print(f"# {platform.machine()} {platform.processor()} | {ns.pages} pages {sizes[0][0]}x{sizes[0][1]} px at "
          f"{ns.dpi:g} dpi, {ns.image_tokens} image tokens, answer {len(PAGE_HTML)} chars")
    print("| path | seconds | pages/min |")
    print("|---|---|---|")
    for name, secs in rows:
        print(f"| {name} | {secs:.2f} | {ns.pages / secs * 60:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
