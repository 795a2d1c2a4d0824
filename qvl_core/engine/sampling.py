"""Sampling settings for one generation, validated against named limits."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from qvl_core.errors import UserError

# Named limits (the UI sliders and CLI flags use the same numbers). The highest max_new_tokens a request may ask
# for is the app's `Limits.max_new_tokens` (--max-new-tokens-limit), checked where the request is prepared.
MAX_TEMPERATURE = 2.0
# Below this (0 aside), logits / temperature overflow to inf (at ~1e-38 in float32) and sampling fails deep in
# torch; 0.01 already samples like greedy, so nothing is lost.
MIN_TEMPERATURE = 0.01
MAX_TOP_K = 1000
MIN_REPETITION_PENALTY = 1.0
MAX_REPETITION_PENALTY = 2.0
MAX_SEED = 2**32 - 1
# The one source of every sampling default (the CLI flags, the UI sliders and the API endpoints read these);
# each task module names its own max_new_tokens default next to the task.
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_TEMPERATURE = 0.0  # greedy: reproducible answers, and grounding/parsing outputs stay well-formed
DEFAULT_TOP_P = 1.0
DEFAULT_TOP_K = 0  # off
DEFAULT_REPETITION_PENALTY = 1.05
DEFAULT_SEED: int | None = None  # the UI's -1


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. temperature == 0 means greedy; seed None means non-reproducible."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    seed: int | None = DEFAULT_SEED

    def __post_init__(self) -> None:
        validate_sampling(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a number, got {value!r}.")
    if not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, got {value}.")


def validate_sampling(p: SamplingParams, *, max_new_tokens: int | None = None) -> None:
    """Raise UserError naming the first setting that is out of its limit. `max_new_tokens` is the app's limit
    (`Limits.max_new_tokens`); None checks only what holds everywhere (a whole number from 1)."""
    if isinstance(p.max_new_tokens, bool) or not isinstance(p.max_new_tokens, int):
        raise UserError(f"max_new_tokens must be a whole number, got {p.max_new_tokens!r}.")
    if max_new_tokens is not None and p.max_new_tokens > max_new_tokens:
        raise UserError(f"max_new_tokens must be between 1 and {max_new_tokens}, got {p.max_new_tokens} "
                        "(the limit is QVL_MAX_NEW_TOKENS / --max-new-tokens-limit).")
    _check_range("max_new_tokens", p.max_new_tokens, 1, max_new_tokens or p.max_new_tokens)
    _check_range("temperature", p.temperature, 0.0, MAX_TEMPERATURE)
    if 0.0 < p.temperature < MIN_TEMPERATURE:
        raise UserError(f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}, "
                        f"got {p.temperature}.")
    _check_range("top_p", p.top_p, 0.0, 1.0)
    if p.top_p == 0.0:
        raise UserError("top_p must be above 0 (use temperature 0 for greedy decoding).")
    if isinstance(p.top_k, bool) or not isinstance(p.top_k, int):
        raise UserError(f"top_k must be a whole number, got {p.top_k!r}.")
    _check_range("top_k", p.top_k, 0, MAX_TOP_K)
    _check_range("repetition_penalty", p.repetition_penalty,
                 MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY)
    if p.seed is not None:
        if isinstance(p.seed, bool) or not isinstance(p.seed, int):
            raise UserError(f"seed must be a whole number, got {p.seed!r}.")
        _check_range("seed", p.seed, 0, MAX_SEED)


# Every default in one object: what a request without sampling settings gets, and what every surface shows.
DEFAULT_SAMPLING = SamplingParams()


def sampling_from_values(**values: object) -> SamplingParams:
    """Build SamplingParams from loosely typed UI/API values (floats from sliders, None for unset).

    Whole-number settings given as integral floats (slider values) are accepted; anything else
    goes through the same validation and its message.
    """
    clean: dict[str, object] = {}
    for key, value in values.items():
        if value is None or value == "":
            continue
        if key in ("max_new_tokens", "top_k", "seed") and isinstance(value, float) and value.is_integer():
            value = int(value)
        clean[key] = value
    if clean.get("seed") == -1:  # -1 is the UI's "random"
        clean["seed"] = None
    try:
        return SamplingParams(**clean)  # type: ignore[arg-type]
    except TypeError as exc:
        raise UserError(f"Unknown sampling setting: {exc}.") from None
