"""Untrusted QwenVL HTML in, safe HTML out: the nh3 sanitizer, the sandboxed preview, fence stripping, tree reading.

The document prompt ("QwenVL HTML", the cookbook's prompt) makes the model write a fenced HTML page whose elements
carry `data-bbox="x1 y1 x2 y2"` in the family's coordinate convention. That HTML is
untrusted: a document image can say anything, and the model may copy it. Everything that reaches a
browser goes through `sanitize_html` (an nh3 allowlist); everything else parses with BeautifulSoup's
forgiving `html.parser` (`parse_tree`), so broken or cut-off answers never raise. Pure functions; no Gradio.
"""

from __future__ import annotations

import html as html_lib
import re

import nh3
from bs4 import BeautifulSoup, NavigableString, Tag

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


def small_int(value: object) -> int | None:
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
        n = small_int(value)
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
    text = el.get("alttext") or element_text(el)
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
SKIP_TAGS = frozenset({"script", "style", "title", "template", "noscript", "iframe", "object", "embed", "svg",
                       "textarea", "select", "button", "meta", "link", "base"})
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def parse_tree(html: str) -> BeautifulSoup:
    """A forgiving parse of (at most MAX_HTML_CHARS of) an answer; never raises."""
    return BeautifulSoup(str(html or "")[:MAX_HTML_CHARS], "html.parser")


def _classes(el: Tag) -> list[str]:
    cls = el.get("class")
    if isinstance(cls, str):
        cls = cls.split()
    return [c.lower().replace("_", "-") for c in (cls or [])]


def block_kind(el: Tag) -> str:
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
    # QwenVL writes an image region as class "image caption" (the picture with the caption under it): an image.
    # "table caption", "image_caption" and a lone "caption" are captions.
    if (any(c.endswith("caption") for c in cls) and not has("image")) or tag in ("figcaption", "caption"):
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
    if tag in HEADINGS or has("title"):
        return "heading"
    if tag == "p" or has("text"):
        return "paragraph"
    if tag in ("ul", "ol", "dl") or has("list"):
        return "list"
    return tag


def element_text(el: Tag) -> str:
    """The visible text of an element, whitespace collapsed (skipped tags and comments left out)."""
    parts = []
    for s in el.find_all(string=True):
        if type(s) is NavigableString and not any(p.name in SKIP_TAGS for p in s.parents if isinstance(p, Tag)):
            parts.append(str(s))
    return " ".join(" ".join(parts).split())

