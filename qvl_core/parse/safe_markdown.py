"""Model-written Markdown made inert and bounded for display: no raw HTML, no loading images, no script links. Pure.

The chat renders the model's answer as Markdown. Gradio's sanitizer removes scripts and event handlers,
but keeps remote images (`![](http://…)`, `<img src=http://…>`), CSS `url()` and `position:fixed` overlays,
which make the browser contact any host the answer names or cover the page. So before display:
- what is code is decided by a CommonMark parser (markdown-it-py), not by a pattern of our own: an escaped
  backtick, backtick runs of unequal length, a fence whose info string holds a backtick or a fence indented
  four spaces are all not what a regex thinks they are, and whatever is not code is where HTML would be live;
- outside code every `<` that starts a tag becomes `&lt;` (raw HTML shows as text), `![` becomes `!\\[` (an image
  turns into a link that loads nothing until clicked), and a link target that is not http(s), mailto or an
  in-page anchor becomes `#` (javascript:, data:, vbscript:…);
- nesting is bounded: KaTeX crashes the tab on a formula nested a few hundred deep, and the browser's Markdown
  renderer runs out of stack on thousands of nested quotes, lists or emphasis markers;
- the browser's renderer is not CommonMark (Gradio ships `marked`, which closes fences, finds tables and ends code
  spans by rules of its own, renders ```mermaid fences as raw HTML, dedents the text first with
  `inspect.cleandoc` and extracts formulas before parsing, code included), so what CommonMark calls code must be
  harmless even where the renderer disagrees: inside code a `<` that would start a tag gets a zero-width space
  after it (`<\u200bimg` is no tag in any HTML parser, and looks the same), as do `![`, `](` and `]:`; no
  ```mermaid is left anywhere (the renderer starts a mermaid block wherever a line holds one, even inside a
  paragraph); the text is dedented as the renderer will dedent it, before and after;
- a formula anywhere (code too), paired as Gradio pairs delimiters or as the page's KaTeX auto-render does
  (brace-aware), that nests too deep, defines macros (`\\def` chains expand as deep as the nesting they hide)
  or draws or moves far (`\\rule`, `\\kern`, `\\raisebox`), loses its delimiters; an entity that the browser
  would decode into a delimiter (`&#36;`) is shown as written;
- the result is parsed again, and if anything live is left (a tag, an image, an unsafe link) the whole answer is
  shown as one code block instead. Whatever parser reads the result, no `<` in it starts a tag: every one is
  `&lt;` or is followed by a zero-width space.
The conversation keeps the raw text; this runs only on the way to the screen. Copying code from the chat copies
the invisible zero-width spaces too.
"""

from __future__ import annotations

import functools
import html
import inspect
import re

from markdown_it import MarkdownIt
from markdown_it.rules_inline import backtick

