"""Pure functions: a Qwen-VL answer about a video -> the time spans it names (seconds), chapters and chip segments."""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import json_repair

from qvl_core.parse.jsonscan import MAX_JSON_DEPTH, scan_segment
from qvl_core.parse.thinking import answer_part

# Named limits.
ROUND_DIGITS = 6  # seconds are rounded so "01:32.40" is exactly 92.4, not 92.39999999999999
LINK_TOLERANCE_S = 1e-6  # a timestamp matches a span end when it is this close
CONTEXT_CHARS = 40  # how far back context words ("between", "the 80s", a JSON key) are looked for

# Keys of dense-caption items (compared lower-cased). Order matters: the first present key wins.
_START_KEYS = ("start_time", "start", "begin_time", "begin", "start_timestamp", "start_sec", "start_seconds", "from")
_END_KEYS = ("end_time", "end", "end_timestamp", "end_sec", "end_seconds", "stop", "to")
_SPAN_KEYS = ("timestamp", "timestamps", "time", "time_range", "timerange", "timespan", "span", "segment", "interval")
_TEXT_KEYS = (
    "description", "event", "caption", "text", "content", "sentence", "summary", "action", "activity", "label",
    "title",
)
# Seconds per unit word; single letters "m"/"h" only count inside a compound ("1m30s", "1h 2m"), because a lone
# "5m" is as likely metres and "720h" a resolution.
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# Chinese units, as the models write them in Chinese answers ("<5.6秒>", "1分30秒", "2小时"), mapped to the letter
# they stand for. A lone "分" is also a score ("5分") and a lone "时" an hour of the day: weak, like "m" and "h".
_CJK_UNITS = {"秒钟": "s", "秒": "s", "分钟": "m", "分": "m", "小时": "h", "时": "h"}
_CJK_WEAK = frozenset({"分", "时"})
# Han characters and CJK punctuation are word characters to `\w`, but in Chinese they sit right against numbers.
_CJK = "\u3000-\u303f\u4e00-\u9fff\uff00-\uffef"

# One time atom. Either a colon form ("01:32.40", "1:02:03", "12:34.56s", "00:00:01,500") or a number with an
# optional unit. A number without a unit ("64.0") is only a time when a range phrase lends it the unit of its other
# end; the lookbehind keeps digits inside words, decimals and thousands ("v2", "1,000") from starting an atom.
_ATOM_RE = re.compile(
    r"""
    (?:(?<![\w.:])|(?<=\d[hm])|(?<=[{cjk}]))(?<!\d,)
    (?:
      (?P<colon>
        (?: (?P<h>\d{1,3}):(?P<hm>[0-5]\d):(?P<hs>[0-5]\d) | (?P<m>\d{1,3}):(?P<s>[0-5]\d) )
        (?P<frac>\.\d+|,\d{3}(?!\d))?
        (?!\d|:\d|\.\d|[ ]?[ap]\.?m\b)
        (?:[ ]?(?:seconds?|secs?|s)(?![a-z]))?
      )
      |
      (?P<num>\d+(?:\.\d+)?)
      (?:[ \u00a0]?(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|秒钟|秒|分钟|分|小时|时)(?![a-z]))?
    )
    """.replace("{cjk}", _CJK),
    re.IGNORECASE | re.VERBOSE,
)
# What may stand between the two ends of a range ("and" only after "between").
_RANGE_SEP_RE = re.compile(
    r"(?:[ \t]*(?:-->|->|--|-|–|—|~|→|～|至|到)[ \t]*|[ \t]+(?:to|until|till|through|and)[ \t]+)", re.IGNORECASE
)
_BETWEEN_RE = re.compile(r"\bbetween[ \t]+\Z", re.IGNORECASE)
# What may join the parts of a compound duration: "1h 2m 3s", "1 min, 30 s", "2 minutes and 5 seconds".
_COMPOUND_GAP_RE = re.compile(r"[ \t]*(?:,[ \t]*)?(?:and[ \t]+)?", re.IGNORECASE)
_DECADE_CONTEXT_RE = re.compile(r"(?:['’]|\b(?:the|early|late|mid|mid-)[ \t]*)\Z", re.IGNORECASE)
# A bare number followed by one of these is not a time even inside a range ("1080p", "50%", "2.5x").
_BARE_BLOCKERS_RE = re.compile(r"[\w%°$€£]|[.,]\d")
# A JSON value of a time key: `"start_time": 12.5` (numbers in seconds).
_JSON_TIME_VALUE_RE = re.compile(
    r'"(?:' + "|".join(re.escape(k) for k in (*_START_KEYS, *_END_KEYS, *_SPAN_KEYS)) + r')"\s*:\s*"?\[?\s*\Z',
    re.IGNORECASE,
)
# Chinese full stops end a sentence with no space after them.
_SENTENCE_BREAK_RE = re.compile(r"\n\s*|(?<=[.!?])\s+|(?<=[。！？])\s*")
# Bullets and markup that may precede a timestamp that opens a line: "- ", "1. ", "**", "[".
_LEAD_RE = re.compile(r"\s*(?:[-*+•]\s+|\d{1,3}[.)]\s+)?[\s*_#\[(<]*")
_TRAIL_PUNCT = " \t*_:-–—,;|)]>：，"
# ...and what must follow it for the time to be a label: "00:12: text", "[00:12] text", "00:12 - 00:20 | text".
_LABEL_END_RE = re.compile(r"[ \t]*[*_]*[ \t]*[:\-–—|)\]>：]")
_JSON_START_RE = re.compile(r"[\[{]\s*[\[{\"]")
_MARKER_CLOSE_RE = re.compile(r"[ \t]*>")


