"""Thinking: what a model's chat template supports (read by rendering it), and the budget and loop guard in generate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qvl_core.parse.thinking import THINK_CLOSE, THINK_OPEN

# Named defaults and limits.
DEFAULT_THINKING_BUDGET = 4096  # reasoning tokens before the reasoning is closed and the model made to answer
MAX_THINKING_BUDGET = 262144  # the longest Qwen context; a budget past it can never be reached
# The loop guard: the same n-gram of tokens written LOOP_REPEATS times in a row is a loop, not reasoning.
LOOP_MAX_NGRAM = 64  # every n-gram size up to this is checked (a 3-token loop is no 2- or 4-token one)
LOOP_REPEATS = 12
LOOP_MIN_TOKENS = 64  # a run shorter than this (e.g. 12 dashes of a table rule) is not a loop yet
# What is forced to close the reasoning: the released templates write exactly this between reasoning and answer.
CLOSE_TEXT = "\n" + THINK_CLOSE + "\n\n"
# The probe conversation the template is rendered with; the marker tells whether earlier reasoning survives.
_PROBE_REASONING = "qvl-probe-reasoning"


@dataclass(frozen=True)
class ThinkingSupport:
    """What a model's chat template does with thinking, found by rendering it (never from the model's name).

    can_think: the generation prompt can open a reasoning block (`<think>`), or the template reacts to
      `enable_thinking` (a template that lets the model open the block itself).
    switchable: `enable_thinking` changes the prompt (False: a thinking-only or a non-thinking checkpoint).
    default_on: the model thinks when the request does not say (the UI's switch default).
    preserve: the template takes `preserve_thinking` (earlier turns' reasoning kept in the prompt).
    """

    can_think: bool = False
    switchable: bool = False
    default_on: bool = False
    preserve: bool = False

    def enabled(self, thinking: bool | None) -> bool:
        """Whether a request asking for `thinking` (None: the model's default) will think."""
        if not self.can_think:
            return False
        if not self.switchable:
            return self.default_on
        return self.default_on if thinking is None else thinking

    def template_kwargs(self, thinking: bool | None, preserve_thinking: bool) -> dict[str, bool]:
        """The chat-template arguments for a request: only those this template reads, and only when asked for."""
        kwargs: dict[str, bool] = {}
        if self.switchable and thinking is not None:
            kwargs["enable_thinking"] = thinking
        if self.preserve and preserve_thinking:
            kwargs["preserve_thinking"] = True
        return kwargs


def _probe_messages(with_history: bool) -> list[dict]:
    user = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    if not with_history:
        return [user]
    answer = {"role": "assistant", "content": [{"type": "text", "text": "Hello"}],
              "reasoning_content": _PROBE_REASONING}
    return [user, answer, user]


def opens_reasoning(prompt: str) -> bool:
    """The rendered prompt ends inside an open reasoning block: the model's output starts with reasoning."""
    return prompt.rstrip().endswith(THINK_OPEN)


def thinking_support(processor: Any) -> ThinkingSupport:
    """Render the processor's chat template with thinking unset, on and off (and preserve on) and compare."""

    def render(with_history: bool = False, **kwargs: Any) -> str:
        return processor.apply_chat_template(_probe_messages(with_history), tokenize=False,
                                             add_generation_prompt=True, **kwargs)

    default, on, off = render(), render(enable_thinking=True), render(enable_thinking=False)
    switchable = on != off
    opens = opens_reasoning(default)
    can_think = switchable or opens
    default_on = default == on if switchable else opens
    preserve = False
    if can_think:
        kept, dropped = render(True, preserve_thinking=True), render(True)
        preserve = _PROBE_REASONING in kept and _PROBE_REASONING not in dropped
    return ThinkingSupport(can_think, switchable, default_on, preserve)


def close_token_ids(tokenizer: Any) -> list[int]:
    """The token ids that close the reasoning (`</think>` is one added token in the released tokenizers)."""
    return list(tokenizer.encode(CLOSE_TEXT, add_special_tokens=False))


def repeating_ngram(ids: list[int]) -> int | None:
    """Pure: the size of an n-gram that the tail of `ids` repeats LOOP_REPEATS times in a row (and over at least
    LOOP_MIN_TOKENS tokens), or None."""
    for n in range(1, LOOP_MAX_NGRAM + 1):
        span = max(n * LOOP_REPEATS, -(-LOOP_MIN_TOKENS // n) * n)  # whole repeats, LOOP_MIN_TOKENS at least
        if len(ids) < span:
            continue
        tail = ids[-span:]
        if all(tail[i] == tail[i % n] for i in range(n, span)):
            return n
    return None


class ReasoningGuard:
    """A logits processor that closes the reasoning when it reaches the budget or loops, then lets the model answer.

    It runs after every other processor (sampling included), so the token it forces is what `generate` picks,
    whatever the model scored. It follows the output token by token: reasoning starts at once when the prompt
    opened the block (`opened`), or when the output opens it; `</think>` written by the model ends the watch.
    Afterwards `note` says why it closed the reasoning ("" if it did not) and `reasoning_tokens` how long it was.
    """

    def __init__(self, tokenizer: Any, *, prompt_tokens: int, opened: bool, budget: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_tokens = prompt_tokens
        self.budget = budget
        self.close_ids = close_token_ids(tokenizer)
        self.state = "reasoning" if opened else "start"
        self.reasoning_ids: list[int] = []
        self.text = ""  # the decoded output while it may still open or close the block
        self.forcing: list[int] = []
        self.seen = 0
        self.note = ""

    @property
    def reasoning_tokens(self) -> int:
        return len(self.reasoning_ids)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        new = input_ids[0, self.prompt_tokens + self.seen:].tolist()
        self.seen += len(new)
        for token in new:
            self._follow(token)
        if self.state == "reasoning" and not self.forcing:
            if self.reasoning_tokens >= self.budget:
                self._close(f"Reasoning reached the thinking budget of {self.budget} tokens; it was closed so "
                            "the model answers.")
            elif (n := repeating_ngram(self.reasoning_ids)) is not None:
                self._close(f"Reasoning repeated the same {n}-token sequence at least {LOOP_REPEATS} times in a "
                            "row; it was closed so the model answers.")
        if self.forcing:
            forced = self.forcing.pop(0)
            if not self.forcing:
                self.state = "answer"
            scores = scores.clone()
            scores.fill_(float("-inf"))
            scores[:, forced] = 0.0
        return scores

    def _close(self, note: str) -> None:
        self.note = note
        self.forcing = list(self.close_ids)

    def _follow(self, token: int) -> None:
        if self.state == "answer" or self.forcing:
            return
        self.text += self.tokenizer.decode([token], skip_special_tokens=False)
        if self.state == "start":
            head = self.text.lstrip()
            if head.startswith(THINK_OPEN):
                self.state, self.text = "reasoning", ""
            elif not THINK_OPEN.startswith(head):
                self.state = "answer"
            return
        self.reasoning_ids.append(token)
        if THINK_CLOSE in self.text:
            self.state = "answer"
        else:
            self.text = self.text[-len(THINK_CLOSE):]  # enough to find a tag split over tokens
