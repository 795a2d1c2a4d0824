"""Thinking: reasoning split from the answer, support read from the template, budget and loop guard in generate."""

from __future__ import annotations

import pytest

from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.local import ModelSession
from qvl_core.engine.messages import Turn, build_messages
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import (
    LOOP_REPEATS,
    ThinkingSupport,
    repeating_ngram,
    thinking_support,
)
from qvl_core.engine.types import GenerationRequest, collect_reasoning
from qvl_core.errors import UserError
from qvl_core.parse.thinking import ReasoningSplitter, answer_part, split_reasoning
from qvl_core.tasks.conversation import Conversation
from qvl_core.testing.tiny import BYTE_ALPHABET, split_answer

# A minimal template that behaves like the released thinking ones: `enable_thinking` (on by default), a generation
# prompt ending in `<think>\n` (an empty closed block when off), earlier reasoning dropped unless
# `preserve_thinking`, and `reasoning_content` read from assistant messages.
THINKING_TEMPLATE = (
    "{%- set ns = namespace(last_user=0) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
    "{%- endfor -%}"
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m.role + '\\n' -}}"
    "{%- if m.role == 'assistant' and m.reasoning_content and (preserve_thinking or loop.index0 > ns.last_user) -%}"
    "{{- '<think>\\n' + m.reasoning_content + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{%- if m.content is string -%}{{- m.content -}}{%- else -%}{%- for part in m.content -%}"
    "{%- if part.type == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part.type == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}{{- part.text -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and not enable_thinking -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}{{- '<think>\\n' -}}{%- endif -%}{%- endif -%}"
)


# ---- the splitter (pure) -------------------------------------------------------------------------
SPLITS = [
    # (output, opened by the prompt, reasoning, answer)
    ("Let me look.\n</think>\n\nA cat.", True, "Let me look.", "A cat."),
    ("<think>\nLet me look.\n</think>\n\nA cat.", False, "Let me look.", "A cat."),
    ("A cat.", False, "", "A cat."),
    ("Still thinking", True, "Still thinking", ""),
    ("<think>\nunfinished", False, "unfinished", ""),
    ("\n\n</think>\n\nA cat.", True, "", "A cat."),
    ("<thin", False, "", "<thin"),  # not a tag after all: the answer
    ("a < b </think> b > a", True, "a < b", "b > a"),
]


@pytest.mark.parametrize("text, opened, reasoning, answer", SPLITS)
def test_split_reasoning_whole(text, opened, reasoning, answer):
    assert split_reasoning(text, opened=opened) == (reasoning, answer)


@pytest.mark.parametrize("text, opened, reasoning, answer", SPLITS)
def test_split_reasoning_streamed_one_character_at_a_time(text, opened, reasoning, answer):
    """Bug guarded: a tag cut over two deltas ('</thi' + 'nk>') leaked into the answer or the reasoning."""
    splitter = ReasoningSplitter(opened=opened)
    parts = [splitter.feed(c) for c in text] + [splitter.flush()]
    assert ("".join(r for r, _ in parts), "".join(a for _, a in parts)) == (reasoning, answer)


def test_answer_part_drops_reasoning_with_or_without_the_opening_tag():
    assert answer_part("draft [1, 2]\n</think>\n\nfinal") == "final"
    assert answer_part("<think>draft</think>final") == "final"
    assert answer_part("<think>\nunclosed draft") == ""
    assert answer_part("plain") == "plain"


def test_repeating_ngram_finds_a_loop_and_not_ordinary_text():
    assert repeating_ngram(list(range(200))) is None
    assert repeating_ngram([1, 2, 3] + [7, 8, 9, 10] * LOOP_REPEATS * 2) == 4
    assert repeating_ngram([5] * 20) is None  # a short run (a table rule) is not a loop
    assert repeating_ngram([5] * 64) == 1