MAX_CONTAINERS = 16  # quote and list markers opening on one line; more are dropped
MAX_INDENT = 100  # columns of a line's container prefix; each nested list level needs two or more
MAX_DELIMITER_RUN = 3  # `***` is bold italic; a longer run of * _ or ~ only nests deeper, so the rest is escaped
MAX_DELIMITERS = 200  # emphasis delimiter runs in one paragraph; later ones are escaped (shown as characters)
MAX_MATH_DEPTH = 24  # groups ({, \left, \begin) nested in one formula; a deeper formula is shown as code
# The parser's own bound; above what the limits above allow, so it only guards the parser itself.
_PARSER_NESTING = 128
# The delimiters the chat's KaTeX renders, in the order Gradio extracts them (before it parses Markdown).
_MATH = [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")]

_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_INLINE_TARGET = re.compile(r"(\]\(\s*<?)([^)\s>]*)")
# A reference definition's destination may stand on the next line.
_REFERENCE_TARGET = re.compile(r"^([ \t]{0,3}\[[^\]\n]+\]:[ \t]*(?:\n[ \t]*)?<?)(\S*)", re.M)
_SAFE_TARGET = re.compile(r"(?:https?://|mailto:|#)", re.I)
_SAFE_HREF = re.compile(r"(?:https?:|mailto:|#)", re.I)
# Entities and control characters can hide a scheme ("jav&#97;script:"); such targets are never safe.
_OBFUSCATED = re.compile(r"[&\\\x00-\x20%]")
_CONTAINER = re.compile(r"[ \t]*(?:>|[-+*](?=[ \t]|$)|\d{1,9}[.)](?=[ \t]|$))")
_DELIMITERS = re.compile(r"\n[ \t]*\n|\*+|_+|~+")
_GROUP = re.compile(r"\\begin\b|\\end\b|\\left\b|\\right\b|\\.|[{}]", re.S)
# TeX commands that define macros: a chain of them expands as deep as the nesting it hides from _math_depth.
_MACRO_DEFINITION = re.compile(r"\\(?:[gex]?def|let|futurelet|(?:re|provide)?newcommand|newenvironment|"
                               r"DeclareMathOperator|global|expandafter)(?![A-Za-z])")
ZWSP = "\u200b"
# Inside code: what would be live HTML, an image or a link if the renderer decided this was not code.
_CODE_DEFANG = re.compile(r"<(?=[A-Za-z/!?])|!(?=\[)|\](?=[(:])")
_FENCE_LIKE = re.compile(r"^([ \t]*)(?=[`~]{3})", re.M)  # a line inside a fence that another parser might close it at
# A GFM table's delimiter row. The browser's renderer takes one without a pipe (`:-`) as a table and splits the
# lines around it into cells, ending a code span CommonMark sees crossing them.
# The renderer starts a mermaid block wherever a line holds ```mermaid, even inside a paragraph or code (its
# block rule is tried at every character): a zero-width space keeps the word from following the fence.
_MERMAID = re.compile(r"([`~]{3,}[ \t]*)(?=mermaid)", re.I)
# Entities the browser decodes into a formula delimiter, which KaTeX (run on the page's text) then finds.
_ENTITY = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]{1,31});")
_MATH_CHARS = set("$\\()[]{}")
# Any dimension in a formula (\\rule, \\kern, \\raisebox, \\above, \\genfrac, \\\\[..], optional [..] arguments...):
# a number and a TeX unit, weighed in em. A shallow formula can still draw or move a box over the whole page.
_DIMENSION = re.compile(r"([+-]?\s*(?:\d+\.?\d*|\.\d+))\s*(em|ex|pt|pc|in|cm|mm|bp|dd|cc|nd|nc|sp|mu|px)"
                        r"(?![A-Za-z])")
_EM_PER_UNIT = {"em": 1.0, "ex": 0.431, "pt": 0.1, "pc": 1.2, "in": 7.23, "cm": 2.85, "mm": 0.285, "bp": 0.1,
                "dd": 0.107, "cc": 1.28, "nd": 0.114, "nc": 1.37, "sp": 1.5e-6, "mu": 1 / 18, "px": 0.1}
MAX_MATH_EM = 20.0  # the largest dimension a formula may name, in em
# Switches nest without braces (\\displaystyle\\textstyle... 300 times is 600 levels deep, and KaTeX overflows its
# stack at a few thousand): each counts toward the depth limit like a group.
_SWITCH = re.compile(r"\\(?:displaystyle|textstyle|scriptstyle|scriptscriptstyle|Huge|huge|LARGE|Large|large|"
                     r"normalsize|small|footnotesize|scriptsize|tiny|bf|rm|it|sf|tt|sl|sc|cal|frak|Bbb|bold|"
                     r"color|textcolor|colorbox|boldsymbol|pmb|mathrm|mathbf|mathit|mathsf|mathtt|mathcal)"
                     r"(?![A-Za-z])")
_TEX_COMMENT = re.compile(r"(?<!\\)%[^\n]*(?:\n|$)")
_DELIMITER_ROW = re.compile(r" {0,3}\|?(?: *:?-+:? *\|)* *:?-+:? *\|? *")
_SPANS = "qvl_code_spans"


def _record_code_spans(state, silent: bool) -> bool:
    """markdown-it's own code-span rule, noting where each span it makes starts and ends in its source."""
    start, count = state.pos, len(state.tokens)
    ok = backtick(state, silent)
    if ok and not silent and len(state.tokens) > count and state.tokens[-1].type == "code_inline":
        state.env.setdefault(_SPANS, []).append((state.src, start, state.pos))
    return ok


@functools.cache
def _parsers() -> tuple[MarkdownIt, MarkdownIt]:
    """(the parser that finds code, the checker); GFM tables and strikethrough as the browser's renderer has."""
    md = MarkdownIt("commonmark", {"html": True, "maxNesting": _PARSER_NESTING}).enable(["table", "strikethrough"])
    md.inline.ruler.at("backticks", _record_code_spans)
    check = MarkdownIt("commonmark", {"html": True, "maxNesting": _PARSER_NESTING}).enable(["table", "strikethrough"])
    check.validateLink = lambda url: True  # the browser's renderer makes links of any scheme: see them all
    return md, check


