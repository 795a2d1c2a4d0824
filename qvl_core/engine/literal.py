"""Text from people, files and earlier answers reaches the model as text, never as control tokens."""

# Why this is needed
# ------------------
# A chat template writes each message's text verbatim into the prompt, and the Qwen tokenizers then read every
# added-token string in the prompt as that token. So a user's "<|image_pad|>" became a vision placeholder (the
# processor failed: "Found 1 <|image_pad|> tokens in the text but no images"), an answer quoting "<|im_start|>"
# broke every later turn, and "<|im_end|>\n<|im_start|>system\n..." typed in a message opened a real system turn.
#
# How, in process (`guard_messages` -> `place_markers` -> `splice_texts`)
# -----------------------------------------------------------------------
# Only the template's own special tokens may be special, so the fix is at tokenization, not in the text:
# 1. every message text that contains an added-token string is replaced, in a copy of the messages, by a marker
#    (MARKER, its index, MARKER), keeping the text's leading and trailing whitespace outside it, so that a
#    template that trims a message trims exactly what it would have trimmed;
# 2. the template is rendered; each marker it kept becomes a single MARKER (a template may drop a text, e.g. an
#    earlier turn's reasoning), remembering which text it stands for;
# 3. the processor expands the real images' and videos' placeholders and tokenizes; MARKER is one special token,
#    so it is exactly one id that never merges with its neighbours;
# 4. each MARKER id is replaced by the ids of its text, tokenized as plain text: the tokenizer's normalizer,
#    pre-tokenizer and BPE model without its added-token table (`text_ids`).
# The model thus sees the person's exact characters, "<|image_pad|>" as "<|", "image", "_pad", "|>", tokenized
# as if the vocabulary had no such token; text without added-token strings is not touched at all. Zero-width
# characters were the other choice: they change the text the model reads, and this needs no such compromise.
# Two kinds of model-written tokens are not text. Qwen2-VL writes its boxes with special tokens (ANSWER_TOKENS,
# the ones the decoder keeps in answers): in an earlier answer they go back to the model as the tokens it wrote,
# in anyone else's text they are text. `<think>`/`</think>` are ordinary added tokens the model writes itself:
# reasoning reaches the template apart from the answer (`reasoning_content`), so any tag left in a text is text.
#
# Where the tokenizer is not ours (`--backend openai`), `neutralise` breaks each special-token string with a zero-
# width space instead; see there.

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from qvl_core.engine.decoding import KEPT_SPECIAL_TOKENS
from qvl_core.errors import GenerationError

# A special token the Qwen chat templates never write into a prompt (it ends documents in pretraining).
MARKER = "<|endoftext|>"
_MARKED = re.compile(re.escape(MARKER) + r"(\d+)" + re.escape(MARKER))
# The message fields whose strings are text from people, files or answers.
TEXT_FIELDS = ("text", "reasoning_content")
# Special tokens an answer holds as tokens (Qwen2-VL's box markers): an earlier answer gives them back as such.
ANSWER_TOKENS = KEPT_SPECIAL_TOKENS
# Per-token tensors of the processor's output and the value a text token has in each (input_ids are the text's).
PER_TOKEN_FILL = {"attention_mask": 1, "mm_token_type_ids": 0, "token_type_ids": 0}


@dataclass(frozen=True)
class Text:
    """One message text put in as a marker; `keep`: the added-token strings in it that stay tokens."""

    text: str
    keep: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardedMessages:
    """Chat messages whose texts with added-token strings are markers, and those texts by marker index."""

    messages: list[dict]
    texts: tuple[Text, ...]


def added_token_pattern(tokenizer: Any, exclude: tuple[str, ...] = ()) -> re.Pattern[str] | None:
    """Every added-token string of `tokenizer` (special or not) but `exclude`, longest first; None if none."""
    tokens = sorted((t for t in tokenizer.get_added_vocab() if t not in exclude), key=len, reverse=True)
    return re.compile("|".join(re.escape(t) for t in tokens)) if tokens else None


def guard_messages(messages: list[dict], tokenizer: Any) -> GuardedMessages:
    """A copy of `messages` where each text containing an added-token string is a marker (whitespace kept).

    An assistant message's ANSWER_TOKENS are no reason to guard it: they are the tokens the model wrote.
    """
    keep = tuple(t for t in ANSWER_TOKENS if t in tokenizer.get_added_vocab())
    patterns = {False: added_token_pattern(tokenizer), True: added_token_pattern(tokenizer, exclude=keep)}
    texts: list[Text] = []

    def guard(text: str, answer: bool) -> str:
        pattern = patterns[answer]
        if pattern is None or not pattern.search(text):
            return text
        core = text.strip()
        lead, trail = text[:len(text) - len(text.lstrip())], text[len(text.rstrip()):]
        texts.append(Text(core, keep if answer else ()))
        return f"{lead}{MARKER}{len(texts) - 1}{MARKER}{trail}"

    out: list[dict] = []
    for message in messages:
        answer = message.get("role") == "assistant"
        copy = dict(message)
        content = message.get("content")
        if isinstance(content, str):
            copy["content"] = guard(content, answer)
        elif isinstance(content, list):
            copy["content"] = [{k: guard(v, answer) if k == "text" and isinstance(v, str) else v
                                for k, v in part.items()} for part in content]
        for key in TEXT_FIELDS:
            if isinstance(message.get(key), str):
                copy[key] = guard(message[key], answer)
        out.append(copy)
    return GuardedMessages(out, tuple(texts))


