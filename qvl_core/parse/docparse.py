"""QwenVL HTML answers in, safe HTML, layout boxes, Markdown and text out. Pure functions; no Gradio.

The document prompt ("QwenVL HTML", the cookbook's prompt) makes the model write a fenced HTML page whose elements
carry `data-bbox="x1 y1 x2 y2"` in the family's coordinate convention. That HTML is
untrusted: a document image can say anything, and the model may copy it. Everything that reaches a
browser goes through `sanitize_html` (an nh3 allowlist); everything else parses with BeautifulSoup's
forgiving `html.parser`, so broken or cut-off answers never raise.
"""

from __future__ import annotations

import html as html_lib
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import nh3
from bs4 import BeautifulSoup, NavigableString, Tag
from PIL import Image, ImageDraw, ImageFont

from qvl_core.families import FamilySpec, family_for
from qvl_core.parse.grounding import coordinate_scales

# --- Named limits ---------------------------------------------------------------------------------
# A full page answer is ~30k characters; far more than that is not a page. Longer input is cut
# (the sanitizer and parsers tolerate cut HTML) so one hostile answer cannot stall a worker.
MAX_HTML_CHARS = 2_000_000
# nh3 (html5ever) takes time quadratic in nesting depth (20k nested <div> ≈ 2 s). Real pages nest
# fewer than 20 levels; past this many unclosed container tags the answer is shown as escaped text.
MAX_OPEN_ELEMENTS = 1_000
# Our own tree walks recurse; deeper subtrees are read as flat text instead.
MAX_WALK_DEPTH = 200
MAX_SPAN = 100  # colspan / rowspan above this are treated as this (hostile tables cannot blow up the grid)

