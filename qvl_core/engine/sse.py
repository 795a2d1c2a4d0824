"""An OpenAI event stream from an untrusted server: bounded lines and bytes, every event's shape checked; no HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from qvl_core.errors import GenerationError

# Named limits. One streamed token is one small JSON event (~150-300 bytes on vLLM and transformers serve); these
# leave room for long model names and fully escaped text, and still stop a server that pads or never ends.
MAX_LINE_BYTES = 1 << 20  # one event line; a longer one is refused before it is parsed
MAX_CHARS_PER_TOKEN = 256  # answer text per requested token (the longest Qwen2.5-VL token decodes to 128 chars)
MAX_BYTES_PER_TOKEN = 4096  # stream bytes per requested token: events, keep-alive comments, usage and all
BASE_STREAM_BYTES = 1 << 20  # stream bytes allowed on top, whatever max_new_tokens is
# Text events taken past max_new_tokens before we stop reading: events are not tokens, and a server's decoder may
# flush held-back text in an event of its own after the last token (transformers serve does).
MAX_EXTRA_EVENTS = 4
MAX_REPORTED_TOKENS = 1 << 31  # a token count in `usage` above this is not a count
MAX_DETAIL_CHARS = 120  # how much of the offending text a broken-stream error quotes
MAX_ERROR_CHARS = 500  # a server's own error message, quoted in ours
# Where servers put a thinking model's reasoning (vLLM's older and newer field names).
REASONING_FIELDS = ("reasoning_content", "reasoning")


@dataclass(frozen=True)
class StreamEvent:
    """One parsed SSE event: a text delta, and (usually only at the end) a finish reason and usage."""

    text: str = ""
    finish_reason: str | None = None
    usage: dict | None = None
    done: bool = False
    reasoning: str = ""  # a thinking model's reasoning delta: progress and a token, not answer text


@dataclass(frozen=True)
class StreamCaps:
    """Our own bounds on one answer, whatever the server does with `max_tokens`."""

    max_tokens: int
    max_chars: int
    max_bytes: int

    @classmethod
    def for_tokens(cls, max_new_tokens: int) -> StreamCaps:
        return cls(max_new_tokens, max_new_tokens * MAX_CHARS_PER_TOKEN,
                   BASE_STREAM_BYTES + max_new_tokens * MAX_BYTES_PER_TOKEN)


def broken(detail: str) -> GenerationError:
    """The one error for a stream that is not the protocol; `detail` is ours, or quoted short with repr()."""
    return GenerationError(f"The server sent a broken stream: {detail}")


def shown_text(text: str) -> str:
    """`text` made encodable: a lone surrogate (valid JSON, no text) shown as its escape, so the error that quotes
    it can reach the page (Gradio's JSON encoder fails on it, and the client's stream would just drop)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _quote(text: str) -> str:
    return repr(text[:MAX_DETAIL_CHARS]) + ("…" if len(text) > MAX_DETAIL_CHARS else "")


def _typed(value: Any, types: tuple[type, ...], where: str) -> Any:
    """`value` if it has one of `types` (None always allowed: servers send null for absent fields)."""
    if isinstance(value, str) and str in types:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\\ud800"): valid JSON, not text; every encoder after us fails
            raise broken(f"{where} is not valid Unicode: {_quote(value)}") from None
    if value is None or (isinstance(value, types) and not isinstance(value, bool)):
        return value
    names = " or ".join(t.__name__ for t in types)
    raise broken(f"{where} is {type(value).__name__}, not {names} or null")


def _usage(value: Any) -> dict | None:
    usage = _typed(value, (dict,), "usage")
    if usage is None:
        return None
    for key in ("prompt_tokens", "completion_tokens"):
        n = _typed(usage.get(key), (int,), f"usage.{key}")
        if n is not None and not 0 <= n <= MAX_REPORTED_TOKENS:
            raise broken(f"usage.{key} is {n}, not a token count")
    return usage


def parse_sse_line(line: str) -> StreamEvent | None:
    """One line of an OpenAI event stream -> an event, None for blank lines and comments.

    Raises GenerationError for an error event, or a broken stream for anything that is not the protocol (a proxy's
    HTML page, JSON too deep to parse, a field of the wrong type). Never anything else, whatever the line holds.
    """
    line = line.strip()
    if not line or line.startswith(":") or line.startswith(("event:", "id:", "retry:")):
        return None
    if not line.startswith("data:"):
        raise broken(f"not an OpenAI event stream: {_quote(line)}")
    data = line[5:].strip()
    if data == "[DONE]":
        return StreamEvent(done=True)
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        raise broken(f"an event that is not JSON: {_quote(data)}") from None
    if not isinstance(obj, dict):
        raise broken(f"an event that is not a JSON object: {_quote(data)}")
    if "error" in obj:
        err = obj["error"]
        msg = err.get("message") if isinstance(err, dict) else err
        text = msg if isinstance(msg, str) else data  # never str() a structure: it may be nested ~1000 deep
        raise GenerationError(f"The server failed during generation: {shown_text(text[:MAX_ERROR_CHARS])}")
    choices = _typed(obj.get("choices"), (list,), "choices") or []
    text, reasoning, finish = "", "", None
    if choices:
        choice = _typed(choices[0], (dict,), "choices[0]")
        if choice is None:
            raise broken("choices[0] is null")
        delta = _typed(choice.get("delta"), (dict,), "choices[0].delta") or {}
        text = _typed(delta.get("content"), (str,), "choices[0].delta.content") or ""
        for key in REASONING_FIELDS:
            reasoning += _typed(delta.get(key), (str,), f"choices[0].delta.{key}") or ""
        finish = _typed(choice.get("finish_reason"), (str,), "choices[0].finish_reason")
    return StreamEvent(text=text, finish_reason=finish, usage=_usage(obj.get("usage")), reasoning=reasoning)


def read_events(chunks: Iterable[bytes], *, max_bytes: int) -> Iterator[StreamEvent | None]:
    """Events from a response's raw bytes, in order; None after each chunk or line that held no event, so the
    caller can check its clock while a server sends only comments or dribbles bytes.

    Raises a broken stream past `max_bytes` in all, for a line over MAX_LINE_BYTES (before holding more of it) and
    for bytes that are not UTF-8.
    """
    pending: list[bytes] = []  # the unfinished line, in pieces (joining per chunk would be quadratic)
    pending_len = total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise broken(f"more than {max_bytes} bytes for one answer (the limit for its max new tokens)")
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # SSE ends lines with any of the three
        lines = chunk.split(b"\n")
        for piece in lines[:-1]:
            line = b"".join([*pending, piece])
            pending, pending_len = [], 0
            if len(line) > MAX_LINE_BYTES:
                raise broken(f"an event line longer than {MAX_LINE_BYTES} bytes")
            try:
                yield parse_sse_line(line.decode("utf-8"))
            except UnicodeDecodeError:
                raise broken(f"bytes that are not UTF-8: {_quote(line.decode('utf-8', 'replace'))}") from None
        if lines[-1]:
            pending.append(lines[-1])
            pending_len += len(lines[-1])
            if pending_len > MAX_LINE_BYTES:
                raise broken(f"an event line longer than {MAX_LINE_BYTES} bytes")
        if len(lines) == 1:
            yield None
