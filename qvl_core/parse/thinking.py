"""Pure: a thinking model's output split into reasoning and answer, whole or as it streams."""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class ReasoningSplitter:
    """Text deltas in, (reasoning delta, answer delta) out; tags spanning two deltas are held back until whole.

    `opened`: the prompt already ends in an open `<think>` block (the Qwen3.5 and Qwen3-VL-Thinking templates with
    thinking on write `<think>\\n` as the generation prompt), so the output starts inside the reasoning and holds
    only the closing `</think>`. Otherwise the output is reasoning only if it starts with `<think>` (models whose
    template lets them open the block themselves); anything else is answer from the first character.
    Whitespace around the tags is dropped from both parts: it is layout, not content.
    """

    def __init__(self, *, opened: bool = False) -> None:
        self.state = "reasoning" if opened else "start"
        self.pending = ""  # text not yet assigned: a possible partial tag, or whitespace that may end the reasoning
        self.reasoning_started = False

    @property
    def in_reasoning(self) -> bool:
        return self.state == "reasoning"

    def feed(self, text: str) -> tuple[str, str]:
        self.pending += text
        reasoning = answer = ""
        while True:
            if self.state == "start":
                head = self.pending.lstrip()
                if head.startswith(THINK_OPEN):
                    self.pending = head[len(THINK_OPEN):]
                    self.state = "reasoning"
                    continue
                if THINK_OPEN.startswith(head):  # empty or a partial "<thi": wait for more
                    return reasoning, answer
                self.state = "answer"
                continue
            if self.state == "reasoning":
                if not self.reasoning_started:
                    self.pending = self.pending.lstrip()
                end = self.pending.find(THINK_CLOSE)
                if end >= 0:
                    reasoning += self._reasoning(self.pending[:end].rstrip())
                    self.pending = self.pending[end + len(THINK_CLOSE):]
                    self.state = "answer_start"
                    continue
                keep = _held_back(self.pending, THINK_CLOSE)
                reasoning += self._reasoning(self.pending[:len(self.pending) - keep])
                self.pending = self.pending[len(self.pending) - keep:]
                return reasoning, answer
            if self.state == "answer_start":
                self.pending = self.pending.lstrip()
                if not self.pending:
                    return reasoning, answer
                self.state = "answer"
            answer += self.pending
            self.pending = ""
            return reasoning, answer

    def flush(self) -> tuple[str, str]:
        """The end of the output: whatever was held back goes where it stands (an unclosed block is reasoning)."""
        rest, self.pending = self.pending, ""
        if self.state == "reasoning":
            return self._reasoning(rest.strip() if not self.reasoning_started else rest.rstrip()), ""
        if self.state == "answer":
            return "", rest
        if self.state == "start" and rest.strip():  # a lone partial "<thi" was the answer after all
            return "", rest
        return "", ""

    def _reasoning(self, text: str) -> str:
        if text:
            self.reasoning_started = True
        return text


def _held_back(text: str, tag: str) -> int:
    """How many trailing characters to hold: trailing whitespace plus a tail that may begin `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            break
    else:
        n = 0
    body = text[:len(text) - n]
    return n + (len(body) - len(body.rstrip()))


def split_reasoning(text: str, *, opened: bool = False) -> tuple[str, str]:
    """A whole output -> (reasoning, answer). `opened`: the prompt already opened the block (see the splitter)."""
    splitter = ReasoningSplitter(opened=opened)
    r1, a1 = splitter.feed(text)
    r2, a2 = splitter.flush()
    return r1 + r2, a1 + a2


def answer_part(text: str) -> str:
    """What a parser may read: the text after a `</think>`, nothing of an unclosed `<think>` block, else all.

    Every parser calls this as a defence: a draft box or time inside the reasoning is never an answer, whether or
    not the output opened the block itself (the prompt may have).
    """
    end = text.find(THINK_CLOSE)
    if end >= 0:
        return text[end + len(THINK_CLOSE):].lstrip()
    if text.lstrip().startswith(THINK_OPEN):
        return ""
    return text