# --- Sanitizer policy -----------------------------------------------------------------------------
# Structure only. No element here can run code, load a resource or take over the page's layout.
ALLOWED_TAGS = frozenset({
    "h1", "h2", "h3", "h4", "h5", "h6", "p", "br", "hr", "span", "div", "section", "article", "header",
    "footer", "aside", "main", "ul", "ol", "li", "dl", "dt", "dd",
    "table", "caption", "colgroup", "col", "thead", "tbody", "tfoot", "tr", "th", "td",
    "b", "i", "em", "strong", "sub", "sup", "u", "s", "del", "ins", "mark", "small", "code", "kbd", "samp",
    "pre", "blockquote", "figure", "figcaption", "img", "a", "abbr",
})
# Removed together with their content (the rest of the disallowed tags are unwrapped: text kept).
CLEAN_CONTENT_TAGS = frozenset({
    "script", "style", "title", "template", "noscript", "iframe", "frame", "frameset", "object", "embed",
    "applet", "svg", "textarea", "select", "option", "xmp", "noembed", "noframes", "button",
})
_ALLOWED_ATTRIBUTES = {
    "*": {"class", "data-bbox", "data-polygon", "format", "dir", "id"},
    "img": {"src", "alt"},
    "a": {"href"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "ol": {"start"},
}
# Classes the QwenVL HTML vocabulary uses (seen in the cookbook and the Qwen2.5-VL report) plus `math`, which we
# add. Other class names are dropped: under innerHTML they would pick up the host page's CSS (a
# document could ask for the app's own "fixed full-screen" classes and cover the UI).
DOC_CLASSES = frozenset({
    "formula", "machine_printed", "handwritten", "image", "caption", "ocr", "music", "sheet", "chemical",
    "chart", "table", "footnote", "header", "footer", "page-header", "page_header", "page-footer",
    "page_footer", "page-number", "page_number", "title", "text", "seal", "code", "abstract", "reference",
    "list", "equation", "figure", "math", "doc-header", "doc-footer",
})
ID_PREFIX = "doc-"  # ids are namespaced so a document cannot clobber the host page's ids
_NUMBERS_ATTR = re.compile(r"[\d\s.,+\-\[\]()]*\Z")
_FORMAT_ATTR = re.compile(r"[\w .+#-]{1,40}\Z")
_ID_ATTR = re.compile(r"[\w.-]{1,100}\Z")
_FRAGMENT = re.compile(r"#([\w.-]{1,100})\Z")
# Only raster images inlined by us (page crops); never SVG (scriptable elsewhere) and never a URL that loads.
_DATA_IMAGE = re.compile(r"data:image/(?:png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+\Z", re.IGNORECASE)
_CONTAINER_TAGS = ("div", "section", "article", "span", "table", "ul", "ol", "blockquote", "b", "i", "em",
                   "strong", "a", "font", "header", "footer", "figure", "main", "aside", "nav")
_OPEN_TAG = re.compile(r"<(" + "|".join(_CONTAINER_TAGS) + r")[\s/>]", re.IGNORECASE)
_CLOSE_TAG = re.compile(r"</(" + "|".join(_CONTAINER_TAGS) + r")\s*>", re.IGNORECASE)
# Bounded and tempered so that thousands of unclosed "<math" cannot make the search quadratic.
_MATH = re.compile(r"<math\b[^<>]{0,2000}>(?:[^<]|<(?!/?math\b))*</math\s*>", re.IGNORECASE)


def _small_int(value: object) -> int | None:
    """A non-negative ASCII integer of at most 7 digits, else None ("²".isdigit() is True but int() refuses it)."""
    v = str(value).strip() if value is not None else ""
    return int(v) if v.isascii() and v.isdigit() and len(v) < 8 else None


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    """Second gate after the attribute allowlist: every kept value must have the shape we expect."""
    if attr == "class":
        kept = [c for c in value.split() if c.lower() in DOC_CLASSES]
        return " ".join(kept) or None
    if attr in ("data-bbox", "data-polygon"):
        limit = 200 if attr == "data-bbox" else 4000
        return value if len(value) <= limit and _NUMBERS_ATTR.match(value) else None
    if attr == "format":
        return value if _FORMAT_ATTR.match(value) else None
    if attr == "dir":
        return value if value.lower() in ("ltr", "rtl", "auto") else None
    if attr == "id":  # nh3 has already added ID_PREFIX
        return value if _ID_ATTR.match(value) else None
    if attr == "href":  # in-document fragments only, pointed at the prefixed ids
        m = _FRAGMENT.match(value.strip())
        if not m:
            return None
        target = m.group(1)  # nh3 prefixes ids only once; so do we (sanitizing twice changes nothing)
        return f"#{target}" if target.startswith(ID_PREFIX) else f"#{ID_PREFIX}{target}"
    if attr == "src":
        return value if _DATA_IMAGE.match(value.strip()) else None
    if attr in ("colspan", "rowspan", "start"):
        n = _small_int(value)
        return None if n is None else str(min(n, MAX_SPAN if attr != "start" else 1_000_000))
    if attr == "alt":
        return value[:500]
    if attr == "rel":  # set by nh3 itself (link_rel)
        return value
    return None


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags=set(CLEAN_CONTENT_TAGS),
    attributes={k: set(v) for k, v in _ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_attribute_filter,
    strip_comments=True,
    link_rel="noopener noreferrer",
    url_schemes={"data"},  # nh3's scheme gate; _attribute_filter narrows it to raster data: images on <img>
    id_prefix=ID_PREFIX,
)


def _too_deep(text: str) -> bool:
    opened = len(_OPEN_TAG.findall(text))
    return opened > MAX_OPEN_ELEMENTS and opened - len(_CLOSE_TAG.findall(text)) > MAX_OPEN_ELEMENTS


def _math_as_text(match: re.Match[str]) -> str:
    # nh3 drops MathML with everything inside it; keep the formula as text (alttext is usually LaTeX).
    el = BeautifulSoup(match.group(0), "html.parser").find("math")
    if not isinstance(el, Tag):
        return ""
    text = el.get("alttext") or _element_text(el)
    return f'<span class="math">{html_lib.escape(str(text))}</span>'


def sanitize_html(html: str) -> str:
    """Model HTML -> HTML that is safe to assign to `innerHTML`: document structure kept, anything active removed.

    Kept: headings, paragraphs, lists, tables (colspan/rowspan), inline emphasis, code, figures, `class`
    (QwenVL vocabulary only), `data-bbox`, `data-polygon`, `format`. `<img>` is an inert placeholder
    (`alt`, `data-bbox`; `src` only as an inline raster `data:image/...`). MathML becomes its text.
    Dropped: scripts, styles and `style=`, event handlers, forms, frames, embeds, SVG, meta/base/link,
    comments, `srcset`, every URL except `#fragment` links (which get rel=noopener noreferrer).
    """
    text = str(html or "")[:MAX_HTML_CHARS]
    if _too_deep(text):
        return f"<pre>{html_lib.escape(text)}</pre>"
    text = _MATH.sub(_math_as_text, text)
    return _CLEANER.clean(text)


_PREVIEW_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_PREVIEW_CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1rem auto; max-width: 60rem;
       padding: 0 1rem; color: #1f2328; background: #fff; }
table { border-collapse: collapse; margin: .75rem 0; }
th, td { border: 1px solid #c8ccd0; padding: .25rem .5rem; vertical-align: top; }
th { background: #f3f4f6; }
img { display: inline-block; min-width: 6rem; min-height: 3rem; border: 1px dashed #9aa0a6;
      background: #f6f8fa; color: #57606a; font-size: .8rem; }
.formula, .math { font-family: "Latin Modern Math", "STIX Two Math", serif; background: #f6f8fa;
                  padding: .25rem .5rem; border-radius: 4px; }
div.formula { display: block; margin: .5rem 0; white-space: pre-wrap; }
.caption, figcaption { color: #57606a; font-size: .9em; font-style: italic; }
.chart, .image { border-left: 3px solid #8250df; padding-left: .5rem; margin: .5rem 0; }
.music, .chemical { font-family: ui-monospace, monospace; white-space: pre-wrap; }
.header, .footer, .page-header, .page-footer, .footnote { color: #57606a; font-size: .85em; }
[data-bbox]:hover { outline: 1px solid rgba(9, 105, 218, .4); }
pre, code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; }
"""


def preview_document(html: str) -> str:
    """The sanitized HTML as a standalone page with a strict CSP, for an `<iframe sandbox srcdoc>`."""
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_PREVIEW_CSP}\">"
        "<meta name=\"referrer\" content=\"no-referrer\">"
        f"<style>{_PREVIEW_CSS}</style></head><body>{sanitize_html(html)}</body></html>"
    )


def iframe_html(html: str, *, height: int = 800, title: str = "Document preview") -> str:
    """An `<iframe sandbox="" srcdoc=...>` element showing `preview_document(html)`.

    Three layers: the sanitizer; the empty sandbox (no scripts, no forms, opaque origin); the CSP meta
    (no network at all except inline `data:` images).
    """
    srcdoc = html_lib.escape(preview_document(html), quote=True)
    return (
        f'<iframe sandbox="" referrerpolicy="no-referrer" title="{html_lib.escape(title, quote=True)}" '
        f'style="width:100%;height:{int(height)}px;border:1px solid #d0d7de;border-radius:6px;background:#fff" '
        f'srcdoc="{srcdoc}"></iframe>'
    )


# --- Finding the HTML in an answer ----------------------------------------------------------------
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.IGNORECASE | re.DOTALL)
# The body starts on the next line, or at once when the model glued it on: "```html<html>...".
_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n<]*\n?")
_HTML_START = re.compile(r"<!doctype\s+html|<html\b", re.IGNORECASE)
_HTML_END = re.compile(r"</html\s*>", re.IGNORECASE)
_LOOKS_HTML = re.compile(
    r"<\s*(?:html|body|head|h[1-6]|p|div|span|table|tr|td|th|ul|ol|li|img|br|section|figure|math)\b[^<>]*>"
    r"|\bdata-bbox\s*=", re.IGNORECASE)


def strip_fences(text: str) -> str:
    """The HTML part of an answer: the ```html fence (even if never closed), else `<html>...</html>`, else the text.

    Text before/after the fence and `<think>...</think>` reasoning are dropped.
    """
    text = str(text or "")
    if "</think>" in text.lower() and "<think>" not in text.lower():
        text = text[text.lower().rindex("</think>") + len("</think>"):]  # template opened <think> in the prompt
    text = _THINK.sub("", text)
    fences = list(_FENCE.finditer(text))
    i = 0
    while i < len(fences):
        m = fences[i]
        close = fences[i + 1].start() if i + 1 < len(fences) else len(text)
        body = text[m.end():close]
        if m.group(1).lower() in ("html", "htm", "xhtml", "") and looks_like_html(body):
            return body.strip()
        i += 2  # skip the closing fence of this block
    start = _HTML_START.search(text)
    if start:
        end = _HTML_END.search(text, start.end())
        return text[start.start(): end.end() if end else len(text)].strip()
    return text.strip()


def looks_like_html(text: str) -> bool:
    """Whether an answer contains HTML markup at all (an answer in prose or Markdown does not)."""
    return bool(_LOOKS_HTML.search(str(text or "")))


# --- Parsing ---------------------------------------------------------------------------------------
# Content never shown. Not <head>: html.parser has no implied end tags, so a page that forgets </head>
# would put its whole <body> inside it.
_SKIP_TAGS = frozenset({"script", "style", "title", "template", "noscript", "iframe", "object", "embed", "svg",
                        "textarea", "select", "button", "meta", "link", "base"})
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _parse(html: str) -> BeautifulSoup:
    return BeautifulSoup(str(html or "")[:MAX_HTML_CHARS], "html.parser")


def _classes(el: Tag) -> list[str]:
    cls = el.get("class")
    if isinstance(cls, str):
        cls = cls.split()
    return [c.lower().replace("_", "-") for c in (cls or [])]


def _kind(el: Tag) -> str:
    """Layout kind from class first (QwenVL puts the semantics there), then from the tag."""
    cls = _classes(el)
    tag = el.name or ""

    def has(*names: str) -> bool:
        return any(c in names for c in cls)

    if has("chemical"):
        return "chemical-formula"
    if has("music"):
        return "music-sheet"
    if any(c.startswith(("formula", "equation")) for c in cls) or tag == "math":
        return "formula"
    if any(c.endswith("caption") for c in cls) or tag in ("figcaption", "caption"):
        return "caption"
    if has("chart"):
        return "chart"
    if any(c.startswith("footnote") for c in cls):
        return "footnote"
    if has("header", "page-header", "doc-header") or tag == "header":
        return "page-header"
    if has("footer", "page-footer", "page-number", "doc-footer") or tag == "footer":
        return "page-footer"
    if has("image", "figure", "img", "seal") or tag in ("img", "figure"):
        return "image"
    if has("table") or tag == "table":
        return "table"
    if tag in _HEADINGS or has("title"):
        return "heading"
    if tag == "p" or has("text"):
        return "paragraph"
    if tag in ("ul", "ol", "dl") or has("list"):
        return "list"
    return tag


# --- Layout ----------------------------------------------------------------------------------------
Box = tuple[float, float, float, float]
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_BBOX_SEP = re.compile(r"[\s,;()\[\]]+")
# Elements reported even without a data-bbox (box=None), so no text block goes missing from the list.
_LAYOUT_TAGS = frozenset({*_HEADINGS, "p", "ul", "ol", "dl", "table", "figure", "img", "pre", "blockquote",
                          "header", "footer", "figcaption", "math"})


@dataclass(frozen=True)
class LayoutBlock:
    """One region of a page: `box` in ORIGINAL page pixels (x1, y1, x2, y2), or None when the model gave none.

    `depth` is 0 for a block no other reported block contains, 1 for one nested in it (an `<img>` inside a
    `div.image`), and so on; views that want one box per region draw depth 0 only.
    """

    kind: str
    box: Box | None
    text: str
    tag: str
    page: int | None = None
    depth: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (box as a list)."""
        d = asdict(self)
        d["box"] = list(self.box) if self.box is not None else None
        return d


def parse_bbox(value: str | None) -> tuple[float, float, float, float] | None:
    """'x1 y1 x2 y2' (commas, brackets tolerated) -> four finite numbers, or None when it is not exactly four."""
    tokens = [t for t in _BBOX_SEP.split(str(value or "")) if t]
    if len(tokens) != 4 or not all(_NUMBER.fullmatch(t) for t in tokens):
        return None  # "x1 y1 x2 y2" placeholders, polygons, words
    nums = [float(t) for t in tokens]
    if not all(math.isfinite(n) for n in nums):
        return None
    return nums[0], nums[1], nums[2], nums[3]


def map_box(raw: tuple[float, float, float, float], *, family: FamilySpec | str, input_size: tuple[int, int],
            image_size: tuple[int, int]) -> Box:
    """A box in the family's convention -> original image pixels, corners ordered, clamped to the image."""
    sx, sy = coordinate_scales(family, input_size, image_size)  # the same per-family map as grounding
    w, h = image_size
    x1, y1, x2, y2 = raw
    xs = sorted((min(max(x1 * sx, 0.0), float(w)), min(max(x2 * sx, 0.0), float(w))))
    ys = sorted((min(max(y1 * sy, 0.0), float(h)), min(max(y2 * sy, 0.0), float(h))))
    return round(xs[0], 2), round(ys[0], 2), round(xs[1], 2), round(ys[1], 2)


def _element_text(el: Tag) -> str:
    parts = []
    for s in el.find_all(string=True):
        if type(s) is NavigableString and not any(p.name in _SKIP_TAGS for p in s.parents if isinstance(p, Tag)):
            parts.append(str(s))
    return " ".join(" ".join(parts).split())


def extract_layout(html: str, *, family: FamilySpec | str, input_size: tuple[int, int],
                   image_size: tuple[int, int], page: int | None = None) -> list[LayoutBlock]:
    """Every element of a QwenVL HTML answer that is a layout region, in document order.

    Reported: each element with its own `data-bbox` at any depth (an `<img data-bbox>` inside a
    `div.image` too: `depth` tells them apart), plus outermost layout elements without one (headings,
    paragraphs, lists, tables, figures, elements with a QwenVL class) with `box=None`. A `data-bbox` that is
    not four numbers gives `box=None`. Never raises on arbitrary text (plain text gives []).
    """
    if isinstance(family, str):
        family = family_for(family)
    if min(*input_size, *image_size) <= 0:
        raise ValueError(f"input_size {input_size} and image_size {image_size} must be positive (width, height)")
    blocks: list[LayoutBlock] = []

    def visit(el: Tag, depth: int, level: int) -> None:
        if level > MAX_WALK_DEPTH:
            return
        for child in el.children:
            if not isinstance(child, Tag) or child.name in _SKIP_TAGS:
                continue
            has_box = child.has_attr("data-bbox")
            kind = _kind(child)
            is_layout = child.name in _LAYOUT_TAGS or kind != child.name
            if has_box or (depth == 0 and is_layout):
                raw = parse_bbox(child.get("data-bbox")) if has_box else None  # type: ignore[arg-type]
                box = map_box(raw, family=family, input_size=input_size, image_size=image_size) if raw else None
                blocks.append(LayoutBlock(kind, box, _element_text(child), child.name, page, depth))
                visit(child, depth + 1, level + 1)
            else:
                visit(child, depth, level + 1)

    visit(_parse(html), 0, 0)
    return blocks


# --- Drawing ---------------------------------------------------------------------------------------
KIND_COLORS: dict[str, tuple[int, int, int]] = {
    "heading": (214, 39, 40),
    "paragraph": (31, 119, 180),
    "list": (23, 190, 207),
    "table": (44, 160, 44),
    "formula": (148, 103, 189),
    "image": (255, 127, 14),
    "caption": (140, 86, 75),
    "chart": (227, 119, 194),
    "music-sheet": (188, 189, 34),
    "chemical-formula": (0, 128, 128),
    "footnote": (127, 127, 127),
    "page-header": (100, 100, 160),
    "page-footer": (100, 100, 160),
}
DEFAULT_KIND_COLOR = (90, 90, 90)


def draw_layout(image: Image.Image, blocks: list[LayoutBlock] | tuple[LayoutBlock, ...]) -> Image.Image:
    """A copy of the page with each block's box drawn in its kind's colour and a small kind tag."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out, "RGBA")
    short = min(out.size)
    line = max(1, round(short / 400))
    font_size = max(10, round(short / 70))
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.load_default(size=font_size)
    except (OSError, TypeError, ImportError):  # Pillow built without FreeType
        font = ImageFont.load_default()
    for b in blocks:
        if b.box is None:
            continue
        color = KIND_COLORS.get(b.kind, DEFAULT_KIND_COLOR)
        x1, y1, x2, y2 = b.box
        draw.rectangle((x1, y1, x2, y2), outline=(*color, 255), fill=(*color, 28), width=line)
        tx1, ty1, tx2, ty2 = draw.textbbox((0, 0), b.kind, font=font)
        tw, th = tx2 - tx1 + 6, ty2 - ty1 + 4
        lx = min(max(0.0, x1), max(0.0, out.width - tw))
        ly = y1 - th if y1 - th >= 0 else y1  # above the box, or inside it at the top edge
        draw.rectangle((lx, ly, lx + tw, ly + th), fill=(*color, 220))
        draw.text((lx + 3 - tx1, ly + 2 - ty1), b.kind, fill=(255, 255, 255, 255), font=font)
    return out


# --- Markdown --------------------------------------------------------------------------------------
_BLOCK_TAGS = frozenset({
    *_HEADINGS, "p", "div", "section", "article", "header", "footer", "aside", "main", "nav", "body", "html",
    "ul", "ol", "dl", "dt", "dd", "li", "table", "blockquote", "pre", "figure", "figcaption", "hr", "caption",
    "form", "fieldset", "address", "center",
})
_MD_ESCAPE = re.compile(r"([\\`*_\[\]<$~])")
# What would turn a line of text into a heading, quote, list item or setext underline.
_LINE_START = re.compile(r"^([ \t]*)(?:(#{1,6}(?=\s|$)|>|[-+](?=\s)|[=-]+[ \t]*$)|(\d{1,9})([.)])(?=\s|$))",
                         re.MULTILINE)
_LIST_START = re.compile(r"(?:[-+*]|\d{1,9}[.)]) ")
_ENTITY_LIKE = re.compile(r"&(?=#?\w+;)")
_MATH_DELIMS = (("$$", "$$"), ("\\[", "\\]"), ("\\(", "\\)"), ("$", "$"))


def _escape_line_starts(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return f"{m.group(1)}\\{m.group(2)}"
        return f"{m.group(1)}{m.group(3)}\\{m.group(4)}"  # "1. x" -> "1\. x"

    return _LINE_START.sub(fix, text)


def _escape_md(text: str) -> str:
    return _ENTITY_LIKE.sub(r"\\&", _MD_ESCAPE.sub(r"\\\1", text))


def _strip_math_delims(tex: str) -> str:
    tex = tex.strip()
    for left, right in _MATH_DELIMS:
        if tex.startswith(left) and tex.endswith(right) and len(tex) >= len(left) + len(right):
            return tex[len(left): len(tex) - len(right)].strip()
    return tex


def _raw_text(el: Tag) -> str:
    """Text as written (formulas: LaTeX), skipping the img crop QwenVL puts inside formula/chart divs."""
    return "".join(str(s) for s in el.find_all(string=True)
                   if type(s) is NavigableString
                   and not any(p.name in _SKIP_TAGS for p in s.parents if isinstance(p, Tag)))


def _bbox_label(el: Tag) -> str:
    raw = parse_bbox(el.get("data-bbox"))  # type: ignore[arg-type]
    if raw is None:
        img = el.find("img", attrs={"data-bbox": True})
        raw = parse_bbox(img.get("data-bbox")) if isinstance(img, Tag) else None  # type: ignore[arg-type]
    if raw is None:
        return ""
    return " (" + ", ".join(f"{v:g}" for v in raw) + ")"


def _wrap(inner: str, mark: str) -> str:
    core = inner.strip()
    if not core:
        return inner
    lead = " " if inner[:1].isspace() else ""
    trail = " " if inner[-1:].isspace() else ""
    return f"{lead}{mark}{core}{mark}{trail}"


def _code_span(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return ""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _is_block(el: Tag) -> bool:
    """Block-level for Markdown: block tags, and formula/music/chemistry regions written on any non-inline tag."""
    if el.name in _SKIP_TAGS:
        return False
    if el.name in _BLOCK_TAGS:
        return True
    return el.name not in ("span", "math") and _kind(el) in ("formula", "music-sheet", "chemical-formula")


class _Markdown:
    """A walk over the bs4 tree: `blocks` returns Markdown blocks, `inline` one line of inline Markdown."""

    def __init__(self, in_cell: bool = False) -> None:
        self.in_cell = in_cell
        self.br = "<br>" if in_cell else "\\\n"

    # inline ----------------------------------------------------------------------------------------
    def inline(self, node: Any, level: int = 0) -> str:
        if isinstance(node, NavigableString):
            if type(node) is not NavigableString:  # comments, doctype, CDATA
                return ""
            return _escape_md(re.sub(r"\s+", " ", str(node)))
        if not isinstance(node, Tag) or node.name in _SKIP_TAGS:
            return ""
        if level > MAX_WALK_DEPTH:
            return _escape_md(" ".join(node.get_text(" ").split()))
        name = node.name
        kind = _kind(node)
        if name == "br":
            return self.br
        if name == "img":
            return f"<!-- Image{_bbox_label(node)} -->"
        if kind == "formula":
            tex = " ".join(_strip_math_delims(node.get("alttext") or _raw_text(node)).split())  # type: ignore[arg-type]
            return f"${tex}$" if tex else ""
        inner = "".join(self.inline(c, level + 1) for c in node.children)
        if name in ("b", "strong"):
            return _wrap(inner, "**")
        if name in ("i", "em", "cite", "dfn"):
            return _wrap(inner, "*")
        if name in ("s", "del", "strike"):
            return _wrap(inner, "~~")
        if name in ("code", "kbd", "samp", "tt"):
            return _code_span(node.get_text())
        if name in ("sub", "sup"):
            return f"<{name}>{inner.strip()}</{name}>" if inner.strip() else ""
        if name in _BLOCK_TAGS:  # a block inside inline context (a <p> in a cell, a div in a span)
            return f" {inner.strip()} " if not self.in_cell else f"{self.br}{inner.strip()}{self.br}"
        return inner

    # blocks ----------------------------------------------------------------------------------------
    def blocks(self, el: Tag, level: int = 0) -> list[str]:
        out: list[str] = []
        buf: list[str] = []

        def flush() -> None:
            text = _escape_line_starts("".join(buf).strip(" \t"))
            text = re.sub(r" *(\\\n|<br>) *", r"\1", text).strip()
            text = re.sub(r"^(?:\\\n|<br>)+|(?:\\\n|<br>)+$", "", text).strip()
            if text:
                out.append(text)
            buf.clear()

        for child in el.children:
            if isinstance(child, Tag) and _is_block(child):
                flush()
                out.extend(self.block(child, level + 1))
            else:
                buf.append(self.inline(child, level + 1))
        flush()
        return out

    def block(self, el: Tag, level: int) -> list[str]:
        if level > MAX_WALK_DEPTH:
            text = _escape_md(" ".join(el.get_text(" ").split()))
            return [text] if text else []
        name, kind = el.name, _kind(el)
        if kind == "formula":
            tex = _strip_math_delims(_raw_text(el))
            return [f"$$\n{tex}\n$$"] if tex else []
        if kind in ("music-sheet", "chemical-formula"):
            content = _raw_text(el).strip()
            if not content:
                return []
            lang = re.sub(r"[^\w+-]", "", str(el.get("format") or "").split(" ")[0])
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", content)), default=0))
            return [f"{fence}{lang}\n{content}\n{fence}"]
        if kind in ("image", "chart") and name != "table":
            label = "Chart" if kind == "chart" else "Image"
            rest = [b for b in self.blocks(el, level) if not b.startswith("<!-- Image")]
            return [f"<!-- {label}{_bbox_label(el)} -->", *rest]
        if name in _HEADINGS:
            text = " ".join(self.inline(el, level).replace("\\\n", " ").split())
            return [f"{'#' * int(name[1])} {text}"] if text else []
        if name == "hr":
            return ["---"]
        if name in ("ul", "ol"):
            return self.list_block(el, level)
        if name == "table":
            return self.table(el, level)
        if name == "pre":
            code = el.get_text().strip("\n")
            fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", code)), default=0))
            return [f"{fence}\n{code}\n{fence}"] if code.strip() else []
        if name == "blockquote":
            inner = "\n\n".join(self.blocks(el, level))
            return ["\n".join(f"> {line}".rstrip() for line in inner.splitlines())] if inner else []
        return self.blocks(el, level)

    def list_block(self, el: Tag, level: int) -> list[str]:
        ordered = el.name == "ol"
        n = _small_int(el.get("start"))
        n = 1 if n is None else n
        items: list[str] = []
        for li in el.find_all("li", recursive=False):
            marker = f"{n}. " if ordered else "- "
            n += 1
            parts = self.blocks(li, level)
            # A nested list stays tight under its item; other blocks in an item are separate paragraphs.
            body = "".join(("\n" if _LIST_START.match(b) else "\n\n") + b if k else b for k, b in enumerate(parts))
            lines = body.splitlines() or [""]
            pad = " " * len(marker)
            items.append("\n".join([marker + lines[0], *[(pad + ln) if ln else "" for ln in lines[1:]]]).rstrip())
        # Stray content directly inside <ul> (broken HTML) is kept as paragraphs after the list.
        stray = [b for c in el.children if isinstance(c, Tag) and c.name != "li" for b in self.block(c, level + 1)]
        return (["\n".join(items)] if items else []) + stray

    def table(self, el: Tag, level: int) -> list[str]:
        caption = el.find("caption")
        rows = [tr for tr in el.find_all("tr") if tr.find_parent("table") is el]
        grid: dict[tuple[int, int], str] = {}
        cell_md = _Markdown(in_cell=True)
        for r, tr in enumerate(rows):
            c = 0
            for cell in tr.find_all(["td", "th"], recursive=False):
                while (r, c) in grid:
                    c += 1
                cs = _span(cell.get("colspan"), MAX_SPAN)
                rs = _span(cell.get("rowspan"), len(rows) - r)
                text = "<br>".join(cell_md.blocks(cell, level + 1)).replace("\n", "<br>")
                text = re.sub(r"(?<!\\)\|", r"\\|", text)
                # Spans flatten to the text in the top-left cell and empty cells in the rest, as the grid looks.
                for dr in range(rs):
                    for dc in range(cs):
                        grid.setdefault((r + dr, c + dc), text if dr == dc == 0 else "")
                c += cs
        out = []
        if isinstance(caption, Tag) and caption.find_parent("table") is el:
            cap = " ".join(self.inline(caption, level).split())
            if cap:
                out.append(cap)
        if not grid:
            return out
        n_rows = max(r for r, _ in grid) + 1
        n_cols = max(c for _, c in grid) + 1
        lines = []
        for r in range(n_rows):
            lines.append("| " + " | ".join(grid.get((r, c), "") for c in range(n_cols)) + " |")
            if r == 0:  # GFM needs a header row: the first row of the grid is it
                lines.append("|" + "|".join(" --- " for _ in range(n_cols)) + "|")
        out.append("\n".join(lines))
        return out


def _span(value: Any, cap: int) -> int:
    return max(1, min(_small_int(value) or 1, max(1, cap)))


def html_to_markdown(html: str) -> str:
    """QwenVL HTML -> GitHub-flavoured Markdown.

    Headings `#`, lists, pipe tables (first row as header; spans flattened to the top-left cell), formula
    elements as `$$...$$` blocks (inline ones `$...$`; the model writes LaTeX inside them), music sheets
    and chemical formulas as fenced code named by their `format`, images and charts as
    `<!-- Image (x1, y1, x2, y2) -->` placeholders with the box as the model wrote it. data-bbox is dropped.
    """
    soup = _parse(html)
    body = soup.find("body")
    md = "\n\n".join(_Markdown().blocks(body if isinstance(body, Tag) else soup)).strip()
    return md + "\n" if md else ""


def html_to_text(html: str) -> str:
    """Plain text of a QwenVL HTML answer: one line per block, table cells separated by tabs."""
    soup = _parse(html)
    chunks: list[str] = []

    def walk(el: Tag, level: int) -> None:
        for child in el.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:
                    chunks.append(re.sub(r"\s+", " ", str(child)))
                continue
            if not isinstance(child, Tag) or child.name in _SKIP_TAGS:
                continue
            if level > MAX_WALK_DEPTH:
                chunks.append(" ".join(child.get_text(" ").split()))
                continue
            name = child.name
            if name == "br":
                chunks.append("\n")
            elif name in ("td", "th"):
                chunks.append("\t")
                walk(child, level + 1)
            elif name in _BLOCK_TAGS or name == "tr":
                chunks.append("\n")
                walk(child, level + 1)
                chunks.append("\n")
            else:
                walk(child, level + 1)

    walk(soup, 0)
    lines = []
    for line in "".join(chunks).split("\n"):
        cells = [" ".join(c.split()) for c in line.split("\t")]
        if line.lstrip(" ").startswith("\t"):
            cells = cells[1:]  # a row starts with its first cell's separator
        text = "\t".join(cells).strip(" ")
        if text.strip():
            lines.append(text)
    return "\n".join(lines)
