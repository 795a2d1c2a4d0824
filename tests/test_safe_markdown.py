"""Tier 1, pure: model Markdown on its way to the chat is inert (as CommonMark reads it) and bounded in nesting."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from qvl_core.parse.safe_markdown import (
    MAX_CONTAINERS,
    MAX_DELIMITER_RUN,
    MAX_DELIMITERS,
    MAX_INDENT,
    MAX_MATH_DEPTH,
    safe_markdown,
)

EVIL = "http://evil.example"
# A renderer like the browser's: CommonMark + GFM tables and strikethrough, raw HTML on, links of any scheme.
RENDER = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
RENDER.validateLink = lambda url: True
# To measure nesting, a renderer that does not stop at its own bound (markdown-it's default stops at 20 levels).
DEEP = MarkdownIt("commonmark", {"maxNesting": 1000}).enable(["table", "strikethrough"])
ALLOWED_TAGS = {"p", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li", "hr", "br", "a",
                "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td"}
SAFE_HREF = re.compile(r"(?:https?:|mailto:|#)", re.I)
ALIGN = re.compile(r"text-align:(?:left|right|center)")


class _Live(HTMLParser):
    """Every tag or attribute in rendered HTML that could load, run, style or submit something."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in ALLOWED_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            value = value or ""
            ok = ((name == "href" and tag == "a" and SAFE_HREF.match(value))
                  or (name == "class" and tag == "code" and value.startswith("language-"))
                  or (name == "start" and tag == "ol")
                  or (name == "style" and tag in ("th", "td") and ALIGN.fullmatch(value)))
            if not ok:
                self.found.append(f"<{tag} {name}={value!r}>")

    def handle_comment(self, data):
        self.found.append("<!--")

    def handle_pi(self, data):
        self.found.append("<?")

    def handle_decl(self, decl):
        self.found.append("<!")

    def unknown_decl(self, data):
        self.found.append("<![")


def live_parts(markdown: str) -> list[str]:
    parser = _Live()
    parser.feed(RENDER.render(markdown))
    parser.close()
    return parser.found


# ---- each bypass the red team found, and variants --------------------------------------------------------
BYPASSES = [
    f'\\`<img src="{EVIL}/a.png">`',  # an escaped backtick: no code span opens
    f'``<img src="{EVIL}/b.png">`',  # runs of unequal length never close each other
    f'`` <img src="{EVIL}/b2.png"> ```',
    f'```x`y\n<img src="{EVIL}/c.png">\n```',  # a backtick in the info string: not a fence
    f'    ```\n<img src="{EVIL}/d.png">\n```',  # indented 4: a code block, and the second ``` opens a fence
    f'| a | b |\n|---|---|\n| `x | <picture><source srcset="{EVIL}/s.png"></picture>` |',  # pipes split spans
]


@pytest.mark.parametrize("text", BYPASSES)
def test_no_bypass_of_the_code_decision(text):
    """Bug: safe_markdown decided what is code with its own regex; CommonMark disagreed and raw HTML was live."""
    assert live_parts(safe_markdown(text)) == []


CODE_AS_WRITTEN = [
    ("a `<b>` c and ``x ` <i>`` y", "a `<b>` c and ``x ` <i>`` y"),
    ("> q `<c>` and <b>x</b>\n> - item `<x>`", "> q `<c>` and &lt;b>x&lt;/b>\n> - item `<x>`"),
    ("| a | `<b>` |\n|---|---|\n| c | <e> |", "| a | `<b>` |\n|---|---|\n| c | &lt;e> |"),
    ("# head `<h>` ##", "# head `<h>` ##"),
    ("    <pre>indented code</pre>\n\ntext <u>", "    <pre>indented code</pre>\n\ntext &lt;u>"),
]


def test_code_stays_as_written():
    """Bug: spans of unequal backtick runs and indented code were escaped (shown as `&lt;`) by the old regex."""
    assert [safe_markdown(text) for text, _ in CODE_AS_WRITTEN] == [shown for _, shown in CODE_AS_WRITTEN]


def test_anything_left_live_falls_back_to_one_code_block(monkeypatch):
    """Whatever the first pass misses, the check after it catches: the whole answer is shown as one code block."""
    from qvl_core.parse import safe_markdown as module

    monkeypatch.setattr(module, "_neutralise", lambda text, delimiters, math: text)  # a first pass that misses all
    module.safe_markdown.cache_clear()
    text = f'a ```` run and <img src="{EVIL}/x.png">\n```'
    shown = module.safe_markdown(text)
    module.safe_markdown.cache_clear()
    assert shown == f"`````text\n{text}\n`````" and live_parts(shown) == []