@dataclass(frozen=True)
class TimeSpan:
    """A moment or an interval of the video the model named, in seconds, with the words it belongs to."""

    start: float  # seconds
    end: float | None  # seconds, None for a single instant
    text: str  # the event description (JSON) or the sentence the time belongs to (prose), stripped

    def to_json(self) -> dict:
        """A plain dict for JSON output: {"start": .., "end": .., "text": ..}."""
        return {"start": self.start, "end": self.end, "text": self.text}


# ---- atoms: every time expression in a text ---------------------------------------------------------------------
@dataclass
class _Atom:
    """One number or colon form; `seconds` is None until it is known to be a time."""

    start: int
    end: int
    kind: str  # "colon" | "unit" | "bare" | "json" (a bare number that a JSON time key names)
    number: float  # the magnitude as written (bare and unit atoms)
    mult: float  # seconds per unit for unit atoms (lent to a bare partner), 0 otherwise
    rank: int  # 3 hours, 2 minutes, 1 seconds, 0 no unit (compounds must descend)
    weak: bool  # a lone single-letter "m"/"h" unit: only valid inside a compound
    seconds: float | None


@dataclass
class _Item:
    """A resolved time in a text: one atom (instant) or two (range)."""

    atoms: tuple[_Atom, ...]
    start: float
    end: float | None
    negative: bool


def _finite(x: float) -> bool:
    return math.isfinite(x)


def _colon_seconds(m: re.Match[str]) -> float:
    if m.group("h") is not None:
        total = int(m.group("h")) * 3600 + int(m.group("hm")) * 60 + int(m.group("hs"))
    else:
        total = int(m.group("m")) * 60 + int(m.group("s"))
    frac = m.group("frac")
    if frac:
        total += float("0." + frac[1:])
    return float(total)


def _raw_atoms(text: str) -> list[_Atom]:
    """Every candidate atom, left to right, before compounds and ranges are resolved."""
    atoms: list[_Atom] = []
    for m in _ATOM_RE.finditer(text):
        if m.group("colon") is not None:
            secs = _colon_seconds(m)
            atoms.append(_Atom(m.start(), m.end(), "colon", secs, 0.0, 0, False, secs))
            continue
        number = float(m.group("num"))
        unit = m.group("unit")
        if unit is None:
            if _BARE_BLOCKERS_RE.match(text, m.end()) or text.startswith(":", m.end()):
                continue  # "1080p", "50%", "12:" (a broken colon form)
            atoms.append(_Atom(m.start(), m.end(), "bare", number, 0.0, 0, False, None))
            continue
        letter = _CJK_UNITS.get(unit) or unit[0].lower()
        if letter == "s" and unit.lower() == "s" and _is_decade(text, m):
            continue  # "1990s", "the 80s", "'70s"
        mult = _UNIT_SECONDS[letter]
        rank = {"s": 1, "m": 2, "h": 3}[letter]
        weak = (len(unit) == 1 and letter in "mh") or unit in _CJK_WEAK
        atoms.append(_Atom(m.start(), m.end(), "unit", number, mult, rank, weak, number * mult))
    return atoms


