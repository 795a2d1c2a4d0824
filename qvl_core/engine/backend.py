"""The one interface every tab, API endpoint and CLI command talks to; in-process model or a serving engine."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from qvl_core.engine.loading import LoadOptions
from qvl_core.engine.openai import DEFAULT_API_TIMEOUT_S
from qvl_core.engine.sampling import SamplingDefaults
from qvl_core.engine.types import Chunk, GenerationRequest, GenerationStats, SessionStatus
from qvl_core.errors import UserError
from qvl_core.settings import Limits

if TYPE_CHECKING:
    from qvl_core.families import FamilySpec
    from qvl_core.media.video import SampledVideo


@runtime_checkable
class Backend(Protocol):
    """What callers may rely on. `ModelSession` (transformers, in process) is the default implementation.

    Contract shared by every implementation:
    - `stream` yields `Chunk`s; the last one carries `GenerationStats` whose `image_input_sizes` are the exact
      sizes the model saw (coordinates are mapped back with them), and closing the iterator cancels the
      generation (Gradio's Stop, a disconnected client).
    - every request is checked against `limits` (max new tokens, image pixels, video duration) before any
      model work, with a `UserError` naming the limit; callers read the same object for their own checks.
    - user-caused failures raise `UserError`, everything else `GenerationError`; neither kills the backend.
    - `close()` is optional: a backend holding connections (OpenAIBackend's HTTP pool) has one, and whoever
      opened the backend calls `close_backend` when it shuts down.
    """

    @property
    def family(self) -> FamilySpec: ...

    @property
    def limits(self) -> Limits: ...  # the app's input limits; every request is checked against them

    @property
    def model_id(self) -> str: ...

    def load(self) -> object: ...

    def status(self) -> SessionStatus: ...

    def sampling_defaults(self) -> SamplingDefaults: ...  # the model's own settings a request starts from

    def stream(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
               ) -> Iterator[Chunk]: ...

    def generate(self, request: GenerationRequest) -> tuple[str, GenerationStats]: ...


BACKEND_KINDS = ("transformers", "openai")


@dataclass(frozen=True)
class BackendOptions:
    """Which backend to open and how: the in-process model (`load`) or a server (`api_*`, served `load.model`)."""

    load: LoadOptions = field(default_factory=LoadOptions)
    kind: str = "transformers"  # transformers (in process) | openai (an OpenAI-compatible server)
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed, logged or shown
    family: str | None = None  # for a served model whose family its name does not tell
    api_timeout_s: float = DEFAULT_API_TIMEOUT_S
    api_flavor: str = "auto"  # auto | vllm | transformers | openai: which extensions the server understands
    limits: Limits = field(default_factory=Limits.from_env)  # read when the options are built, not at import

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise UserError(f"backend must be one of {', '.join(BACKEND_KINDS)}; got {self.kind!r}.")


def open_backend(options: LoadOptions | BackendOptions) -> Backend:
    """The backend the flags ask for, not yet loaded: the in-process session or an OpenAI-compatible client."""
    if isinstance(options, LoadOptions):
        options = BackendOptions(load=options)
    if options.kind == "openai":
        from qvl_core.engine.openai import OpenAIBackend

        return OpenAIBackend(options.load.model or "", options.api_base or "", api_key=options.api_key,
                             family=options.family, timeout_s=options.api_timeout_s, flavor=options.api_flavor,
                             limits=options.limits)
    from qvl_core.engine.local import ModelSession

    return ModelSession(options.load, limits=options.limits)


def close_backend(backend: object) -> None:
    """Release what a backend holds (connections); one without a `close` method holds nothing to release."""
    close = getattr(backend, "close", None)
    if callable(close):
        close()