def _columns(space: str) -> int:
    col = 0
    for ch in space:
        col = col + 4 - col % 4 if ch == "\t" else col + 1
    return col


def _bound_line(line: str) -> str:
    pos, markers = 0, []
    while (m := _CONTAINER.match(line, pos)) and m.end() > pos:
        markers.append(m.group())
        pos = m.end()
    rest = line[pos:]
    body = rest.lstrip(" \t")
    prefix = "".join(markers) + rest[: len(rest) - len(body)]
    if len(markers) <= MAX_CONTAINERS and _columns(prefix) <= MAX_INDENT:
        return line
    lead = _columns(prefix[: len(prefix) - len(prefix.lstrip(" \t"))])
    kept = " ".join(m.strip() for m in markers[:MAX_CONTAINERS])
    return " " * min(lead, MAX_INDENT // 2) + (kept + " " if kept else "") + body


def _bound_containers(text: str) -> str:
    """Quote and list nesting flattened past MAX_CONTAINERS markers or MAX_INDENT columns on a line."""
    return "\n".join(_bound_line(line) for line in text.split("\n"))


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for i, ch in enumerate(text):
        if ch == "\n":
            starts.append(i + 1)
    return starts


def _place(line: str, piece: str, lo: int) -> int:
    """Where a line of an inline token's content sits in its source line (-1: not found).

    The content is the line less its container prefix and, at a paragraph's end or in a heading, its trailing
    white space or closing #s: the first match that leaves only such a tail, else the first match (a table cell).
    """
    first, s = -1, line.find(piece, lo)
    while s >= 0:
        first = s if first < 0 else first
        if not line[s + len(piece):].strip(" \t#"):
            return s
        s = line.find(piece, s + 1)
    return first


def _code_regions(text: str) -> list[tuple[int, int]]:
    """[start, end) of every code block and code span in `text`, as CommonMark parses it."""
    md, _ = _parsers()
    env: dict = {}
    tokens = md.parse(text, env)
    lines, starts = text.split("\n"), _line_starts(text)
    spans = env.get(_SPANS, [])
    regions: list[tuple[int, int]] = []
    cursor: dict[int, int] = {}  # table cells share a line: each is found after the one before
    for tok in tokens:
        if tok.type in ("fence", "code_block") and tok.map:
            a, b = tok.map
            regions.append((starts[a], starts[b] if b < len(starts) else len(text)))
        if tok.type != "inline":
            continue
        mine = []
        while spans and spans[0][0] is tok.content:
            mine.append(spans.pop(0))
        if not tok.map:
            continue
        offsets: list[int] = []  # text offset of each content line (-1: not placed)
        for i, piece in enumerate(tok.content.split("\n")):
            n = tok.map[0] + i
            s = _place(lines[n], piece, cursor.get(n, 0)) if n < len(lines) else -1
            if s >= 0:
                cursor[n] = s + len(piece)
            offsets.append(starts[n] + s if s >= 0 else -1)
        line_of = _line_starts(tok.content)
        for _, start, end in mine:
            a, b = _offset(start, line_of, offsets), _offset(end - 1, line_of, offsets)
            if a >= 0 and b >= 0:  # a span that cannot be placed stays out: its `<` are escaped (safe side)
                regions.append((a, b + 1))
    return sorted(regions)


def _offset(pos: int, line_of: list[int], offsets: list[int]) -> int:
    i = sum(1 for s in line_of if s <= pos) - 1
    return offsets[i] + pos - line_of[i] if offsets[i] >= 0 else -1


def _math_spans(text: str) -> list[tuple[int, int]]:
    """[start, end) of each formula, found as Gradio finds them: each delimiter pair in turn, laziest match."""
    masked, found = text, []
    for left, right in _MATH:
        for m in re.finditer(re.escape(left) + r"[\s\S]+?" + re.escape(right), masked):
            found.append((m.start(), m.end()))
            masked = masked[: m.start()] + "\x00" * (m.end() - m.start()) + masked[m.end():]
    return sorted(found)


def _math_depth(formula: str) -> int:
    depth = deepest = 0
    for m in _GROUP.finditer(formula):
        tok = m.group()
        if tok in ("{", "\\begin", "\\left"):
            depth += 1
            deepest = max(deepest, depth)
        elif tok in ("}", "\\end", "\\right"):
            depth = max(depth - 1, 0)
    return deepest


def _as_code_span(text: str) -> str:
    ticks = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks} {text} {ticks}"


