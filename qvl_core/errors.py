"""Error types: `UserError` is the one a person can fix; its message is shown to them verbatim."""

from __future__ import annotations


class UserError(ValueError):
    """A problem with what the user asked for (bad file, value over a limit, unknown model).

    The message must name the problem and, where there is one, the limit that was broken.
    The UI shows it as is; the CLI prints it on one line and exits non-zero.
    """


class ModelLoadError(UserError):
    """The model could not be loaded; the message says how to fix it (e.g. pass a local folder)."""


class GenerationError(RuntimeError):
    """Generation failed inside the model for a reason the user cannot fix by changing input."""
