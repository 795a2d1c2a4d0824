"""The contract every backend shares: what a generation is asked (request) and what it streams back (chunks, stats)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from qvl_core.engine.messages import Turn
from qvl_core.engine.sampling import SamplingParams
from qvl_core.engine.thinking import DEFAULT_THINKING_BUDGET, MAX_THINKING_BUDGET, ThinkingSupport
from qvl_core.errors import GenerationError, UserError
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
    # Thinking (models whose template can think; see `SessionStatus.thinking`). None: the model's own default.
    # Passed to the template as `enable_thinking` only where it reads it; a served model always gets it explicitly.
    thinking: bool | None = None
    # Keep earlier turns' reasoning in the prompt (`preserve_thinking`), where the template supports it.
    preserve_thinking: bool = False
    # Reasoning tokens before the reasoning is closed (`</think>` forced) and the model made to answer.
    thinking_budget: int = DEFAULT_THINKING_BUDGET

    def __post_init__(self) -> None:
        # Every backend, surface and task builds one of these before any work: the text checks live here.
        if self.system is not None:
            check_text("System prompt", self.system, MAX_SYSTEM_CHARS)
        for i, turn in enumerate(self.turns):
            if turn.role == "user":  # each task checks its own prompt's length; this catches what slips past
                check_text(f"Message {i + 1}", turn.text, MAX_MESSAGE_CHARS)
        budget = self.thinking_budget
        if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_THINKING_BUDGET:
            raise UserError(f"The thinking budget must be a whole number of tokens from 1 to {MAX_THINKING_BUDGET}, "
                            f"got {budget!r}.")


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
    reasoning_tokens: int = 0  # of completion_tokens, those spent reasoning (0 where the model did not think)
    # Why the reasoning was cut short ("" if it was not): the thinking budget was reached, or it looped.
    thinking_note: str = ""
    # Prompt tokens served from the conversation's kept prefix (KV cache) instead of being prefilled again.
    reused_tokens: int = 0


@dataclass(frozen=True)
class Chunk:
    """One piece of a stream: new answer text, new reasoning text, the token count so far; the last one carries
    stats.

    `text` is only ever the answer (what parsers read and the conversation stores as the reply); a thinking
    model's reasoning streams in `reasoning`, without its `<think>`/`</think>` tags, whether the server or the
    engine split it.
    """

    text: str
    tokens: int
    stats: GenerationStats | None = None
    reasoning: str = ""

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
    # What the model's template does with thinking (can it, is it on by default): the UI's switch and its default.
    thinking: ThinkingSupport = field(default_factory=ThinkingSupport)

    def summary(self) -> str:
        mem = f" · GPU memory {self.gpu_memory_mb / 1024:.1f} GiB" if self.gpu_memory_mb is not None else ""
        note = f" ({self.precision_note})" if self.precision_note else ""
        return (f"{self.model_id} ({self.family}) · {self.device} · {self.dtype} · {self.attention}{note}"
                f"{'' if self.quantization == 'none' else ' · ' + self.quantization}{mem}")


def collect(stream: Iterator[Chunk]) -> tuple[str, GenerationStats]:
    """Drain a stream: the whole answer and the final stats (every backend's `generate`)."""
    answer, _reasoning, stats = collect_reasoning(stream)
    return answer, stats


def collect_reasoning(stream: Iterator[Chunk]) -> tuple[str, str, GenerationStats]:
    """Drain a stream: the whole answer, the whole reasoning ("" for a model that did not think), the stats."""
    parts: list[str] = []
    thoughts: list[str] = []
    stats = None
    for chunk in stream:
        parts.append(chunk.text)
        thoughts.append(chunk.reasoning)
        stats = chunk.stats or stats
    if stats is None:
        raise GenerationError("The stream ended without its final statistics.")
    return "".join(parts), "".join(thoughts), stats


def so_far(stream: Iterator[Chunk]) -> Iterator[tuple[str, str, Chunk]]:
    """(answer so far, reasoning so far, this chunk) for each chunk: what every streaming task and tab shows."""
    answer = reasoning = ""
    for chunk in stream:
        answer += chunk.text
        reasoning += chunk.reasoning
        yield answer, reasoning, chunk