def _is_decade(text: str, m: re.Match[str]) -> bool:
    """'1990s' and 'the 80s' are decades, not seconds: integer, ends in 0, 's' written right after it."""
    num = m.group("num")
    if "." in num or not num.endswith("0") or m.group(0)[len(num)] == " ":
        return False
    if len(num) == 4 and 1000 <= int(num) <= 2099:
        return True
    return len(num) == 2 and bool(_DECADE_CONTEXT_RE.search(text, max(0, m.start() - CONTEXT_CHARS), m.start()))


def _merge_compounds(text: str, atoms: list[_Atom]) -> list[_Atom]:
    """'1h 2m 3.5s' -> one unit atom; the parts must descend (hours > minutes > seconds)."""
    out: list[_Atom] = []
    for atom in atoms:
        prev = out[-1] if out else None
        if (
            prev is not None
            and prev.kind == "unit"
            and atom.kind == "unit"
            and prev.rank > atom.rank
            and prev.number.is_integer()
            and _COMPOUND_GAP_RE.fullmatch(text, prev.end, atom.start)
            and not ("and" in text[prev.end:atom.start].lower() and _after_between(text, prev.start))
        ):
            prev.end = atom.end
            prev.seconds = (prev.seconds or 0.0) + (atom.seconds or 0.0)
            # A compound is a valid time even when built from single letters ("1h30m"); it lends seconds.
            prev.number, prev.mult, prev.rank, prev.weak = prev.seconds, 1.0, atom.rank, False
            continue
        out.append(atom)
    return out


def _is_negative(text: str, pos: int) -> bool:
    """'-5 seconds' at the start of a word: a minus sign, not a range dash."""
    if pos == 0 or text[pos - 1] not in "-−":
        return False
    return pos < 2 or text[pos - 2] in " \t\n([{:=,\"'"


def _marker_bounds(text: str, atom: _Atom) -> tuple[int, int]:
    """Widen '<12.3 seconds>' (Qwen3-VL's frame time markers) to include the angle brackets."""
    if atom.start > 0 and text[atom.start - 1] == "<":
        m = _MARKER_CLOSE_RE.match(text, atom.end)
        if m:
            return atom.start - 1, m.end()
    return atom.start, atom.end


def _scan(text: str) -> list[_Item]:
    """Every time in `text`, left to right: ranges first ('X - Y', 'from X to Y', 'between X and Y'), else instants."""
    atoms = [a for a in _merge_compounds(text, _raw_atoms(text)) if not a.weak]
    for a in atoms:  # `"start_time": 12.5` — a bare number that a JSON time key names
        if a.kind == "bare" and _JSON_TIME_VALUE_RE.search(text, max(0, a.start - CONTEXT_CHARS), a.start):
            a.kind, a.seconds, a.mult = "json", a.number, 1.0
    items: list[_Item] = []
    i = 0
    while i < len(atoms):
        a = atoms[i]
        b = atoms[i + 1] if i + 1 < len(atoms) else None
        if b is not None and _is_range_gap(text, a, b):
            sa, sb = _range_seconds(a, b)
            if sa is not None and sb is not None:
                items.append(_Item((a, b), sa, sb, _is_negative(text, a.start)))
                i += 2
                continue
        if a.seconds is not None:
            items.append(_Item((a,), a.seconds, None, _is_negative(text, a.start)))
        i += 1
    return [it for it in items if _finite(it.start) and (it.end is None or _finite(it.end))]


