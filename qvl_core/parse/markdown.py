"""QwenVL HTML in, GitHub-flavoured Markdown or plain text out (html_to_markdown, html_to_text); never raises."""

from __future__ import annotations

import re
from typing import Any

from bs4 import NavigableString, Tag

from qvl_core.parse.html import HEADINGS, MAX_SPAN, MAX_WALK_DEPTH, SKIP_TAGS, block_kind, parse_tree, small_int
from qvl_core.parse.layout import parse_bbox

_BLOCK_TAGS = frozenset({
    *HEADINGS, "p", "div", "section", "article", "header", "footer", "aside", "main", "nav", "body", "html",
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
# Inline LaTeX that QwenVL writes straight into paragraph text: "$x^2$", "$$x$$", "\\(x\\)". Pandoc's rule tells
# it from prices: no space inside either dollar, and no digit right after the closing one ("$5 and $10").
_INLINE_MATH = re.compile(r"\$\$(?=\S)([^$]+?)(?<=\S)\$\$|\$(?=[^\s$])([^$]*?[^\s$\\])\$(?!\d)|\\\((.+?)\\\)")


def _escape_line_starts(text: str) -> str:
    def fix(m: re.Match[str]) -> str:
        if m.group(2) is not None:
            return f"{m.group(1)}\\{m.group(2)}"
        return f"{m.group(1)}{m.group(3)}\\{m.group(4)}"  # "1. x" -> "1\. x"

    return _LINE_START.sub(fix, text)


def _escape_md(text: str) -> str:
    return _ENTITY_LIKE.sub(r"\\&", _MD_ESCAPE.sub(r"\\\1", text))


def _escape_text(text: str) -> str:
    """Text for Markdown with its inline math kept as math (`$...$`), everything else escaped."""
    out: list[str] = []
    last = 0
    for m in _INLINE_MATH.finditer(text):
        tex = next(g for g in m.groups() if g is not None)
        # "<" and ">" could open HTML in the Markdown around the formula; TeX has words for them.
        tex = tex.replace("<", "\\lt ").replace(">", "\\gt ")
        out += [_escape_md(text[last:m.start()]), f"$${tex}$$" if m.group(1) is not None else f"${tex}$"]
        last = m.end()
    out.append(_escape_md(text[last:]))
    return "".join(out)


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
                   and not any(p.name in SKIP_TAGS for p in s.parents if isinstance(p, Tag)))


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
    if el.name in SKIP_TAGS:
        return False
    if el.name in _BLOCK_TAGS:
        return True
    return el.name not in ("span", "math") and block_kind(el) in ("formula", "music-sheet", "chemical-formula")


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
            return _escape_text(re.sub(r"\s+", " ", str(node)))
        if not isinstance(node, Tag) or node.name in SKIP_TAGS:
            return ""
        if level > MAX_WALK_DEPTH:
            return _escape_md(" ".join(node.get_text(" ").split()))
        name = node.name
        kind = block_kind(node)
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
        name, kind = el.name, block_kind(el)
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
        if name in HEADINGS:
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
        n = small_int(el.get("start"))
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
    return max(1, min(small_int(value) or 1, max(1, cap)))


def html_to_markdown(html: str) -> str:
    """QwenVL HTML -> GitHub-flavoured Markdown.

    Headings `#`, lists, pipe tables (first row as header; spans flattened to the top-left cell), formula
    elements as `$$...$$` blocks (inline ones `$...$`; the model writes LaTeX inside them), music sheets
    and chemical formulas as fenced code named by their `format`, images and charts as
    `<!-- Image (x1, y1, x2, y2) -->` placeholders with the box as the model wrote it. data-bbox is dropped.
    """
    soup = parse_tree(html)
    body = soup.find("body")
    md = "\n\n".join(_Markdown().blocks(body if isinstance(body, Tag) else soup)).strip()
    return md + "\n" if md else ""


def html_to_text(html: str) -> str:
    """Plain text of a QwenVL HTML answer: one line per block, table cells separated by tabs."""
    soup = parse_tree(html)
    chunks: list[str] = []

    def walk(el: Tag, level: int) -> None:
        for child in el.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:
                    chunks.append(re.sub(r"\s+", " ", str(child)))
                continue
            if not isinstance(child, Tag) or child.name in SKIP_TAGS:
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