def test_template_kwargs_only_what_the_template_reads():
    on = ThinkingSupport(can_think=True, switchable=True, default_on=True, preserve=True)
    assert on.template_kwargs(None, False) == {}
    assert on.template_kwargs(False, True) == {"enable_thinking": False, "preserve_thinking": True}
    assert ThinkingSupport().template_kwargs(True, True) == {}
    assert not ThinkingSupport().enabled(True) and on.enabled(None) and not on.enabled(False)


def test_thinking_budget_is_checked():
    with pytest.raises(UserError, match="thinking budget"):
        GenerationRequest(turns=(Turn("user", "hi"),), thinking_budget=0)


# ---- the conversation gives reasoning back apart -------------------------------------------------
def test_conversation_keeps_reasoning_apart_and_gives_it_back_as_reasoning_content():
    """Bug guarded: reasoning in the answer text went back to the model as part of the reply."""
    conv = Conversation().send("hi").with_answer("Hello", reasoning="They greet me.").send("again")
    assert conv.turns[1].text == "Hello" and conv.turns[1].reasoning == "They greet me."
    messages = build_messages(conv.turns).messages
    assert messages[1]["reasoning_content"] == "They greet me."
    assert "They greet me." not in str(messages[1]["content"])
    assert "reasoning_content" not in messages[0]


# ---- the real model classes ---------------------------------------------------------------------
def _thinking_session(ckpt_dir, answer: str | None = None, template: str = THINKING_TEMPLATE) -> ModelSession:
    """A tiny Qwen3-VL session of its own whose template is replaced (the shared sessions stay untouched)."""
    session = ModelSession(LoadOptions(model=str(ckpt_dir("qwen3_vl", answer)), device="cpu"))
    processor = session.load().processor
    processor.chat_template = template
    processor.tokenizer.chat_template = template
    return session


def test_thinking_support_is_read_from_the_template(ckpt_dir, make_session):
    session = _thinking_session(ckpt_dir)
    support = thinking_support(session.loaded.processor)
    assert support == ThinkingSupport(can_think=True, switchable=True, default_on=True, preserve=True)
    assert session.status().thinking == support
    assert make_session("qwen3_vl").status().thinking == ThinkingSupport()  # the plain template cannot think


def test_request_thinking_reaches_the_template(ckpt_dir):
    session = _thinking_session(ckpt_dir)
    history = Conversation().send("hi").with_answer("Hello", reasoning="earlier-thought").send("again").turns
    decode = session.loaded.processor.tokenizer.decode

    def prompt(**kwargs) -> str:
        return decode(session.prepare(GenerationRequest(turns=history, **kwargs)).inputs["input_ids"][0])

    assert prompt().endswith("<think>\n") and "earlier-thought" not in prompt()
    assert prompt(thinking=False).endswith("<think>\n\n</think>\n\n")
    assert "earlier-thought" in prompt(preserve_thinking=True)


def test_scripted_reasoning_streams_apart_from_the_answer(ckpt_dir):
    session = _thinking_session(ckpt_dir, "The red one is left.\n</think>\n\nLeft.")
    request = GenerationRequest(turns=(Turn("user", "Which?"),))
    answer, reasoning, stats = collect_reasoning(session.stream(request))
    assert (reasoning, answer) == ("The red one is left.", "Left.")
    assert stats.reasoning_tokens > 0 and stats.thinking_note == ""


def test_budget_closes_the_reasoning_and_the_model_answers(ckpt_dir):
    """The scripted model ignores whatever was forced, so this only passes when the close is a logits processor
    after the model: reasoning cut at the budget, then `</think>`, then the model's own text as the answer."""
    script = "abcdefghijklmnopqrstuvwxyz" * 4  # ~20 scripted pieces, no `</think>`
    session = _thinking_session(ckpt_dir, script)
    request = GenerationRequest(turns=(Turn("user", "Think."),),
                                sampling=SamplingParams(max_new_tokens=40), thinking_budget=5)
    answer, reasoning, stats = collect_reasoning(session.stream(request))
    assert reasoning == "".join(split_answer(script, set(BYTE_ALPHABET.values()))[:5])  # the first five pieces
    assert answer and script.startswith(answer)  # after the forced close the script starts again, as the answer
    assert stats.reasoning_tokens == 5 and "thinking budget of 5 tokens" in stats.thinking_note