def _is_range_gap(text: str, a: _Atom, b: _Atom) -> bool:
    gap = text[a.end:b.start]
    if not _RANGE_SEP_RE.fullmatch(gap):
        return False
    return gap.strip().lower() != "and" or _after_between(text, a.start)


def _after_between(text: str, pos: int) -> bool:
    """'between X and Y': the word right before X makes 'and' a range separator (and not a compound joiner)."""
    return bool(_BETWEEN_RE.search(text, max(0, pos - CONTEXT_CHARS), pos))


def _range_seconds(a: _Atom, b: _Atom) -> tuple[float | None, float | None]:
    """Both ends in seconds, a bare end borrowing the unit of the other ('64.0 - 72.0 seconds'); else (None, None).

    Only a worded unit is lent: '00:12 - 15' stays the instant 00:12, since 15 could mean 00:15 or 15 s.
    """
    if a.seconds is not None and b.seconds is not None:
        return a.seconds, b.seconds
    if a.kind == "bare" and b.kind == "unit":
        a.seconds = a.number * b.mult
        return a.seconds, b.seconds
    if b.kind == "bare" and a.kind == "unit":
        b.seconds = b.number * a.mult
        return a.seconds, b.seconds
    return None, None


# ---- public: single timestamps -----------------------------------------------------------------------------------
def parse_timestamp(token: str) -> float | None:
    """One time expression -> seconds, or None when it is not exactly one non-negative time.

    Accepts what `parse_time_spans` reads plus what only a known time field holds: a bare number ("12.5", taken as
    seconds) and a lone single-letter unit ("5m", "2h"). Never raises.
    """
    if not isinstance(token, str):
        return None
    s = token.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
    if not s or len(s) > 64:
        return None
    atoms = _merge_compounds(s, _raw_atoms(s))
    if len(atoms) != 1 or atoms[0].start != 0 or atoms[0].end != len(s):
        return None
    a = atoms[0]
    secs = a.number if a.kind == "bare" else a.seconds
    if secs is None or not _finite(secs) or secs < 0:
        return None
    return round(secs, ROUND_DIGITS)


