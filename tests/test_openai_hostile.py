"""The OpenAI backend against a hostile server on loopback: malformed events, JSON nested 100k deep, a server that
ignores max_tokens, streams kept busy by comments or a trickle of bytes, floods and bombs. Each ends, quickly, in a
GenerationError that names the problem, or in an answer cut at our own limits; never in a crash or a hang."""

from __future__ import annotations

import gzip
import itertools
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from qvl_core.engine.messages import user_turn
from qvl_core.engine.openai import OpenAIBackend
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.sse import MAX_CHARS_PER_TOKEN, MAX_EXTRA_EVENTS, MAX_LINE_BYTES, StreamCaps
from qvl_core.engine.types import GenerationRequest
from qvl_core.errors import GenerationError, ModelLoadError

SERVER_LIMIT_S = 30.0  # no handler streams longer than this, whatever the client does
CAP = 50  # max_new_tokens of every request here
TOKEN = 'data: {"choices":[{"delta":{"content":"tok "},"index":0}]}\n\n'
FLUSH = 'data: {"choices":[{"delta":{"content":"end"},"index":0}]}\n\n'  # held-back text, after the last token
FINISH = 'data: {"choices":[{"delta":{},"finish_reason":"stop","index":0}]}\n\ndata: [DONE]\n\n'
DEEP = 100_000

# One malformed event after a good token, then a proper end: the backend must call the stream broken, naming why.
MALFORMED = {
    "usage-string": ('{"choices":[],"usage":"lots"}', "usage is str"),
    "usage-count-string": ('{"choices":[],"usage":{"completion_tokens":"8"}}', "usage.completion_tokens is str"),
    "usage-count-negative": ('{"choices":[],"usage":{"prompt_tokens":-1}}', "usage.prompt_tokens is -1"),
    "usage-count-float": ('{"choices":[],"usage":{"completion_tokens":1e400}}', "usage.completion_tokens is float"),
    "choices-strings": ('{"choices":["a","b"]}', r"choices\[0\] is str"),
    "choices-dict": ('{"choices":{"0":{"delta":{"content":"a"}}}}', "choices is dict"),
    "choices-null-item": ('{"choices":[null]}', r"choices\[0\] is null"),
    "delta-string": ('{"choices":[{"delta":"hi"}]}', r"choices\[0\].delta is str"),
    "content-number": ('{"choices":[{"delta":{"content":5}}]}', r"delta.content is int"),
    "content-bool": ('{"choices":[{"delta":{"content":true}}]}', r"delta.content is bool"),
    "content-list": ('{"choices":[{"delta":{"content":["a"]}}]}', r"delta.content is list"),
    "reasoning-dict": ('{"choices":[{"delta":{"reasoning_content":{}}}]}', r"delta.reasoning_content is dict"),
    "finish-number": ('{"choices":[{"delta":{},"finish_reason":1}]}', r"finish_reason is int"),
    "lone-surrogate": ('{"choices":[{"delta":{"content":"a\\ud800b"}}]}', r"delta.content is not valid Unicode"),
    "content-nan": ('{"choices":[{"delta":{"content":NaN}}]}', r"delta.content is float"),
    "event-list": ("[1, 2]", "not a JSON object"),
    "event-string": ('"hello"', "not a JSON object"),
    "deep-list": ("[" * DEEP + "]" * DEEP, "not JSON"),
    "deep-object": ('{"a":' * DEEP + "1" + "}" * DEEP, "not JSON"),
    "deep-in-choices": ('{"choices":' + "[" * DEEP + "]" * DEEP + "}", "not JSON"),
}