def test_thinking_off_leaves_the_output_an_answer(ckpt_dir):
    session = _thinking_session(ckpt_dir, "Left.")
    answer, reasoning, stats = collect_reasoning(
        session.stream(GenerationRequest(turns=(Turn("user", "Which?"),), thinking=False)))
    assert (reasoning, answer) == ("", "Left.") and stats.reasoning_tokens == 0


# ---- every parser reads only the answer -----------------------------------------------------------
DRAFT = 'A draft: {"bbox_2d": [0, 0, 100, 100], "label": "draft"} at 3.0 seconds. Hmm.\n</think>\n\n'


def test_parsers_ignore_a_reasoning_block_as_a_defence():
    """Bug guarded: a draft box, time, object or layout inside the reasoning was parsed as the answer."""
    from qvl_core.parse.grounding import parse_grounding
    from qvl_core.parse.layout import extract_layout
    from qvl_core.parse.timespans import parse_time_spans
    from qvl_core.tasks.documents import parse_fields, validate_fields

    final = '```json\n[{"bbox_2d": [500, 500, 1000, 1000], "label": "cat"}]\n```'
    for text in (DRAFT + final, "<think>\n" + DRAFT + final):
        dets = parse_grounding(text, family="qwen3_vl", input_size=(64, 64), image_size=(100, 100))
        assert [(d.label, d.to_json()["bbox_2d"]) for d in dets] == [("cat", [50, 50, 100, 100])]
    assert [s.start for s in parse_time_spans(DRAFT + "It happens at 7.5 seconds.")] == [7.5]
    assert validate_fields(DRAFT + '{"total": "5"}', parse_fields("total"))[0] == {"total": "5"}
    html = '<p data-bbox="0 0 10 10">draft</p></think><p data-bbox="10 10 20 20">final</p>'
    blocks = extract_layout(html, family="qwen3_vl", input_size=(64, 64), image_size=(1000, 1000))
    assert [b.text for b in blocks] == ["final"]


def test_scripted_thinking_grounding_draws_only_the_final_box(ckpt_dir, tmp_path):
    """The issue's acceptance check: reasoning with a draft box, `</think>`, then the final box (0-1000 over the
    image) -> only the final box, at the right original pixels, through the grounding task."""
    from PIL import Image

    from qvl_core.tasks.grounding import ground

    photo = tmp_path / "photo.png"
    Image.new("RGB", (640, 480), (240, 240, 240)).save(photo)
    script = DRAFT + '```json\n[{"bbox_2d": [250, 250, 500, 750], "label": "red box"}]\n```'
    session = _thinking_session(ckpt_dir, script)
    *steps, last = ground(session, photo, "Find the red box.")
    result = last.result
    assert [(d["label"], d["bbox_2d"]) for d in result.detections_json()] == [("red box", [160, 120, 320, 360])]
    assert result.reasoning.startswith("A draft:") and "draft" not in result.raw
    assert not any("draft" in s.raw for s in steps)  # the draft never streamed as answer text either