def format_timestamp(seconds: float) -> str:
    """Seconds -> a chip label: 'mm:ss.f' under an hour ('01:32.4'), 'h:mm:ss' from an hour on ('1:02:05')."""
    try:  # any real number (int, float, numpy scalar), but not a string that happens to hold one
        value = math.nan if isinstance(seconds, (str, bytes, bool)) else float(seconds)
    except (TypeError, ValueError):
        value = math.nan
    if not _finite(value) or value < 0:
        raise ValueError(f"seconds must be a finite, non-negative number, got {seconds!r}")
    seconds = value
    tenths = math.floor(seconds * 10 + 0.5)
    if tenths < 36000:
        minutes, rest = divmod(tenths, 600)
        return f"{minutes:02d}:{rest // 10:02d}.{rest % 10}"
    whole = math.floor(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


# ---- prose --------------------------------------------------------------------------------------------------------
def _sentence_bounds(text: str) -> tuple[list[int], list[int]]:
    starts, ends = [0], []
    for m in _SENTENCE_BREAK_RE.finditer(text):
        ends.append(m.start())
        starts.append(m.end())
    ends.append(len(text))
    return starts, ends


def _sentence_text(text: str, bounds: tuple[list[int], list[int]], item: _Item, cache: dict[int, str]) -> str:
    """The sentence around the item; when the sentence opens with the time ('00:12 - 00:20: a man…'), the rest."""
    starts, ends = bounds
    k = bisect.bisect_right(starts, item.atoms[0].start) - 1
    s0, s1 = starts[k], ends[k]
    if k not in cache:  # one long sentence may hold thousands of times: strip it once
        cache[k] = text[s0:s1].strip()
    sentence = cache[k]
    first, last = item.atoms[0], item.atoms[-1]
    lead = _LEAD_RE.match(text, s0, first.start)
    if lead is not None and lead.end() == first.start and _LABEL_END_RE.match(text, last.end, s1):
        rest = text[last.end:s1].lstrip(_TRAIL_PUNCT).strip()
        if rest:
            return rest
    return sentence


def _prose_spans(text: str, skip: Iterable[tuple[int, int]] = ()) -> Iterator[tuple[int, float, float | None, str]]:
    """(position, start, end, sentence) for each time in prose, leaving out the character ranges in `skip`."""
    items = _scan(text)
    if not items:
        return
    bounds = _sentence_bounds(text)
    cache: dict[int, str] = {}
    for it in items:
        pos = it.atoms[0].start
        if it.negative or any(lo <= pos < hi for lo, hi in skip):
            continue
        yield pos, it.start, it.end, _sentence_text(text, bounds, it, cache)


# ---- JSON ---------------------------------------------------------------------------------------------------------
def _json_regions(text: str) -> Iterator[tuple[int, int, bool]]:
    """(start, end, closed) of each JSON-looking list or object: a bracket followed by a quote or another bracket.

    An unclosed one runs to the end of the text (the model ran out of tokens). Nesting deeper than MAX_JSON_DEPTH
    is not a caption list; such a region is skipped (left to the prose reader) rather than handed to the parsers.
    """
    pos = 0
    while True:
        m = _JSON_START_RE.search(text, pos)
        if m is None:
            return
        seg = scan_segment(text, m.start())
        if not seg.too_deep:
            yield seg.start, seg.end, seg.closed
        pos = seg.end


def _complete_prefix(s: str) -> str | None:
    """A truncated JSON text cut after its last complete item (json_repair then closes the brackets).

    Complete items are: an object that is an element of a list (at any depth, so `{"events": [{..}, {..` keeps its
    finished events), any element of the top-level container, and a finished string value of a top-level object
    (Qwen3-VL's `{"00:23.00 - 00:48.00": "...", "00:48.00 - 01:` keeps its first entry). None when nothing is.
    """
    stack: list[str] = []
    in_str = esc = False
    last_sig = ""  # the last non-space character outside strings
    str_after = ""  # last_sig when the current string opened (":" means it is a value)
    boundary: int | None = None
    for i, ch in enumerate(s):
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
                if len(stack) == 1 and stack[0] == "{" and str_after == ":":
                    boundary = i + 1
                last_sig = '"'
            continue
        if ch == '"':
            in_str, str_after = True, last_sig
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}":
            closed = stack.pop() if stack else ch
            if not stack:
                return s[: i + 1]
            if len(stack) == 1 or (closed == "{" and stack[-1] == "["):
                boundary = i + 1
        elif ch == "," and len(stack) == 1:
            boundary = i
        if not ch.isspace():
            last_sig = ch
    return s[:boundary] if boundary is not None else None


def _load_json(s: str) -> tuple[list | dict | None, bool]:
    """(value, strict): strict JSON first, then json_repair (trailing commas, single quotes, unclosed brackets)."""
    try:
        obj = json.loads(s)
        return (obj, True) if isinstance(obj, (list, dict)) else (None, False)
    except (ValueError, RecursionError):
        pass
    try:
        obj = json_repair.repair_json(s, return_objects=True)
    # json_repair is best effort on arbitrary model text; a failure inside it only means "not JSON",
    # and the caller then reads the same characters as prose.
    except (ValueError, TypeError, IndexError, KeyError, AttributeError, RecursionError):
        return None, False
    return (obj, False) if isinstance(obj, (list, dict)) else (None, False)


def _value_seconds(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v) if _finite(float(v)) else None
    if isinstance(v, str):
        return parse_timestamp(v)
    return None


def _string_span(s: str) -> tuple[float, float | None] | None:
    """A string that names exactly one time or range ('00:23.00 - 00:48.00', '12.5') -> (start, end)."""
    single = parse_timestamp(s)
    if single is not None:
        return single, None
    items = [it for it in _scan(s) if not it.negative]
    if len(items) == 1:
        return items[0].start, items[0].end
    return None


def _value_span(v: object) -> tuple[float, float | None] | None:
    if isinstance(v, str):
        return _string_span(v)
    if isinstance(v, (list, tuple)) and 1 <= len(v) <= 2:
        ends = [_value_seconds(x) for x in v]
        if ends[0] is None:
            return None
        return ends[0], ends[1] if len(ends) == 2 else None
    secs = _value_seconds(v)
    return (secs, None) if secs is not None else None


