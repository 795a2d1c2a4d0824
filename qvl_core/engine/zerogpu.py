"""Hugging Face Spaces and ZeroGPU: detect them, and run each generation inside `spaces.GPU` for as long as it needs.

Off Spaces nothing here is used and the `spaces` package is not needed. On ZeroGPU the GPU is attached only inside
functions decorated with `spaces.GPU`, which run in a forked worker: their arguments and results are pickled, so the
decorated function takes only plain data (the prepared inputs) and finds the model through a module-level registry
that the fork inherits.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from qvl_core.engine.types import collect
from qvl_core.settings import Limits, env_int

if TYPE_CHECKING:
    from qvl_core.engine.local import ModelSession, PreparedInputs
    from qvl_core.engine.sampling import SamplingDefaults, SamplingParams
    from qvl_core.engine.types import Chunk, GenerationRequest, GenerationStats, SessionStatus
    from qvl_core.families import FamilySpec
    from qvl_core.media.video import SampledVideo

# Duration estimate for one generation (seconds). ZeroGPU bills and schedules by the declared duration, and kills
# the call when it runs out, so the estimate errs long. Rates are conservative for 7B bf16 under transformers
# `generate` (≈ 40 tok/s single stream on an A100), prefill at a few thousand tokens per second.
ZEROGPU_BASE_SECONDS = 10
ZEROGPU_DECODE_TPS = 20.0
ZEROGPU_PREFILL_TPS = 4000.0
ZEROGPU_MIN_SECONDS = 15
MAX_ZEROGPU_SECONDS = env_int("QVL_ZEROGPU_MAX_SECONDS", 120)


def on_spaces() -> bool:
    """True inside a Hugging Face Space (the platform sets SPACE_ID)."""
    return bool(os.environ.get("SPACE_ID"))


def zero_gpu() -> bool:
    """True on ZeroGPU hardware (the platform sets SPACES_ZERO_GPU)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def gpu_duration(prompt_tokens: int, max_new_tokens: int, *, limit: int = MAX_ZEROGPU_SECONDS) -> int:
    """Seconds of GPU to ask for: fixed overhead + prefill + the longest answer allowed, within [15, limit].

    The prompt count already includes every image, video frame and document page the request carries.
    """
    estimate = ZEROGPU_BASE_SECONDS + prompt_tokens / ZEROGPU_PREFILL_TPS + max_new_tokens / ZEROGPU_DECODE_TPS
    return max(ZEROGPU_MIN_SECONDS, min(limit, math.ceil(estimate)))


# The sessions the GPU function may use, by id. A forked ZeroGPU worker inherits this dict (and the models in it).
_SESSIONS: dict[int, ModelSession] = {}


def _duration(key: int, prepared: PreparedInputs, sampling: SamplingParams) -> int:
    return gpu_duration(prepared.prompt_tokens, sampling.max_new_tokens)


def _generate_on_gpu(key: int, prepared: PreparedInputs, sampling: SamplingParams) -> Iterator[Chunk]:
    """The only code that needs the GPU: decode one prepared request, streaming chunks back."""
    yield from _SESSIONS[key].stream_prepared(prepared, sampling)


class ZeroGPUBackend:
    """A `Backend` over an in-process `ModelSession` whose generation runs inside `spaces.GPU`.

    Media decoding, resizing and the processor run outside (CPU time is free on ZeroGPU); only `generate` holds
    the GPU, for a duration computed from the prepared request.
    """

    def __init__(self, session: ModelSession) -> None:
        import spaces  # only on Spaces; imported before CUDA is touched by the caller (see app.py)

        self.session = session
        self._key = id(session)
        _SESSIONS[self._key] = session
        self.gpu_function = spaces.GPU(_generate_on_gpu, duration=_duration)

    @property
    def family(self) -> FamilySpec:
        return self.session.family

    @property
    def model_id(self) -> str:
        return self.session.model_id

    @property
    def limits(self) -> Limits:
        return self.session.limits

    def load(self) -> Any:
        return self.session.load()

    def sampling_defaults(self) -> SamplingDefaults:
        return self.session.sampling_defaults()

    def status(self) -> SessionStatus:
        from dataclasses import replace

        # GPU memory is only visible inside the GPU function on ZeroGPU; say nothing rather than guess.
        return replace(self.session.status(), gpu_memory_mb=None, device="ZeroGPU (cuda while generating)")

    def stream(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
               ) -> Iterator[Chunk]:
        prepared = self.session.prepare(request, videos=videos)
        self.session.check_context(prepared, request.sampling)  # refused before a GPU is allocated for it
        yield from self.gpu_function(self._key, prepared, request.sampling)

    def generate(self, request: GenerationRequest) -> tuple[str, GenerationStats]:
        """Run to the end and return the whole text and its stats."""
        return collect(self.stream(request))