# ---- the OpenAI backend -------------------------------------------------------------------------------
class _ReasoningServer:
    """A loopback OpenAI server that records each request body and streams reasoning deltas, then the answer."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"object": "list", "data": [{"id": "m", "owned_by": "test"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                bodies.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0)))))
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                deltas = [{"reasoning_content": "Look "}, {"reasoning": "left."}, {"content": "Left."}]
                events = [{"choices": [{"delta": d, "index": 0}]} for d in deltas]
                events.append({"choices": [{"delta": {}, "finish_reason": "stop", "index": 0}],
                               "usage": {"prompt_tokens": 5, "completion_tokens": 3}})
                self.wfile.write("".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture(scope="module")
def reasoning_server():
    server = _ReasoningServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_openai_sends_thinking_explicitly_and_reads_reasoning_apart(reasoning_server):
    """Bugs guarded: enable_thinking left to the server's default; reasoning_content deltas dropped (or counted
    as answer); earlier reasoning never sent back when it is to be preserved."""
    from qvl_core.engine.openai import OpenAIBackend

    backend = OpenAIBackend("m", reasoning_server.base, family="qwen3-vl", flavor="vllm")
    history = Conversation().send("hi").with_answer("Hello", reasoning="They greet me.").send("Which?").turns
    for thinking, preserve in ((None, False), (False, False), (True, True)):
        answer, reasoning, stats = collect_reasoning(backend.stream(
            GenerationRequest(turns=history, thinking=thinking, preserve_thinking=preserve)))
        assert (reasoning, answer) == ("Look left.", "Left.") and stats.reasoning_tokens == 2
        body = reasoning_server.bodies[-1]
        assert body["chat_template_kwargs"] == {"enable_thinking": thinking is not False,
                                                "preserve_thinking": preserve}
        assert ("reasoning_content" in body["messages"][1]) == preserve
    assert backend.status().thinking.can_think
    backend.close()


# ---- the released-like template of the tiny Qwen3.5 checkpoints, and the CLI --------------------------
def test_qwen3_5_tiny_thinks_by_default_read_from_its_template(make_session):
    session = make_session("qwen3_5", "Hmm, left.\n</think>\n\nLeft.")
    assert session.status().thinking.can_think and session.status().thinking.default_on
    answer, reasoning, _ = collect_reasoning(session.stream(GenerationRequest(turns=(Turn("user", "Which?"),))))
    assert (reasoning, answer) == ("Hmm, left.", "Left.")


def test_cli_chat_prints_reasoning_to_stderr_and_none_with_no_thinking(ckpt_dir, capsys):
    """Bugs guarded: reasoning mixed into the answer on stdout; --no-thinking still printing a thought."""
    from qvl_core.cli import DIM, main

    model = str(ckpt_dir("qwen3_5", "Hmm, left.\n</think>\n\nLeft."))
    assert main(["chat", "-p", "Which?", "--model", model, "--device", "cpu", "-q"]) == 0
    out, err = capsys.readouterr()
    assert out == "Left.\n" and "Hmm, left." in err and DIM not in err  # not a terminal: no ANSI codes
    assert main(["chat", "-p", "Which?", "--model", model, "--device", "cpu", "-q", "--no-thinking"]) == 0
    out, err = capsys.readouterr()
    assert "Hmm, left." not in err and out.startswith("Hmm, left.")  # the prompt closed the block: all answer


def test_budget_on_qwen3_5_where_think_tags_are_added_tokens(make_session):
    script = "abcdefghijklmnopqrstuvwxyz" * 4
    session = make_session("qwen3_5", script)
    request = GenerationRequest(turns=(Turn("user", "Think."),), sampling=SamplingParams(max_new_tokens=40),
                                thinking_budget=3)
    answer, reasoning, stats = collect_reasoning(session.stream(request))
    assert script.startswith(reasoning) and answer and script.startswith(answer)
    assert stats.reasoning_tokens == 3 and "budget of 3" in stats.thinking_note


def test_loop_guard_closes_repeating_reasoning():
    """Bug guarded: a model looping in its reasoning ran to max_new_tokens without ever answering."""
    import torch

    from qvl_core.engine.thinking import ReasoningGuard

    class Tok:  # token i decodes to "w{i} "; "\n</think>\n\n" is the ids 900, 901
        def encode(self, text, add_special_tokens=False):
            return [900, 901]

        def decode(self, ids, skip_special_tokens=False):
            return "".join(f"w{i} " for i in ids)

    guard = ReasoningGuard(Tok(), prompt_tokens=2, opened=True, budget=10_000)
    ids, forced = [0, 0], []
    for step in range(200):
        scores = guard(torch.tensor([ids]), torch.zeros(1, 1000))
        if torch.isinf(scores).any():
            forced.append(int(scores.argmax()))
            ids.append(forced[-1])
        else:
            ids.append([7, 8, 9][step % 3])
    assert forced == [900, 901] and "repeated the same 3-token sequence" in guard.note