def _item_text(d: dict) -> str:
    for key in _TEXT_KEYS:
        for k, v in d.items():
            if isinstance(k, str) and k.strip().lower() == key and isinstance(v, str):
                return v.strip()
    return ""


def _item_span(d: dict) -> tuple[float, float | None] | None:
    """A dense-caption item: start/end keys, or one key holding a range ('timestamp': '00:01 - 00:05' or [1, 5])."""
    low = {k.strip().lower(): v for k, v in d.items() if isinstance(k, str)}
    start_key = next((k for k in _START_KEYS if k in low), None)
    if start_key is not None:
        start = _value_seconds(low[start_key])
        if start is None:
            return None
        end_key = next((k for k in _END_KEYS if k in low), None)
        end = _value_seconds(low[end_key]) if end_key is not None else None
        return start, end
    span_key = next((k for k in _SPAN_KEYS if k in low), None)
    return _value_span(low[span_key]) if span_key is not None else None


def _walk(obj: object, depth: int = 0) -> Iterator[tuple[float, float | None, str]]:
    """(start, end, text) for every dense-caption item or time-keyed entry in a parsed JSON value."""
    if depth > MAX_JSON_DEPTH:
        return
    if isinstance(obj, list):
        for x in obj:
            yield from _walk(x, depth + 1)
        return
    if not isinstance(obj, dict):
        return
    span = _item_span(obj)
    if span is not None:
        yield span[0], span[1], _item_text(obj)
        return
    for k, v in obj.items():
        key_span = _key_span(k)
        if key_span is not None:  # Qwen3-VL: {"00:23.00 - 00:48.00": "a man ..."}
            text = v.strip() if isinstance(v, str) else _item_text(v) if isinstance(v, dict) else ""
            yield key_span[0], key_span[1], text
        elif isinstance(v, (list, dict)):
            yield from _walk(v, depth + 1)


def _key_span(k: object) -> tuple[float, float | None] | None:
    """A key that names exactly one time or range; bare numbers ('1', '2') are list indices, not times."""
    if not isinstance(k, str) or len(k) > 200:
        return None
    items = [it for it in _scan(k) if not it.negative]
    return (items[0].start, items[0].end) if len(items) == 1 else None


def _strings(obj: object, depth: int = 0) -> Iterator[str]:
    if depth > MAX_JSON_DEPTH:
        return
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, list):
        for x in obj:
            yield from _strings(x, depth + 1)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v, depth + 1)


# ---- public: spans ------------------------------------------------------------------------------------------------
def parse_time_spans(text: str, *, duration: float | None = None) -> list[TimeSpan]:
    """Every time the answer names, as spans in order of appearance, de-duplicated; [] when there is none.

    Reads prose ('happens in 64.0 - 72.0 seconds', 'from 01:32.40 to 01:35.60', 'at 00:12', '3.2s', '<12.3 seconds>')
    and JSON (dense captions with start_time/end_time, Qwen3-VL's {"00:23.00 - 00:48.00": "..."}), fenced or not,
    with trailing commas or cut off mid-list (only complete items are kept). Reversed ranges are swapped, negative
    times dropped; with `duration`, spans starting after it are dropped and ends clamped to it. Two spans with the
    same start and end are one span (the first wins). Never raises for any text.
    """
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, (int, float)) or not _finite(duration) or duration < 0
    ):
        raise ValueError(f"duration must be a finite number of seconds >= 0 or None, got {duration!r}")
    if not text:
        return []
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    text = answer_part(text)  # a time the model weighed in its reasoning is not its answer

    found: list[tuple[int, float, float | None, str]] = []  # (position, start, end, text)
    structured: list[tuple[int, int]] = []
    for lo, hi, closed in _json_regions(text):
        chunk = text[lo:hi] if closed else _complete_prefix(text[lo:hi])
        obj, strict = _load_json(chunk) if chunk else (None, False)
        if obj is None:
            continue  # not JSON after all: its characters are read as prose below
        spans = list(_walk(obj))
        if not spans and strict:  # valid JSON without time fields: read its strings ({"answer": "at 00:12 ..."})
            spans = [(s, e, t) for string in _strings(obj) for _, s, e, t in _prose_spans(string)]
        elif not spans:
            continue  # repaired guesswork with no time fields: the raw characters are read as prose instead
        # Parsed JSON is read only through its structure: a bad item (`"start_time": NaN`) or the cut-off tail of a
        # truncated list is dropped, never half-read as prose.
        structured.append((lo, hi))
        found.extend((lo, s, e, t) for s, e, t in spans)
    found.extend(_prose_spans(text, structured))
    found.sort(key=lambda f: f[0])  # stable: items of one JSON region keep their order

    out: list[TimeSpan] = []
    seen: set[tuple[float, float | None]] = set()
    for _, start, end, span_text in found:
        span = _normalise(start, end, span_text, duration)
        if span is not None and (span.start, span.end) not in seen:
            seen.add((span.start, span.end))
            out.append(span)
    return out


