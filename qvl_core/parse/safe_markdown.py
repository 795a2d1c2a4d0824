"""Model-written Markdown made inert for display: no raw HTML, no images that load, no script links. Pure.

The chat renders the model's answer as Markdown. Gradio's sanitizer removes scripts and event handlers,
but keeps remote images (`![](http://…)`, `<img src=http://…>`) and CSS `url()`, which make the browser
contact any host the answer names (a tracking pixel for whoever planted text in an image or a document).
So before display, outside code spans and fences:
- every `<` that starts a tag becomes `&lt;`: raw HTML shows as text (Markdown renders the entity as `<`);
- `![` becomes `!\\[`: an image turns into a plain link that loads nothing until someone clicks it;
- a link target that is not http(s), mailto or an in-page anchor becomes `#` (javascript:, data:, vbscript:…).
The conversation keeps the raw text; this runs only on the way to the screen.
"""

from __future__ import annotations

import re

# Fenced blocks (closed or running to the end of an unfinished answer) and inline code spans are kept as is:
# their content is shown as text by any Markdown renderer.
_CODE = re.compile(r"(^[ \t]*```.*?(?:^[ \t]*```[^\n]*$|\Z)|^[ \t]*~~~.*?(?:^[ \t]*~~~[^\n]*$|\Z)|`+[^`\n]+`+)",
                   re.S | re.M)
_TAG_START = re.compile(r"<(?=[A-Za-z/!?])")
_INLINE_TARGET = re.compile(r"(\]\(\s*<?)([^)\s>]*)")
_REFERENCE_TARGET = re.compile(r"^([ \t]{0,3}\[[^\]\n]+\]:[ \t]*<?)(\S*)", re.M)
_SAFE_TARGET = re.compile(r"(?:https?://|mailto:|#)", re.I)
# Entities and control characters can hide a scheme ("jav&#97;script:"); such targets are never safe.
_OBFUSCATED = re.compile(r"[&\\\x00-\x20%]")


def _target(match: re.Match[str]) -> str:
    prefix, url = match.group(1), match.group(2)
    if not url:
        return match.group(0)
    ok = _SAFE_TARGET.match(url) and not _OBFUSCATED.search(url.split(":", 1)[0])
    return prefix + (url if ok else "#")


def _neutralise(text: str) -> str:
    text = _TAG_START.sub("&lt;", text)
    text = text.replace("![", "!\\[")
    text = _INLINE_TARGET.sub(_target, text)
    return _REFERENCE_TARGET.sub(_target, text)


def safe_markdown(text: str) -> str:
    """`text` with raw HTML shown as text, images as links and unsafe link targets removed (code untouched)."""
    out: list[str] = []
    last = 0
    for m in _CODE.finditer(text):
        out.append(_neutralise(text[last:m.start()]))
        out.append(m.group(0))
        last = m.end()
    out.append(_neutralise(text[last:]))
    return "".join(out)