def _target(match: re.Match[str]) -> str:
    prefix, url = match.group(1), match.group(2)
    if not url:
        return match.group(0)
    ok = _SAFE_TARGET.match(url) and not _OBFUSCATED.search(url.split(":", 1)[0])
    return prefix + (url if ok else "#")


class _Delimiters:
    """Caps emphasis: runs longer than MAX_DELIMITER_RUN, and runs past MAX_DELIMITERS in a paragraph, escaped."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, m: re.Match[str]) -> str:
        run = m.group()
        if run.startswith("\n"):
            self.count = 0  # a blank line: a new paragraph
            return run
        self.count += 1
        keep = 0 if self.count > MAX_DELIMITERS else MAX_DELIMITER_RUN
        return run[:keep] + "".join("\\" + ch for ch in run[keep:])


def _neutralise(text: str, delimiters: _Delimiters, math: list[tuple[int, int]]) -> str:
    """Text outside code: tags shown as text, images as links, unsafe targets to `#`, emphasis capped."""
    out, last = [], 0
    for a, b in [*math, (len(text), len(text))]:
        out.append(_DELIMITERS.sub(delimiters, text[last:a]))  # not inside a formula: `\_` would break it
        formula = text[a:b]
        out.append(_as_code_span(formula) if formula and _math_depth(formula) > MAX_MATH_DEPTH else formula)
        last = b
    text = _TAG_START.sub("&lt;", _math_entities_escaped("".join(out)))
    text = text.replace("![", "!\\[")
    text = _INLINE_TARGET.sub(_target, text)
    return _REFERENCE_TARGET.sub(_target, text)


def _is_inert(markdown: str) -> bool:
    """No raw HTML, no image and no link outside http(s), mailto and in-page anchors, as CommonMark parses it."""
    _, check = _parsers()
    stack = check.parse(markdown)
    while stack:
        tok = stack.pop()
        if tok.type in ("html_block", "html_inline", "image"):
            return False
        if tok.type == "link_open" and not _SAFE_HREF.match(str(tok.attrs.get("href", ""))):
            return False
        stack.extend(tok.children or [])
    return True


def _as_code_block(text: str) -> str:
    fence = "`" * max(3, max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def _end_of_math(text: str, i: int, right: str) -> int:
    """Where `right` closes a formula opened before `i`, as KaTeX's auto-render finds it: past balanced braces
    and backslash escapes (-1: never)."""
    braces = 0
    while i < len(text):
        if braces <= 0 and text.startswith(right, i):
            return i
        ch = text[i]
        if ch == "\\":
            i += 1
        elif ch == "{":
            braces += 1
        elif ch == "}":
            braces -= 1
        i += 1
    return -1


def _math_spans_braced(text: str) -> list[tuple[int, int]]:
    """[start, end) of each formula as the page's auto-render pairs the delimiters (each in turn, brace-aware)."""
    found: list[tuple[int, int]] = []
    taken = [False] * len(text)
    for left, right in _MATH:
        i = 0
        while (i := text.find(left, i)) != -1:
            if taken[i]:
                i += 1
                continue
            end = _end_of_math(text, i + len(left), right)
            if end == -1:
                break
            stop = end + len(right)
            if not any(taken[i:stop]):
                found.append((i, stop))
                taken[i:stop] = [True] * (stop - i)
            i = stop
    return sorted(found)


def _dangerous(formula: str) -> bool:
    """Too deep (groups and switches), defining macros, or naming a dimension over MAX_MATH_EM."""
    # As KaTeX reads it: the page puts the formula back as HTML, so the browser decodes entities (`\\b&#101;gin`
    # is `\\begin`), and `\\rule%<newline>{3000em}` is `\\rule{3000em}` to TeX.
    formula = _TEX_COMMENT.sub("", html.unescape(formula))
    if _math_depth(formula) + len(_SWITCH.findall(formula)) > MAX_MATH_DEPTH:
        return True
    if _MACRO_DEFINITION.search(formula) is not None:
        return True
    return any(abs(float(n.replace(" ", ""))) * _EM_PER_UNIT[u] > MAX_MATH_EM for n, u in _DIMENSION.findall(formula))


