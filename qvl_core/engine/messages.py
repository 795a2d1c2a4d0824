"""Pure functions: a conversation of turns (text, images, videos) -> the model's chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from qvl_core.errors import UserError
from qvl_core.media.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MediaKind = Literal["image", "video"]


@dataclass(frozen=True)
class Media:
    """One image or video file attached to a turn."""

    kind: MediaKind
    path: str

    @property
    def name(self) -> str:
        return Path(self.path).name


@dataclass(frozen=True)
class Turn:
    """One message of a conversation. Assistant turns hold the model's raw text, never display markup.

    A thinking model's assistant turn keeps its reasoning apart from the answer (`text`, without `<think>` tags):
    the template gets it back as the message's `reasoning_content`, and decides itself whether to show it to the
    model again (the released templates drop earlier turns' reasoning unless `preserve_thinking`).
    """

    role: Literal["user", "assistant"]
    text: str
    media: tuple[Media, ...] = ()
    reasoning: str = ""


@dataclass(frozen=True)
class MessagePlan:
    """Chat-template messages plus the media they reference, in the order their placeholders appear."""

    messages: list[dict]
    media: list[Media] = field(default_factory=list)

    @property
    def images(self) -> list[Media]:
        return [m for m in self.media if m.kind == "image"]

    @property
    def videos(self) -> list[Media]:
        return [m for m in self.media if m.kind == "video"]


def media_kind(path: str) -> MediaKind:
    """Classify an uploaded file by its extension; anything else is a UserError naming what is accepted."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in VIDEO_SUFFIXES:
        return "video"
    accepted = " ".join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    raise UserError(f"File {Path(path).name!r} is not a supported image or video (accepted: {accepted}).")


def user_turn(text: str, files: list[str] | tuple[str, ...] = ()) -> Turn:
    """A user turn from a textbox value: files are classified as images or videos."""
    return Turn("user", text or "", tuple(Media(media_kind(f), str(f)) for f in files))


def build_messages(
    turns: list[Turn] | tuple[Turn, ...],
    *,
    system: str | None = None,
    label_media: bool = False,
) -> MessagePlan:
    """Turn a conversation into chat-template messages.

    Media come before the text of their turn (the layout the models were trained on). With
    `label_media`, each image/video is preceded by "Picture N: " / "Video N: ", numbered across
    the whole conversation, so the user can say "compare picture 1 and picture 3".
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("build_messages needs a conversation that ends with a user turn")
    messages: list[dict] = []
    if system and system.strip():
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    media: list[Media] = []
    counts = {"image": 0, "video": 0}
    for turn in turns:
        content: list[dict] = []
        for item in turn.media:
            counts[item.kind] += 1
            if label_media:
                label = "Picture" if item.kind == "image" else "Video"
                content.append({"type": "text", "text": f"{label} {counts[item.kind]}: "})
            content.append({"type": item.kind})
            media.append(item)
        if turn.text or not content:
            content.append({"type": "text", "text": turn.text})
        message: dict = {"role": turn.role, "content": content}
        if turn.role == "assistant" and turn.reasoning:
            message["reasoning_content"] = turn.reasoning
        messages.append(message)
    return MessagePlan(messages, media)
