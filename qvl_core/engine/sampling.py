"""Sampling settings for one generation, validated against named limits."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from qvl_core.errors import UserError

# Named limits (the UI sliders and CLI flags use the same numbers). The highest max_new_tokens a request may ask
# for is the app's `Limits.max_new_tokens` (--max-new-tokens-limit), checked where the request is prepared.
MAX_TEMPERATURE = 2.0
# Below this (0 aside) a temperature is refused. Qwen2.5-VL's own generation_config says 1e-6 (sampling that is
# greedy in effect), so that value must pass; logits / temperature only overflow float32 near 1e-38.
MIN_TEMPERATURE = 1e-6
MAX_TOP_K = 1000
MIN_REPETITION_PENALTY = 1.0
MAX_REPETITION_PENALTY = 2.0
MAX_PRESENCE_PENALTY = 2.0  # and -2.0 at the low end, as OpenAI's presence_penalty
MAX_SEED = 2**32 - 1
# The one source of every sampling default (the CLI flags, the UI sliders and the API endpoints read these);
# each task module names its own max_new_tokens default next to the task. Every other default is None: the
# model's own (its checkpoint's generation_config, or the server's defaults for a served model).
DEFAULT_MAX_NEW_TOKENS = 1024
DEFAULT_SEED: int | None = None  # the UI's -1
# What a setting is when neither the user nor the checkpoint names it: transformers' own neutral values
# (a generation_config without do_sample decodes greedily).
NEUTRAL = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "presence_penalty": 0.0}
SAMPLING_FIELDS = tuple(NEUTRAL)


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. temperature 0 means greedy; None means the model's own default; seed None: non-reproducible."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = DEFAULT_SEED

    def __post_init__(self) -> None:
        # A slider or a JSON number at a whole value arrives as an int (temperature 2) or an integral float (top_k
        # 40.0), and transformers refuses a temperature that is not a float: whole-number settings become ints and
        # fractional ones floats, so every value a control allows reaches the model as the type it needs.
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("int") and isinstance(value, float) and value.is_integer():
                object.__setattr__(self, f.name, int(value))
        validate_sampling(self)
        for f in fields(self):
            value = getattr(self, f.name)
            if str(f.type).startswith("float") and value is not None:
                object.__setattr__(self, f.name, float(value))

    @property
    def greedy(self) -> bool:
        """Greedy as asked; a temperature left to the model counts as not greedy until `resolved` knows it."""
        return self.temperature == 0.0

    def user_set(self) -> dict[str, float | int]:
        """The sampling settings given explicitly (not left to the model)."""
        return {k: getattr(self, k) for k in SAMPLING_FIELDS if getattr(self, k) is not None}

    def resolved(self, defaults: SamplingDefaults) -> SamplingParams:
        """Every setting concrete: the user's where set, else the model's `defaults`, else the neutral value."""
        values = {k: NEUTRAL[k] for k in SAMPLING_FIELDS}
        values |= {k: v for k, v in defaults.values().items() if v is not None}
        values |= self.user_set()
        return replace(self, **values)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's own sampling settings; None where it names none (a served model: the server decides)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    source: str = "checkpoint"  # "checkpoint": its generation_config.json; "server": unknown, the server's own

    def values(self) -> dict[str, float | int | None]:
        return {k: getattr(self, k) for k in SAMPLING_FIELDS}


SERVER_DEFAULTS = SamplingDefaults(source="server")


def defaults_from_generation_config(gc: object) -> SamplingDefaults:
    """The sampling settings a checkpoint's generation_config names (do_sample false or absent: greedy)."""
    def number(name: str) -> float | None:
        v = getattr(gc, name, None)
        return None if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) else v

    if not getattr(gc, "do_sample", False):
        temperature: float | None = 0.0
        top_p = top_k = None
    else:
        temperature, top_p, top_k = number("temperature"), number("top_p"), number("top_k")
        # generate samples at temperature 1.0 when do_sample is set without one.
        temperature = 1.0 if temperature is None else temperature
    rep = number("repetition_penalty")
    presence = number("presence_penalty")
    return SamplingDefaults(
        temperature=temperature, top_p=top_p, top_k=None if top_k is None else int(top_k),
        repetition_penalty=rep, presence_penalty=presence)


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
    if p.temperature is not None:
        _check_range("temperature", p.temperature, 0.0, MAX_TEMPERATURE)
        if 0.0 < p.temperature < MIN_TEMPERATURE:
            raise UserError(f"temperature must be 0 (greedy) or between {MIN_TEMPERATURE} and {MAX_TEMPERATURE}, "
                            f"got {p.temperature}.")
    if p.top_p is not None:
        _check_range("top_p", p.top_p, 0.0, 1.0)
        if p.top_p == 0.0:
            raise UserError("top_p must be above 0 (use temperature 0 for greedy decoding).")
    if p.top_k is not None:
        if isinstance(p.top_k, bool) or not isinstance(p.top_k, int):
            raise UserError(f"top_k must be a whole number, got {p.top_k!r}.")
        _check_range("top_k", p.top_k, 0, MAX_TOP_K)
    if p.repetition_penalty is not None:
        _check_range("repetition_penalty", p.repetition_penalty, MIN_REPETITION_PENALTY, MAX_REPETITION_PENALTY)
    if p.presence_penalty is not None:
        _check_range("presence_penalty", p.presence_penalty, -MAX_PRESENCE_PENALTY, MAX_PRESENCE_PENALTY)
    if p.seed is not None:
        if isinstance(p.seed, bool) or not isinstance(p.seed, int):
            raise UserError(f"seed must be a whole number, got {p.seed!r}.")
        _check_range("seed", p.seed, 0, MAX_SEED)


# Every default in one object: what a request without sampling settings gets (the model's own), and what
# every surface starts from.
DEFAULT_SAMPLING = SamplingParams()

# The model cards' recommended settings, by name (Qwen3.5: thinking and instruct modes). A preset sets every
# field it names; the rest stay as they were.
SAMPLING_PRESETS: dict[str, dict[str, float | int]] = {
    "Qwen3.5 thinking": {"temperature": 1.0, "top_p": 0.95, "top_k": 20, "presence_penalty": 1.5},
    "Qwen3.5 instruct (no thinking)": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "presence_penalty": 1.5},
    "Greedy": {"temperature": 0.0},
}


def preset_sampling(name: str, base: SamplingParams = DEFAULT_SAMPLING) -> SamplingParams:
    """`base` with the named preset's settings (ValueError naming the preset if unknown)."""
    if name not in SAMPLING_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(SAMPLING_PRESETS)}; got {name!r}")
    return replace(base, **SAMPLING_PRESETS[name])


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
