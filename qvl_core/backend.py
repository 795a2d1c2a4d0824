"""The one interface every tab, API endpoint and CLI command talks to; in-process model or a serving engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .families import FamilySpec
    from .loading import LoadOptions
    from .session import Chunk, GenerationRequest, GenerationStats, SessionStatus
    from .video import SampledVideo


@runtime_checkable
class Backend(Protocol):
    """What callers may rely on. `ModelSession` (transformers, in process) is the default implementation.

    Contract shared by every implementation:
    - `stream` yields `Chunk`s; the last one carries `GenerationStats` whose `image_input_sizes` are the exact
      sizes the model saw (coordinates are mapped back with them), and closing the iterator cancels the
      generation (Gradio's Stop, a disconnected client).
    - user-caused failures raise `UserError`, everything else `GenerationError`; neither kills the backend.
    """

    @property
    def family(self) -> FamilySpec: ...

    @property
    def model_id(self) -> str: ...

    def load(self) -> object: ...

    def status(self) -> SessionStatus: ...

    def stream(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
               ) -> Iterator[Chunk]: ...

    def generate(self, request: GenerationRequest) -> tuple[str, GenerationStats]: ...


def open_backend(options: LoadOptions) -> Backend:
    """The backend the flags ask for (not yet loaded): today the in-process transformers session."""
    from .session import ModelSession

    return ModelSession(options)