class _Hostile(BaseHTTPRequestHandler):
    """/MODE/ID/v1/...: /models answers normally; /chat/completions misbehaves as MODE says. A write that fails
    (the client closed the connection) sets DISCONNECTED[ID]."""

    DISCONNECTED: ClassVar[dict[str, threading.Event]] = defaultdict(threading.Event)

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "test"}]}).encode()
        if self.path.startswith("/deep-models/"):
            body = ("[" * DEEP + "]" * DEEP).encode()
        self.send_response(200 if self.path.endswith("/models") else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        mode, ident = self.path.strip("/").split("/")[:2]
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            self._misbehave(mode)
        except (BrokenPipeError, ConnectionResetError):
            self.DISCONNECTED[ident].set()

    def _head(self, status: int = 200, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream" if status == 200 else "application/json")
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()  # HTTP/1.0, no length: the body ends when we close

    def _write(self, text: str | bytes) -> None:
        self.wfile.write(text.encode() if isinstance(text, str) else text)

    def _for_a_while(self, every_s: float) -> Iterator[int]:
        """Loop indices until SERVER_LIMIT_S has passed, sleeping `every_s` between them."""
        end = time.monotonic() + SERVER_LIMIT_S
        for i in itertools.count():
            if time.monotonic() > end:
                return
            yield i
            time.sleep(every_s)

    def _misbehave(self, mode: str) -> None:  # one branch per attack, read top to bottom
        if mode in MALFORMED:
            self._head()
            self._write(TOKEN + f"data: {MALFORMED[mode][0]}\n\n" + FINISH)
        elif mode == "ignores-max-tokens":  # CAP tokens and a flush, a proper end with usage, then 200,000 more
            self._head()
            usage = {"prompt_tokens": 7, "completion_tokens": CAP}
            self._write(TOKEN * CAP + FLUSH + 'data: {"choices":[{"delta":{},"finish_reason":"length"}],"usage":'
                        f"{json.dumps(usage)}}}\n\n")
            for _ in range(2000):
                self._write(TOKEN * 100)
        elif mode == "never-finishes":  # tokens, no finish reason, no usage, for as long as it is read
            self._head()
            for _ in range(2000):
                self._write(TOKEN * 100)
        elif mode == "one-giant-event":  # the whole "answer" in one event under the line limit
            self._head()
            self._write('data: {"choices":[{"delta":{"content":"' + "x" * (MAX_LINE_BYTES // 2) + '"}}]}\n\n'
                        + FINISH)
        elif mode == "pings":  # keep-alive comments forever
            self._head()
            for _ in self._for_a_while(0.1):
                self._write(": ping\n\n")
        elif mode == "token-then-empty-events":  # one token, then events with nothing in them
            self._head()
            self._write(TOKEN)
            for _ in self._for_a_while(0.1):
                self._write('data: {"choices":[{"delta":{"content":""},"index":0}]}\n\n')
        elif mode == "trickle":  # one byte per second of an event that never completes
            self._head()
            for i in self._for_a_while(1.0):
                self._write(('data: {"choices":[{"delta":{"content":"' + "x" * 1000)[i % 1000:][:1])
        elif mode == "comment-flood":  # as many comment bytes as the client will read
            self._head()
            line = ": " + "x" * 1000 + "\n"
            for _ in range(50_000):
                self._write(line * 10)
        elif mode == "long-line":  # one line that never ends
            self._head()
            self._write("data: ")
            for _ in range(5000):
                self._write("x" * 4096)
        elif mode == "not-utf8":
            self._head()
            self._write(TOKEN.encode() + b'data: {"choices":[{"delta":{"content":"\xff\xfe"}}]}\n\n' + FINISH.encode())
        elif mode == "gzip-bomb":  # 50 MB of comments in ~50 KB, compressed though we asked for identity
            self._head(Content_Encoding="gzip")
            self._write(gzip.compress(b": " + b"x" * 50_000_000 + b"\n", compresslevel=1))
        elif mode == "endless-error":  # an error status with a body that does not end
            self._head(500)
            self._write('{"error": {"message": "the engine died ')
            for _ in range(25_000):
                self._write("x" * 4096)
        elif mode == "deep-error":
            self._head(500)
            self._write('{"error": ' + "[" * DEEP + "]" * DEEP + "}")


@pytest.fixture(scope="module")
def hostile():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


_ids = itertools.count()


def _generate(base: str, mode: str, *, timeout_s: float = 30.0, ident: str = "") -> tuple[str, object, str]:
    """One chat request against MODE; returns the text, the stats and the id the server files a disconnect under."""
    ident = ident or f"c{next(_ids)}"
    backend = OpenAIBackend("m", f"{base}/{mode}/{ident}/v1", family="qwen2.5-vl", timeout_s=timeout_s)
    try:
        text, stats = backend.generate(GenerationRequest(turns=(user_turn("hi"),),
                                                         sampling=SamplingParams(max_new_tokens=CAP)))
    finally:
        backend.close()
    return text, stats, ident


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", sorted(MALFORMED))
def test_malformed_events_are_a_broken_stream(hostile, mode):
    """Bug: a wrong type anywhere in an event (usage a string, choices strings or a dict, delta a string, content a
    number) or JSON nested 100k deep escaped as AttributeError/TypeError/RecursionError ("Something went wrong")."""
    with pytest.raises(GenerationError, match=f"^The server sent a broken stream: .*{MALFORMED[mode][1]}") as err:
        _generate(hostile, mode)
    assert len(str(err.value)) < 300  # the detail is quoted short, never the whole event


@pytest.mark.timeout(60)
def test_a_server_ignoring_max_tokens_is_cut_at_ours(hostile):
    """Bug: a server that went on past max_tokens streamed 200,000 tokens and all were accepted (28 MB). A decoder's
    flush after the last token (an extra text event, as transformers serve sends) and the usage after it are kept."""
    text, stats, ident = _generate(hostile, "ignores-max-tokens")
    assert text == "tok " * CAP + "end"
    assert (stats.completion_tokens, stats.prompt_tokens, stats.finish_reason) == (CAP, 7, "length")
    assert _Hostile.DISCONNECTED[ident].wait(SERVER_LIMIT_S)  # we closed the response; it did not run to its end


@pytest.mark.timeout(60)
def test_a_server_that_never_finishes_is_cut_at_ours(hostile):
    """Bug: without usage or a finish reason, tokens were counted but never capped."""
    text, stats, ident = _generate(hostile, "never-finishes")
    assert text == "tok " * (CAP + MAX_EXTRA_EVENTS)
    assert (stats.completion_tokens, stats.finish_reason) == (CAP, "length")
    assert _Hostile.DISCONNECTED[ident].wait(SERVER_LIMIT_S)


@pytest.mark.timeout(60)
def test_characters_are_capped_too(hostile):
    """Bug: one event could carry any amount of text; the answer is held to MAX_CHARS_PER_TOKEN per token."""
    text, stats, _ident = _generate(hostile, "one-giant-event")
    assert text == "x" * (CAP * MAX_CHARS_PER_TOKEN) and stats.finish_reason == "length"


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "timeout_s", "waiting_for"), [
    ("pings", 1.0, "the first token"),
    ("token-then-empty-events", 1.0, "the next token"),
    ("trickle", 2.0, "the first token"),  # a byte a second keeps a 2 s read timeout from ever firing
])
def test_the_timeout_is_on_useful_progress(hostile, mode, timeout_s, waiting_for):
    """Bug: --api-timeout never ended a stream of ': ping' comments or one byte per second (held 40 s with 10)."""
    with pytest.raises(GenerationError, match=f"sent no answer text for {timeout_s:g} s .* while we waited for "
                                              f"{waiting_for}.*--api-timeout"):
        _generate(hostile, mode, timeout_s=timeout_s)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "message"), [
    ("comment-flood", f"more than {StreamCaps.for_tokens(CAP).max_bytes} bytes for one answer"),
    ("long-line", f"an event line longer than {MAX_LINE_BYTES} bytes"),
    ("not-utf8", "bytes that are not UTF-8"),
    ("gzip-bomb", "a stream compressed with 'gzip' although we asked for none"),
])
def test_floods_and_bombs_are_a_broken_stream(hostile, mode, message):
    """Bug: bytes that were not tokens (comments, one endless line, a compressed bomb) were read without limit."""
    with pytest.raises(GenerationError, match=f"^The server sent a broken stream: {message}"):
        _generate(hostile, mode)


