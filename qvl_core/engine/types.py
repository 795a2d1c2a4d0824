"""The contract every backend shares: what a generation is asked (request) and what it streams back (chunks, stats)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from qvl_core.engine.messages import Turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.errors import GenerationError
from qvl_core.media.video import VideoBudget
from qvl_core.settings import MAX_MESSAGE_CHARS, MAX_SYSTEM_CHARS, check_text

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one generation needs, independent of any UI."""

    turns: tuple[Turn, ...]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    system: str | None = None
    max_image_tokens: int | None = None  # None: the default budget (images.DEFAULT_MAX_IMAGE_TOKENS)
    min_image_tokens: int | None = None
    video: VideoBudget = field(default_factory=VideoBudget)
    # None: images are uploads, held to the app's `Limits.max_image_pixels`. A document job sets its page limit
    # here for the pages it rendered itself (a 150-dpi A4 page is 2.2 MP, whatever the upload limit is).
    image_pixel_limit: int | None = None
    label_media: bool = False
    # Handle for a later prefix (KV) cache: follow-ups in one conversation can reuse its prompt.
    conversation_id: str | None = None

    def __post_init__(self) -> None:
        # Every backend, surface and task builds one of these before any work: the text checks live here.
        if self.system is not None:
            check_text("System prompt", self.system, MAX_SYSTEM_CHARS)
        for i, turn in enumerate(self.turns):
            if turn.role == "user":  # each task checks its own prompt's length; this catches what slips past
                check_text(f"Message {i + 1}", turn.text, MAX_MESSAGE_CHARS)


@dataclass(frozen=True)
class GenerationStats:
    """Measured at the end of a generation. Memory is None where there is no GPU (never faked)."""

    prompt_tokens: int
    completion_tokens: int
    ttft_s: float | None
    decode_tps: float | None
    total_s: float
    peak_gpu_mb: float | None
    finish_reason: FinishReason
    image_input_sizes: tuple[tuple[int, int], ...] = ()
    image_original_sizes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Chunk:
    """One piece of a stream: new text and the token count so far; the last one carries stats."""

    text: str
    tokens: int
    stats: GenerationStats | None = None

    @property
    def finish_reason(self) -> FinishReason | None:
        return self.stats.finish_reason if self.stats else None


@dataclass(frozen=True)
class SessionStatus:
    model_id: str
    family: str
    device: str
    dtype: str
    attention: str
    quantization: str
    gpu_memory_mb: float | None
    random_weights: bool
    scripted: bool
    precision_note: str = ""  # why dtype/attention differ from the usual choice, shown with them

    def summary(self) -> str:
        mem = f" · GPU memory {self.gpu_memory_mb / 1024:.1f} GiB" if self.gpu_memory_mb is not None else ""
        note = f" ({self.precision_note})" if self.precision_note else ""
        return (f"{self.model_id} ({self.family}) · {self.device} · {self.dtype} · {self.attention}{note}"
                f"{'' if self.quantization == 'none' else ' · ' + self.quantization}{mem}")


def collect(stream: Iterator[Chunk]) -> tuple[str, GenerationStats]:
    """Drain a stream: the whole text and the final stats (every backend's `generate`)."""
    parts: list[str] = []
    stats = None
    for chunk in stream:
        parts.append(chunk.text)
        stats = chunk.stats or stats
    if stats is None:
        raise GenerationError("The stream ended without its final statistics.")
    return "".join(parts), stats
