"""`python -m qvl_core.tiny DIR`: the test-checkpoint builder's command line (it lives in `qvl_core.testing.tiny`)."""

from qvl_core.testing.tiny import main

if __name__ == "__main__":
    raise SystemExit(main())