@pytest.mark.timeout(60)
def test_error_bodies_are_read_capped_and_parsed_safely(hostile):
    """Bug: an error status's body was read to its end however long, and JSON nested 100k deep in it escaped as
    RecursionError."""
    with pytest.raises(GenerationError, match=r'failed \(HTTP 500\): \{"error": \{"message": "the engine died x+$'):
        _generate(hostile, "endless-error", ident="endless-error")
    assert _Hostile.DISCONNECTED["endless-error"].wait(SERVER_LIMIT_S)  # we stopped reading; it did not finish
    with pytest.raises(GenerationError, match=r"failed \(HTTP 500\): \{\"error\": \[\[\["):
        _generate(hostile, "deep-error")


@pytest.mark.timeout(60)
def test_a_models_list_nested_too_deep_is_a_clear_load_error(hostile):
    """Bug: /models answering JSON nested 100k deep escaped load() as RecursionError."""
    backend = OpenAIBackend("m", f"{hostile}/deep-models/x/v1", family="qwen2.5-vl", timeout_s=5.0)
    with pytest.raises(ModelLoadError, match="did not answer like an OpenAI-compatible server"):
        backend.load()
    backend.close()


@pytest.mark.parametrize("body", ['{"error": {"message": "x\\ud800y"}}', '{"detail": "\\udfff"}',
                                  '{"message": "\\ud800"}'])
def test_a_lone_surrogate_in_a_servers_error_is_shown_not_dropped(body):
    """Bug: a server's error message holding a lone surrogate went into our error as is; Gradio's JSON encoder
    then failed on it and the client's stream dropped without a message. It is shown as its escape."""
    from qvl_core.engine.openai import error_detail
    from qvl_core.engine.sse import parse_sse_line
    from qvl_core.errors import GenerationError

    detail = error_detail(body)
    assert "\\ud" in detail and detail.encode("utf-8")
    with pytest.raises(GenerationError, match=r"failed during generation: x\\ud800y") as caught:
        parse_sse_line('data: {"error": {"message": "x\\ud800y"}}')
    assert str(caught.value).encode("utf-8")