def _normalise(start: float, end: float | None, text: str, duration: float | None) -> TimeSpan | None:
    if not _finite(start) or start < 0 or (end is not None and (not _finite(end) or end < 0)):
        return None
    if end is not None and end < start:
        start, end = end, start
    if duration is not None:
        if start > duration:
            return None
        if end is not None and end > duration:
            end = float(duration)
    return TimeSpan(
        round(float(start), ROUND_DIGITS), None if end is None else round(float(end), ROUND_DIGITS), text.strip()
    )


def spans_to_chapters(spans: Iterable[TimeSpan]) -> list[dict]:
    """One table row per span, same order: {"start": "01:32.4", "end": "01:35.6", "duration": "00:03.2", "text"}.

    An instant has "" as end and duration. Row i is spans[i], so a UI can seek with the span's own seconds.
    """
    rows = []
    for span in spans:
        has_end = span.end is not None
        rows.append({
            "start": format_timestamp(span.start),
            "end": format_timestamp(span.end) if has_end else "",
            "duration": format_timestamp(max(0.0, span.end - span.start)) if has_end else "",
            "text": span.text,
        })
    return rows


def link_timestamps(text: str, spans: Iterable[TimeSpan] | None = None) -> list[tuple[str, float | None]]:
    """Split text into (segment, seconds) pieces: each time expression is its own piece, the rest has None.

    ''.join(piece for piece, _ in result) == text always. With `spans`, only times equal to a span's start or end
    become pieces with seconds (so times dropped by a `duration` are left as plain text). A range gives two
    pieces ('01:32.40', ' - ', '01:35.60'); '<12.3 seconds>' is one piece, brackets included.
    """
    if not text:
        return []
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    wanted: list[float] | None = None
    if spans is not None:
        wanted = [t for sp in spans for t in (sp.start, sp.end) if t is not None]
    pieces: list[tuple[str, float | None]] = []
    pos = 0
    for item in _scan(text):
        if item.negative:
            continue
        for atom in item.atoms:
            secs = atom.seconds
            if secs is None or secs < 0:
                continue
            secs = round(secs, ROUND_DIGITS)
            if wanted is not None and not any(abs(secs - w) <= LINK_TOLERANCE_S for w in wanted):
                continue
            lo, hi = _marker_bounds(text, atom)
            if lo < pos:
                continue
            if lo > pos:
                _append_plain(pieces, text[pos:lo])
            pieces.append((text[lo:hi], secs))
            pos = hi
    if pos < len(text):
        _append_plain(pieces, text[pos:])
    return pieces


def _append_plain(pieces: list[tuple[str, float | None]], s: str) -> None:
    if pieces and pieces[-1][1] is None:
        pieces[-1] = (pieces[-1][0] + s, None)
    else:
        pieces.append((s, None))


__all__ = [
    "TimeSpan",
    "format_timestamp",
    "link_timestamps",
    "parse_time_spans",
    "parse_timestamp",
    "spans_to_chapters",
]
