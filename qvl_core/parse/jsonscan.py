"""Find the JSON lists and objects inside a model's prose: string-aware bracket matching that survives cut-offs.

Shared by the grounding and video-time parsers. Models write JSON inside Markdown fences, after prose, cut off by
the token limit, with unescaped quotes in OCR text; this only finds where each structure starts and ends (and its
list items), leaving the parsing itself to json_repair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

MAX_JSON_DEPTH = 32  # deeper nesting is not an answer of ours; also keeps json_repair off deep recursion


@dataclass(frozen=True)
class Segment:
    start: int
    end: int  # exclusive
    closed: bool  # False: the text ends inside it (max_new_tokens ran out)
    items: tuple[tuple[int, int], ...]  # spans of the complete outermost {...} found directly inside a [...]
    too_deep: bool


def _string_closes(text: str, k: int) -> bool:
    """A quote at k-1 ends a string only if what follows can follow a JSON string (or the text ends).

    Models write unescaped quotes inside OCR text (`5" screen`); treating those as closing quotes would
    invert the string state for the rest of the answer.
    """
    n = len(text)
    while k < n and text[k] in " \t\r\n":
        k += 1
    return k >= n or text[k] in ",:]}"


def scan_segment(text: str, start: int) -> Segment:
    """Bracket-match from text[start] ('[' or '{'), skipping strings, noting where each list item starts and ends."""
    stack: list[str] = []
    quote: str | None = None
    prev = " "  # previous significant character outside strings
    items: list[tuple[int, int]] = []
    item_start, item_depth = -1, 0  # the list item being read, if any (item_depth 0: none)
    too_deep = False
    n = len(text)
    k = start
    while k < n:
        c = text[k]
        if quote is not None:
            if c == "\\":
                k += 2
                continue
            if c == quote and _string_closes(text, k + 1):
                quote = None
                prev = c
            k += 1
            continue
        if c == '"' or (c == "'" and prev in "[{,:"):
            quote = c  # single quotes only open where a value or key may start: "cat's" stays text
        elif c in "[{":
            if c == "{" and not item_depth and stack and stack[-1] == "[":
                item_start, item_depth = k, len(stack) + 1
            stack.append(c)
            too_deep = too_deep or len(stack) > MAX_JSON_DEPTH
        elif c in "]}":
            if item_depth == len(stack):
                items.append((item_start, k + 1))
                item_depth = 0
            stack.pop()  # a mismatched closer still closes (json_repair sorts out the rest)
            if not stack:
                return Segment(start, k + 1, True, tuple(items), too_deep)
        if not c.isspace():
            prev = c
        k += 1
    return Segment(start, n, False, tuple(items), too_deep)


def json_segments(text: str) -> Iterator[Segment]:
    i = 0
    while True:
        starts = [j for j in (text.find("[", i), text.find("{", i)) if j >= 0]
        if not starts:
            return
        seg = scan_segment(text, min(starts))
        yield seg
        i = seg.end