# ---- nesting bounded (issue 16, item 4: KaTeX crashed the tab, marked ran out of stack) -------------------
def _depth(html: str, tags: tuple[str, ...]) -> int:
    depth = deepest = 0
    for m in re.finditer(r"<(/?)(\w+)", html):
        if m.group(2) in tags:
            depth += -1 if m.group(1) else 1
            deepest = max(deepest, depth)
    return deepest


def test_deep_formula_is_shown_as_code():
    """Bug: `$` + `\\frac{1}{`x200 + `x` + `}`x200 + `$` crashed Chromium's tab (KaTeX)."""
    deep = "$" + "\\frac{1}{" * 200 + "x" + "}" * 200 + "$"
    shown = safe_markdown(f"before {deep} after $\\frac{{1}}{{2}}$")
    assert f"` {deep} `" in shown and shown.endswith("after $\\frac{1}{2}$")  # a shallow one still renders
    limit = "$" + "{" * MAX_MATH_DEPTH + "}" * MAX_MATH_DEPTH + "$"
    assert safe_markdown(limit) == limit


@pytest.mark.parametrize(("text", "tags", "most"), [
    (">" * 5000 + " x", ("blockquote",), MAX_CONTAINERS),
    ("> " * 5000 + "x", ("blockquote",), MAX_CONTAINERS),
    ("".join("  " * i + "- x\n" for i in range(2000)), ("ul",), MAX_INDENT // 2 + 1),
    ("- " * 2000 + "x", ("ul",), MAX_CONTAINERS),
    ("1. > " * 2000 + "x", ("ol", "blockquote"), MAX_CONTAINERS),
    ("*" * 2500 + "a" + "*" * 2500, ("em", "strong"), 2),
    ("*a " * 2500 + "b" + " c*" * 2500, ("em", "strong"), MAX_DELIMITERS),
    ("~~a " * 2500 + "b" + " c~~" * 2500, ("s",), MAX_DELIMITERS),
])
def test_deep_markdown_is_flattened(text, tags, most):
    """Bug: a 5,000-level quote, a 2,000-level list or 5,000 asterisks blanked the answer (call stack exceeded)."""
    shown = safe_markdown(text)
    assert _depth(DEEP.render(shown), tags) <= most
    assert "x" in shown or "a" in shown or "*" in shown


def test_ordinary_emphasis_and_lists_untouched():
    text = "***bold italic*** and __b__\n\n- a\n  - b\n    - c\n\n> > quoted\n\n1. one\n2. two"
    assert safe_markdown(text) == text
    assert safe_markdown("a " + "**x** " * MAX_DELIMITERS).count("\\*") > 0  # past the paragraph's cap
    assert "\\" not in safe_markdown("a " + "*" * MAX_DELIMITER_RUN + "b")


# ---- property: HTML in every context never comes out live ---------------------------------------------------
HTML = [
    f'<img src="{EVIL}/i.png">', f"<IMG SRC={EVIL}/i.png>", '<div style="position:fixed;inset:0">o</div>',
    f'<svg><image href="{EVIL}/s.png"/></svg>', f'<video autoplay src="{EVIL}/v.mp4">',
    f'<picture><source srcset="{EVIL}/p.png"></picture>', f'<form action="{EVIL}/f"><button>b</button></form>',
    '<a href="javascript:alert(1)">j</a>', "<!-- c -->", "<?php x ?>", "<![CDATA[x]]>", "<!DOCTYPE x>",
    "</div>", "<script>x()</script>", f"<{EVIL}/auto>", "<javascript:alert(1)>",
]
MARKUP = ["`", "``", "```", "````", "\\`", "\\\\", "~~~", "~~~\n~~~\n", "> ```\n", "- ```\n\n", "\\\\![p](",
          "\n", "\n\n", "    ", "  ", "> ", "- ", "1. ", "* ",
          "| a | b |\n|---|---|\n| ", " | ", "|", "![x](", f"![x]({EVIL}/m.png)", "[x](", ")", "](", "[r]: ",
          "javascript:x", "data:x", f"{EVIL}/l", "<", ">", "*", "_", "$", "x", " ", "\t", "#", "#x", "\\", "&lt;",
          "&#60;", "jav&#97;script:x"]
fragments = st.lists(st.one_of(st.sampled_from(HTML), st.sampled_from(MARKUP)), min_size=1, max_size=24).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments)
def test_generated_markdown_never_yields_a_live_tag(text):
    """Bug: HTML placed where the old regex and CommonMark disagreed about code reached the page live."""
    assert live_parts(safe_markdown(text)) == []
