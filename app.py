"""QVL Studio entry point: `python app.py --model ID_OR_PATH` (see README for every flag), or as a Hugging Face Space.

On a Space the app is built at import (the model loaded, and on ZeroGPU moved to CUDA, as the platform requires)
and exposed as `demo`; elsewhere importing this file does nothing heavy.
"""

import sys

from qvl_core.engine.zerogpu import on_spaces, zero_gpu

if zero_gpu():
    import spaces  # noqa: F401  ZeroGPU emulates CUDA at startup: it must be imported before torch

if on_spaces():
    from ui.space import build_space

    demo, backend, launch_settings = build_space()

if __name__ == "__main__":
    if on_spaces():
        demo.launch(**launch_settings)
    else:
        from ui.launch import main

        sys.exit(main())
