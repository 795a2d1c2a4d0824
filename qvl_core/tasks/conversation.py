"""Pure, immutable conversation edits (send, answer, retry, undo, edit) shared by the UI and the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from qvl_core.engine.messages import Media, Turn, user_turn
from qvl_core.errors import UserError
from qvl_core.settings import MAX_MESSAGE_CHARS, check_text

MAX_MEDIA_PER_MESSAGE = 10
MAX_MEDIA_PER_CONVERSATION = 32


@dataclass(frozen=True)
class Conversation:
    """Turns as the model sees them, plus a display-only note per turn (stats footer, cancel notice).

    Notes never go back to the model: `turns` holds raw text only.
    """

    turns: tuple[Turn, ...] = ()
    notes: tuple[str, ...] = ()
    # Display-only picture per turn (e.g. the image with the answer's boxes drawn), or None.
    figures: tuple[str | None, ...] = ()
    # Display-only seconds a turn's reasoning took (the collapsible thought's duration), or None.
    thought_s: tuple[float | None, ...] = ()
    # The id a backend keeps this conversation's prefix (KV cache) under: drawn at the first message, so that an
    # empty Conversation (a browser session's initial state, copied for every session) shares none.
    key: str = ""

    def __post_init__(self) -> None:
        n = len(self.turns)
        object.__setattr__(self, "notes", (tuple(self.notes) + ("",) * n)[:n])
        object.__setattr__(self, "figures", (tuple(self.figures) + (None,) * n)[:n])
        object.__setattr__(self, "thought_s", (tuple(self.thought_s) + (None,) * n)[:n])

    @property
    def media(self) -> list[Media]:
        return [m for t in self.turns for m in t.media]

    @property
    def awaiting_answer(self) -> bool:
        return bool(self.turns) and self.turns[-1].role == "user"

    def send(self, text: str, files: list[str] | tuple[str, ...] = ()) -> Conversation:
        """Append a user message after checking it against the named limits."""
        text = text or ""
        if not text.strip() and not files:
            raise UserError("Type a message or attach an image or video first.")
        check_text("Message", text, MAX_MESSAGE_CHARS)
        if len(files) > MAX_MEDIA_PER_MESSAGE:
            raise UserError(f"{len(files)} files attached, over the limit of {MAX_MEDIA_PER_MESSAGE} per message.")
        turn = user_turn(text, list(files))
        if len(self.media) + len(turn.media) > MAX_MEDIA_PER_CONVERSATION:
            raise UserError(
                f"This conversation would hold {len(self.media) + len(turn.media)} images/videos, over the "
                f"limit of {MAX_MEDIA_PER_CONVERSATION}. Clear the chat to start a new one."
            )
        return Conversation((*self.turns, turn), self.notes, self.figures, self.thought_s,
                            self.key or uuid.uuid4().hex)

    def with_answer(self, text: str, note: str = "", figure: str | None = None, *, reasoning: str = "",
                    thought_s: float | None = None) -> Conversation:
        """Set the assistant answer to the last user message (replacing a partial one being streamed).

        `text` is the answer only; a thinking model's `reasoning` is kept apart in the turn, and the template
        decides whether the model sees it again (see `Turn`). Display (a collapsible thought) is built from it.
        """
        base = self.without_trailing_answer()
        turn = Turn("assistant", text, reasoning=reasoning)
        return Conversation((*base.turns, turn), (*base.notes, note), (*base.figures, figure),
                            (*base.thought_s, thought_s), base.key)

    def without_trailing_answer(self) -> Conversation:
        if self.turns and self.turns[-1].role == "assistant":
            return self.truncate(len(self.turns) - 1)
        return self

    def retry(self) -> Conversation:
        """Drop the last answer so the last user message can be answered again."""
        base = self.without_trailing_answer()
        if not base.awaiting_answer:
            raise UserError("There is no message to retry.")
        return base

    def undo(self) -> tuple[Conversation, Turn | None]:
        """Remove the last user message and its answer; return it so the UI can put it back in the box."""
        base = self.without_trailing_answer()
        if not base.turns:
            return base, None
        return base.truncate(len(base.turns) - 1), base.turns[-1]

    def truncate(self, index: int) -> Conversation:
        """Keep turns [0, index)."""
        return Conversation(self.turns[:index], self.notes[:index], self.figures[:index], self.thought_s[:index],
                            self.key)

    def edit(self, index: int, text: str) -> Conversation:
        """Replace the text of turn `index`. A user edit drops everything after it (to be answered again)."""
        if not 0 <= index < len(self.turns):
            raise UserError(f"There is no message number {index + 1} to edit.")
        turn = self.turns[index]
        if turn.role == "user":
            text = check_text("Message", text or "", MAX_MESSAGE_CHARS)
        edited = replace(turn, text=text)
        if turn.role == "user":
            return Conversation((*self.turns[:index], edited), self.notes[:index], self.figures[:index],
                                self.thought_s[:index], self.key)
        # An edited answer no longer matches its drawing: drop the figure.
        return Conversation((*self.turns[:index], edited, *self.turns[index + 1:]),
                            (*self.notes[:index], "edited", *self.notes[index + 1:]),
                            (*self.figures[:index], None, *self.figures[index + 1:]), self.thought_s, self.key)