def place_markers(prompt: str, texts: tuple[Text, ...]) -> tuple[str, tuple[Text, ...]]:
    """The rendered `prompt` with each kept marker as one MARKER, and the texts they stand for, in prompt order."""
    placed = tuple(texts[int(m.group(1))] for m in _MARKED.finditer(prompt))
    prompt = _MARKED.sub(MARKER, prompt)
    if prompt.count(MARKER) != len(placed):
        raise GenerationError(f"The chat template wrote {MARKER} itself; message texts cannot be placed safely.")
    return prompt, placed


def text_ids(tokenizer: Any, text: str, keep: tuple[str, ...] = ()) -> list[int]:
    """`text` tokenized as plain text: no added token (special or not) but those in `keep` is matched.

    For text without added-token strings this is exactly `tokenizer(text, add_special_tokens=False)`; `keep`
    strings are cut out first, as the tokenizer cuts out its added tokens.
    """
    if keep:
        parts = re.split("(" + "|".join(re.escape(t) for t in keep) + ")", text)
        return [i for k, part in enumerate(parts) if part
                for i in ([tokenizer.convert_tokens_to_ids(part)] if k % 2 else text_ids(tokenizer, part))]
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else [(text, None)]
    return [token.id for piece, _ in pieces for token in backend.model.tokenize(piece)]


def splice_texts(inputs: Any, texts: tuple[Text, ...], tokenizer: Any) -> Any:
    """The processor's output with each MARKER id replaced by its text's plain-text ids (batch of one)."""
    if not texts:
        return inputs
    import torch

    marker_id = tokenizer.convert_tokens_to_ids(MARKER)
    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError(f"splice_texts takes one prompt, got a batch of {ids.shape[0]}")
    row = ids[0].tolist()
    at = [i for i, t in enumerate(row) if t == marker_id]
    if len(at) != len(texts):
        raise GenerationError(f"{len(at)} {MARKER} ids in the prompt for {len(texts)} message texts.")
    pieces = [text_ids(tokenizer, t.text, t.keep) for t in texts]
    new_row: list[int] = []
    # Which positions of the new row came from the old one (-1: a spliced text token).
    origin: list[int] = []
    start = 0
    for pos, piece in zip(at, pieces, strict=True):
        new_row += row[start:pos] + piece
        origin += list(range(start, pos)) + [-1] * len(piece)
        start = pos + 1
    new_row += row[start:]
    origin += list(range(start, len(row)))
    index = torch.tensor([max(o, 0) for o in origin])
    is_text = torch.tensor([o < 0 for o in origin])
    n = len(row)
    for key, value in list(inputs.items()):
        if key == "input_ids":
            inputs[key] = torch.tensor([new_row], dtype=value.dtype)
        elif key in PER_TOKEN_FILL:
            inputs[key] = torch.where(is_text, PER_TOKEN_FILL[key], value[0, index]).unsqueeze(0).to(value.dtype)
        elif torch.is_tensor(value) and value.dim() == 2 and value.shape == (1, n):
            raise GenerationError(f"The processor returned a per-token {key!r} that message texts cannot be "
                                  "spliced into.")
    return inputs


# ---- a server's tokenizer (--backend openai) ----------------------------------------------------------------
# Qwen's special tokens are all "<|name|>"; its ordinary added tokens that steer a turn are these tags.
SPECIAL_SHAPE = re.compile(r"<(?=\|[A-Za-z0-9_]{1,64}\|>)|<(?=/?(?:think|tool_call|tool_response)>)")
ZERO_WIDTH_SPACE = "\u200b"


def neutralise(text: str) -> str:
    """`text` with a zero-width space after the "<" of every special-token string and turn tag.

    A served model's tokenizer is the server's: we cannot tokenize for it, so the string itself must stop
    matching. "<\u200b|im_start|>" reads the same to a person and is text to the tokenizer; the model sees one
    extra invisible character per such string, nothing else changes.
    """
    return SPECIAL_SHAPE.sub("<" + ZERO_WIDTH_SPACE, text)
