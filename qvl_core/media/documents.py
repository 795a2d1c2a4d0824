"""Document files in (PDF, PNG/JPEG/WebP/BMP, multi-page TIFF), page images out, one page at a time.

Limits are named here and every refusal is a `UserError` that names the file and the limit. PDFs are
rendered with pypdfium2. PDFium is not thread-safe (not even across documents) and Gradio runs handlers
in threads, so every PDFium call in this module holds `_PDFIUM_LOCK`; the lock is released between
pages, so a long job never blocks another for more than one page.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
from PIL import Image, ImageOps, UnidentifiedImageError

from qvl_core.errors import UserError
from qvl_core.media.images import open_image
from qvl_core.settings import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_MAX_PDF_PAGES, env_int

# --- Named limits ---------------------------------------------------------------------------------
# Pages per job (PDF pages or TIFF frames) are the app's `Limits.max_pdf_pages`, passed to `load_document`;
# a page range selects fewer from a longer file.
DEFAULT_DPI = 150  # enough for body text; 300 dpi quadruples pixels and the model resizes them away anyway
MIN_DPI = 50
MAX_DPI = 300
# Pixel budget of one rendered page (A3 at 300 dpi is 17.4 MP). Bigger pages (posters, drawings) are rendered
# at a lower resolution to fit rather than refused.
MAX_PAGE_PIXELS = 20_000_000
# A 600-dpi A3 scan is ~70 MP: legitimate for a page. Page images may be this large (twice the chat limit)
# and are downscaled to MAX_PAGE_PIXELS right after decoding instead of being refused.
MAX_PAGE_SOURCE_PIXELS = env_int("QVL_MAX_PAGE_SOURCE_PIXELS", 2 * DEFAULT_MAX_IMAGE_PIXELS)
PDF_SUFFIXES = (".pdf",)
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_DOC_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", *TIFF_SUFFIXES)
DOCUMENT_SUFFIXES = (*PDF_SUFFIXES, *IMAGE_DOC_SUFFIXES)
_PDF_HEADER_WINDOW = 1024  # PDFium accepts the %PDF- header anywhere in the first 1 KiB

_PDFIUM_LOCK = threading.RLock()


@dataclass(frozen=True)
class DocumentPage:
    """One page as an RGB image; `page_number` is 1-based, `n_pages` counts every page of the file."""

    image: Image.Image
    source_name: str
    page_number: int
    n_pages: int


def parse_page_range(spec: str | None, n_pages: int, *, clamp: bool = False) -> list[int]:
    """'1-5', '2,4,7-9', '3-' (to the end), '-4', 'all' or None -> sorted 0-based page indices.

    Raises UserError for malformed specs and for pages beyond `n_pages`, naming the page count. With
    `clamp` (one range applied to many files of different lengths), pages past the end are left out.
    """
    if n_pages <= 0:
        raise UserError("The document has no pages.")
    text = (spec or "").strip().lower()
    if text in ("", "all", "*"):
        return list(range(n_pages))
    pages: set[int] = set()
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo_s, _, hi_s = (p.strip() for p in part.partition("-"))
            lo = _page_number(lo_s, spec) if lo_s else 1
            hi = _page_number(hi_s, spec) if hi_s else n_pages
            if lo > hi:
                raise UserError(f"Page range {part!r} runs backwards; write it as {hi}-{lo}.")
        else:
            lo = hi = _page_number(part, spec)
        if clamp:
            hi = min(hi, n_pages)
        elif hi > n_pages:
            raise UserError(f"Page range {spec!r} asks for page {hi}, but the document has {n_pages} "
                            f"page{'s' if n_pages != 1 else ''}.")
        pages.update(range(lo - 1, hi))
    if not pages and clamp:  # the range was written for the longer files: this short one is left out, not wrong
        raise UserError(f"skipped: it has {n_pages} page{'s' if n_pages != 1 else ''}, none of them in the page "
                        f"range {spec!r}.")
    if not pages:
        raise UserError(f"Page range {spec!r} selects no pages of this {n_pages}-page document; "
                        "write e.g. 1-5 or 2,4,7-9.")
    return sorted(pages)


def _page_number(text: str, spec: str | None) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise UserError(f"Page range {spec!r} is not understood: {text!r} is not a page number "
                        "(write e.g. 1-5, 2,4,7-9 or all).")
    n = int(text)
    if n < 1:
        raise UserError(f"Page range {spec!r}: pages are numbered from 1.")
    return n


def check_dpi(dpi: float) -> None:
    """UserError unless `dpi` is a number from MIN_DPI to MAX_DPI (a string, NaN or 0 included)."""
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not math.isfinite(dpi):
        raise UserError(f"dpi must be a number in the supported range {MIN_DPI}-{MAX_DPI} dpi, got {dpi!r}.")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise UserError(f"Resolution {dpi} dpi is outside the supported range {MIN_DPI}-{MAX_DPI} dpi.")


def _check_file(path: str | os.PathLike[str]) -> tuple[Path, str]:
    p = Path(path)
    name = p.name
    if not p.is_file():
        raise UserError(f"Document {name!r} does not exist.")
    if p.stat().st_size == 0:
        raise UserError(f"Document {name!r} is empty (0 bytes).")
    suffix = p.suffix.lower()
    if suffix not in DOCUMENT_SUFFIXES:
        kinds = "PDF, PNG, JPEG, WebP, BMP, TIFF"
        raise UserError(f"Document {name!r} has an unsupported type {suffix or '(no extension)'!r}; "
                        f"supported: {kinds}.")
    return p, name


def _open_pdf(p: Path, name: str) -> pdfium.PdfDocument:
    """Open with PDFium (caller holds the lock), turning its error codes into messages a person can act on."""
    with p.open("rb") as fh:
        head = fh.read(_PDF_HEADER_WINDOW)
    if b"%PDF-" not in head:
        raise UserError(f"File {name!r} is not a PDF (no %PDF- header); it may be another kind of file renamed .pdf.")
    try:
        doc = pdfium.PdfDocument(str(p))
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise UserError(f"PDF {name!r} is password-protected; remove the password (for example print it to "
                            "a new PDF) and upload it again.") from None
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise UserError(f"PDF {name!r} uses an unsupported security (encryption) handler.") from None
        if code in (pdfium_c.FPDF_ERR_FORMAT, pdfium_c.FPDF_ERR_FILE):
            raise UserError(f"PDF {name!r} is damaged or not a valid PDF: PDFium could not read its "
                            "structure.") from None
        raise UserError(f"PDF {name!r} could not be opened: {exc}.") from None
    if len(doc) == 0:
        doc.close()
        raise UserError(f"PDF {name!r} has no pages.")
    return doc


def _render_scale(width_pt: float, height_pt: float, dpi: float, max_pixels: int) -> float:
    """pdfium scale for `dpi`, lowered so that ceil(w*s) * ceil(h*s) stays within `max_pixels`."""
    # PDF user space is 1/72 inch. PDFium sizes are float32 and pypdfium2 rounds up, so 216 pt at 150 dpi would
    # come out 451 px, not 450: a one-in-a-million shave absorbs that noise.
    scale = dpi / 72.0 * (1 - 1e-6)
    area = width_pt * height_pt * scale * scale
    if area > max_pixels:
        scale *= math.sqrt(max_pixels / area)
        while scale > 0 and math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
            scale *= 0.999  # pdfium rounds sizes up; shave until the rounded size fits
    return scale


def render_pdf(path: str | os.PathLike[str], *, dpi: float = DEFAULT_DPI, pages: Sequence[int] | None = None,
               max_pixels: int = MAX_PAGE_PIXELS) -> Iterator[Image.Image]:
    """Render PDF pages (0-based `pages`, default all) to RGB images, one at a time as they are pulled.

    The file, DPI and page indices are checked now (UserError); rendering happens page by page.
    Pages above `max_pixels` at `dpi` are rendered at the largest resolution that fits.
    """
    check_dpi(dpi)
    p, name = _check_file(path)
    with _PDFIUM_LOCK:
        doc = _open_pdf(p, name)
        n = len(doc)
        doc.close()
    indices = list(range(n)) if pages is None else list(pages)
    bad = [i for i in indices if not 0 <= i < n]
    if bad:
        raise UserError(f"PDF {name!r} has {n} pages; page {bad[0] + 1} does not exist.")
    return _render_pages(p, name, dpi, indices, max_pixels)


def _render_pages(p: Path, name: str, dpi: float, indices: list[int], max_pixels: int) -> Iterator[Image.Image]:
    with _PDFIUM_LOCK:
        doc = _open_pdf(p, name)
    try:
        for i in indices:
            with _PDFIUM_LOCK:
                try:
                    page = doc[i]
                    try:
                        w, h = page.get_size()
                        if not (w > 0 and h > 0 and math.isfinite(w * h)):
                            raise UserError(f"Page {i + 1} of PDF {name!r} has no size ({w}x{h} pt).")
                        bitmap = page.render(scale=_render_scale(w, h, dpi, max_pixels))
                        image = bitmap.to_pil().convert("RGB")  # a copy: the bitmap buffer is freed below
                        bitmap.close()
                    finally:
                        page.close()
                except pdfium.PdfiumError as exc:
                    raise UserError(f"Page {i + 1} of PDF {name!r} could not be rendered: {exc}.") from None
            yield image
    finally:
        with _PDFIUM_LOCK:
            doc.close()


def count_pages(path: str | os.PathLike[str]) -> int:
    """Pages in a document: PDF pages, TIFF frames, 1 for other images. UserError for unreadable files."""
    p, name = _check_file(path)
    suffix = p.suffix.lower()
    if suffix in PDF_SUFFIXES:
        with _PDFIUM_LOCK:
            doc = _open_pdf(p, name)
            n = len(doc)
            doc.close()
        return n
    if suffix in TIFF_SUFFIXES:
        with _open_tiff(p, name) as img:
            return int(getattr(img, "n_frames", 1))
    open_page_image(p)  # validates (bombs, damage) with the image module's messages
    return 1


def open_page_image(path: str | os.PathLike[str]) -> Image.Image:
    """A page image decoded (bomb-checked against MAX_PAGE_SOURCE_PIXELS) and downscaled to MAX_PAGE_PIXELS."""
    return _fit_page(open_image(path, max_pixels=MAX_PAGE_SOURCE_PIXELS, limit_name="QVL_MAX_PAGE_SOURCE_PIXELS"))


def _fit_page(img: Image.Image) -> Image.Image:
    """Downscale a decoded page to MAX_PAGE_PIXELS (the bound every page, rendered or decoded, is held to)."""
    w, h = img.size
    if w * h > MAX_PAGE_PIXELS:
        scale = math.sqrt(MAX_PAGE_PIXELS / (w * h))
        img.thumbnail((max(1, int(w * scale)), max(1, int(h * scale))), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return img


def load_document(path: str | os.PathLike[str], *, dpi: float = DEFAULT_DPI, pages: str | None = None,
                  max_pages: int = DEFAULT_MAX_PDF_PAGES, max_frame_pixels: int = MAX_PAGE_SOURCE_PIXELS,
                  clamp_pages: bool = False) -> Iterator[DocumentPage]:
    """Pages of a PDF or image file as `DocumentPage`s, in page order, one at a time.

    `pages` is a user's page range ('1-5', '2,4', 'all'/None). Everything that can be checked before
    rendering is checked now, so a bad file, range or limit raises UserError at the call, not mid-job.
    `max_pages` is the app's `Limits.max_pdf_pages`; `max_frame_pixels` bounds a TIFF frame's pixels before it
    is decoded, like any page image (MAX_PAGE_SOURCE_PIXELS): a TIFF page is a page, not a chat upload, so the
    upload limit (max_image_pixels) does not apply to it.
    """
    check_dpi(dpi)
    p, name = _check_file(path)
    suffix = p.suffix.lower()
    paged = suffix in PDF_SUFFIXES or suffix in TIFF_SUFFIXES
    n_pages = count_pages(p) if paged else 1  # a PNG/JPEG is decoded once, below, not also to count it
    indices = parse_page_range(pages, n_pages, clamp=clamp_pages)
    if len(indices) > max_pages:
        what = "the selected range has" if pages and pages.strip().lower() not in ("all", "*") else "it has"
        raise UserError(
            f"Document {name!r} is too long: {what} {len(indices)} pages, over the limit of {max_pages} pages "
            f"per job. Choose a page range such as 1-{min(max_pages, n_pages)}. (The limit is QVL_MAX_PDF_PAGES.)"
        )
    if suffix in PDF_SUFFIXES:
        images = render_pdf(p, dpi=dpi, pages=indices)
    elif suffix in TIFF_SUFFIXES and n_pages > 1:
        images = _tiff_frames(p, name, indices, max_frame_pixels)
    else:
        images = iter([open_page_image(p)])  # decoded now: a damaged image fails at the call
    return _pages(images, indices, name, n_pages)


def _pages(images: Iterator[Image.Image], indices: list[int], name: str, n_pages: int) -> Iterator[DocumentPage]:
    # Closing this generator (Stop in the UI) closes the renderer too, which releases the PDF at once.
    try:
        for i, img in zip(indices, images, strict=True):
            yield DocumentPage(img, name, i + 1, n_pages)
    finally:
        close = getattr(images, "close", None)
        if close is not None:
            close()


def _open_tiff(p: Path, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(p)
    except UnidentifiedImageError:
        raise UserError(f"File {name!r} is not a TIFF image this app can read.") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"TIFF {name!r} is damaged or too large: {exc}.") from None


def _tiff_frames(p: Path, name: str, indices: list[int], limit: int) -> Iterator[Image.Image]:
    """Every selected frame of a multi-page TIFF, decoded one at a time, each within `limit` pixels."""
    img = _open_tiff(p, name)
    try:
        for i in indices:
            try:
                img.seek(i)
                w, h = img.size
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise UserError(f"Page {i + 1} of TIFF {name!r} is damaged: {exc}.") from None
            if w * h > limit:  # checked from the frame header, before decoding it
                raise UserError(f"Page {i + 1} of TIFF {name!r} is {w}x{h} = {w * h / 1e6:.1f} MP, over the "
                                f"page-image limit of {limit / 1e6:.0f} MP (QVL_MAX_PAGE_SOURCE_PIXELS).")
            try:
                frame = img.copy()
                frame.load()
            except (OSError, SyntaxError, ValueError, EOFError) as exc:
                raise UserError(f"Page {i + 1} of TIFF {name!r} is damaged: {exc}.") from None
            yield _fit_page(_frame_to_rgb(ImageOps.exif_transpose(frame) or frame))
    finally:
        img.close()


def _frame_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # transparent areas become white paper, not black
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit scans: scale to 8 bits, PIL would clip
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")
