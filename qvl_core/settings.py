"""Read numeric limits from QVL_* environment variables, failing with a message that names the variable."""

from __future__ import annotations

import os

from qvl_core.errors import UserError


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise UserError(f"Environment variable {name} must be a number, got {raw!r}.") from None
    if value <= 0:
        raise UserError(f"Environment variable {name} must be positive, got {raw!r}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UserError(f"Environment variable {name} must be a number, got {raw!r}.") from None
    if not value > 0:
        raise UserError(f"Environment variable {name} must be positive, got {raw!r}.")
    return value
