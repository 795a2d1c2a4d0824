"""Token ids to text deltas for streaming: whole characters only, control tokens dropped."""

from __future__ import annotations

from typing import Any

# Special tokens that carry meaning in an answer: Qwen2-VL writes its boxes with them. Every other special token
# (end of turn, padding, vision placeholders) is control and is dropped from the text.
KEPT_SPECIAL_TOKENS = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>",
                       "<|quad_start|>", "<|quad_end|>")


class IncrementalDecoder:
    """Token ids in, text deltas out, without re-decoding the whole answer at every step.

    Holds back text while the last bytes form an incomplete UTF-8 character (decoded as U+FFFD).
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        kept = {tokenizer.convert_tokens_to_ids(t) for t in KEPT_SPECIAL_TOKENS}
        self.skip = frozenset(tokenizer.all_special_ids) - kept
        self.ids: list[int] = []
        self.count = 0  # tokens received, control tokens included
        self.prefix = 0  # start of the window re-decoded each step
        self.read = 0  # end of the text already emitted, in ids

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def add(self, ids: list[int]) -> str:
        self.count += len(ids)
        self.ids.extend(i for i in ids if i not in self.skip)
        prefix_text = self._decode(self.ids[self.prefix:self.read])
        new_text = self._decode(self.ids[self.prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return new_text[len(prefix_text):]
        return ""

    def flush(self) -> str:
        prefix_text = self._decode(self.ids[self.prefix:self.read])
        new_text = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return new_text[len(prefix_text):] if len(new_text) > len(prefix_text) else ""