def _formulas_bounded(text: str) -> str:
    """Every formula that is `_dangerous`, anywhere (the renderer extracts formulas from code too), however the
    delimiters pair (Gradio's lazy match or the page's brace-aware one), and every formula the two pair
    differently, loses its delimiters: `$` becomes a
    full-width `＄`, `\\(` and `\\[` get a zero-width space. Repeated until no pairing finds one."""
    for _ in range(8):
        lazy, braced = set(_math_spans(text)), set(_math_spans_braced(text))
        spans = sorted(lazy | braced, reverse=True)
        # A formula the page pairs otherwise than Gradio (`$\\text{$ ... $}$`) spans text that was rendered as
        # Markdown in between (entities decoded, `\\\\` unescaped): nothing checked there can be trusted.
        bad = [(a, b) for a, b in spans if (a, b) in braced - lazy or _dangerous(text[a:b])]
        if not bad:
            return text
        last_start = len(text) + 1
        for a, b in bad:  # from the end: edits keep the earlier offsets valid
            if b > last_start:
                continue  # overlaps one broken in this pass: the next pass looks again
            formula = text[a:b]
            if formula.startswith("$"):
                n = 2 if formula.startswith("$$") and formula.endswith("$$") and len(formula) >= 4 else 1
                formula = "\uff04" * n + formula[n:-n] + "\uff04" * n
            else:
                formula = formula[0] + ZWSP + formula[1:-2] + formula[-2] + ZWSP + formula[-1]
            text = text[:a] + formula + text[b:]
            last_start = a
    return text.replace("$", "\uff04")  # still pairing after every pass: no formula at all


def _math_entities_escaped(text: str) -> str:
    """An entity the browser would decode into a formula's delimiter or brace shows as written instead."""
    def keep(m: re.Match[str]) -> str:
        return "&amp;" + m.group()[1:] if set(html.unescape(m.group())) & _MATH_CHARS else m.group()

    return _ENTITY.sub(keep, text)


def _blocks_defanged(text: str) -> str:
    """Line by line, where the browser's renderer could read the text otherwise than CommonMark: a fence-like
    line inside a fence gets a zero-width space first (no renderer closes the fence there), and a delimiter row
    outside a table is escaped (no renderer makes a table of it)."""
    md, _ = _parsers()
    lines = text.split("\n")
    in_block, in_table = set(), set()
    for tok in md.parse(text):
        if not tok.map:
            continue
        a, b = tok.map
        if tok.type in ("fence", "code_block"):
            in_block.update(range(a, b))
            if tok.type == "fence":
                for n in range(a + 1, min(b - 1 if b - 1 > a else b, len(lines))):
                    lines[n] = _FENCE_LIKE.sub(lambda m: m.group(1) + ZWSP, lines[n])
        elif tok.type == "table_open":
            in_table.update(range(a, b))
    for n, line in enumerate(lines):
        if n in in_block or n in in_table or not _DELIMITER_ROW.fullmatch(line) or not set(line) & set(":|"):
            continue
        lead = len(line) - len(line.lstrip(" "))
        lines[n] = line[:lead] + "\\" + line[lead:]
    return "\n".join(lines)


def _dedented(text: str) -> str:
    """`inspect.cleandoc` until it changes nothing (it is not idempotent on whitespace-only lines), so that the
    renderer's own cleandoc leaves the result as it is."""
    for _ in range(4):
        again = inspect.cleandoc(text)
        if again == text:
            break
        text = again
    return text


def _no_tag_can_start(markdown: str) -> bool:
    """Parser-independent: no `<` that starts a tag and no image marker, whatever any renderer calls code."""
    return _TAG_START.search(markdown) is None and "![" not in markdown


@functools.lru_cache(maxsize=512)  # the chat renders every turn again on each streamed token
def safe_markdown(text: str) -> str:
    """`text` with raw HTML shown as text, images as links, unsafe link targets removed and nesting bounded."""
    # As the renderer reads it: newlines normalised and dedented as Gradio dedents (`inspect.cleandoc`) before it
    # parses, so an indented code block here is one there too.
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "\ufffd")
    text = _MERMAID.sub(lambda m: m.group(1) + ZWSP, text)  # no mermaid block, wherever the renderer looks
    text = _formulas_bounded(_blocks_defanged(_bound_containers(inspect.cleandoc(text))))
    delimiters, out, last = _Delimiters(), [], 0
    math = _math_spans(text)
    for a, b in [*_code_regions(text), (len(text), len(text))]:
        if a < last:  # nested in, or overlapping, the region before
            continue
        mine = [(s - last, e - last) for s, e in math if last <= s and e <= a]
        out.append(_neutralise(text[last:a], delimiters, mine))
        out.append(_CODE_DEFANG.sub(lambda m: m.group() + ZWSP, text[a:b]))
        last = b
    shown = _dedented("".join(out))  # what the renderer will make of it, dedent included
    if _is_inert(shown) and _no_tag_can_start(shown):
        return shown
    return _as_code_block(_CODE_DEFANG.sub(lambda m: m.group() + ZWSP, text))
