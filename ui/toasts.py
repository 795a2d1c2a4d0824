"""An error as one toast, without failing the event: a failed event badges every output "Error"."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

import gradio as gr
from gradio.context import LocalContext

# As long as Gradio shows a raised gr.Error.
TOAST_SECONDS = 10


def error_toast(message: str) -> bool:
    """Show `message` as an error toast from inside an event; False outside one (a direct call, a test)."""
    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    if blocks is None or event_id is None:
        return False
    # Toasts render their text as HTML: a file name like "<b>.png" is shown as written.
    blocks._queue.log_message(event_id=event_id, log=html.escape(message, quote=False), title="Error",
                              level="error", duration=TOAST_SECONDS, visible=True)
    return True


def shown_errors(steps: Iterator[Any], cleared: tuple) -> Iterator[Any]:
    """`steps`, but an error that ends them is one toast and `cleared` becomes the outputs.

    A raised gr.Error puts a red "Error" badge on every output of the event, the editable prompt included,
    over the previous run's results, which then look current. Outside an event (a direct call) it is raised
    as before. Closing this iterator closes `steps` (that is how Stop reaches the generation).
    """
    with contextlib.closing(steps):
        try:
            yield from steps
        except gr.Error as exc:
            if not error_toast(str(exc.message)):
                raise
            yield cleared
