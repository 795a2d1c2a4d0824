"""QVL Studio entry point: `python app.py --model ID_OR_PATH` (see README for every flag)."""

import sys

from ui.launch import main

if __name__ == "__main__":
    sys.exit(main())
