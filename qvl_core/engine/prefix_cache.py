"""Each conversation's last KV cache and the token ids it covers, so a follow-up prefills only what is new.

After a generation the in-process backend keeps the model's cache (the keys and values of every token it read
or wrote) under the request's `conversation_id`. The next request of that conversation reuses the longest
common token prefix and prefills only the rest; the answer is the one a full prefill gives (greedy: the same
tokens), because every position and every cached value is the one that prefill would compute.

When a prefix is reused (`reuse_length`):
- every image and video in the reused part must be the very one the cache saw: their placeholder tokens are the
  same ids for any picture of that size, so each is compared by a hash of its processed pixels (`media_key`);
- the cut may not fall inside an image or video, and nothing after it may be one: a new picture needs the vision
  encoder and 3D positions over the whole sequence, so such a turn is prefilled in full;
- a cache that cannot be cropped (Qwen3.5's linear-attention layers hold recurrent state) is reused only when
  the new prompt extends everything it covers exactly; a thinking template that drops earlier reasoning from
  the history changes the prompt before that point, so such a turn is prefilled in full;
- at least one new token is always prefilled: its logits start the answer.

Memory is bounded by one budget over all conversations, least recently used out first; a conversation's entry
is taken out while its request runs (nobody else can see it) and put back after. Entries are keyed by an id the
app draws for each conversation of each browser session, so one session's cache never serves another's.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from qvl_core.settings import env_int

# The budget for all conversations' caches together: a 7B model's cache is 56 KiB a token in bf16, so 4 GiB
# keeps about 75k tokens (a handful of image conversations) on a GPU; on CPU the test checkpoints' caches are
# small and system memory is shared with everything else.
DEFAULT_PREFIX_CACHE_MB = {"cuda": 4096, "cpu": 1024}
MAX_PREFIX_CACHE_MB = 1_000_000


def prefix_cache_mb(device: str) -> int:
    """The budget in MB: QVL_PREFIX_CACHE_MB if set (0 turns reuse off), else the device's default."""
    return env_int("QVL_PREFIX_CACHE_MB", DEFAULT_PREFIX_CACHE_MB["cuda" if device.startswith("cuda") else "cpu"])


def media_key(*parts: Any) -> str:
    """A short content hash of a processed image or video (pixels as bytes, sizes, frame times)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part if isinstance(part, (bytes, bytearray, memoryview)) else repr(part).encode())
    return h.hexdigest()


def media_positions(ids: Sequence[int], counts: dict[int, Sequence[tuple[int, str]]]) -> list[tuple[int, str]]:
    """(first placeholder position, key) of every image and video in `ids`, in prompt order.

    `counts` maps each placeholder token id (image, video) to that kind's media in order, as (number of its
    placeholder tokens, key). Counting tokens, not runs, keeps a Qwen3-VL video one medium although its frames'
    timestamps split its placeholders into many runs."""
    queues = {t: list(m) for t, m in counts.items()}
    left = dict.fromkeys(queues, 0)
    out: list[tuple[int, str]] = []
    for i, t in enumerate(ids):
        if t not in queues:
            continue
        if left[t] == 0:
            if not queues[t]:
                break  # more placeholders than media: stop here (nothing past this point is compared)
            n, key = queues[t].pop(0)
            left[t] = n
            out.append((i, key))
        left[t] -= 1
    return out


def reuse_length(cached: Sequence[int], new: Sequence[int], *, croppable: bool, vision_ids: Collection[int],
                 cached_media: Sequence[tuple[int, str]] = (), new_media: Sequence[tuple[int, str]] = ()) -> int:
    """How many leading tokens of `new` a cache covering `cached` can serve (0: prefill everything). Pure.

    `cached_media` / `new_media`: `media_positions` of each sequence; every medium that starts inside the shared
    part must be the same one (same position, same key) in both."""
    limit = min(len(cached), len(new) - 1)
    n = 0
    while n < limit and cached[n] == new[n]:
        n += 1
    if not croppable and n != len(cached):
        return 0  # linear-attention state cannot be rolled back: only an exact extension continues it
    if [m for m in new_media if m[0] < n] != [m for m in cached_media if m[0] < n]:
        return 0  # the same placeholder tokens, another picture: its encoder output is not the cached one
    if n == 0 or any(t in vision_ids for t in new[n:]):
        return 0  # a new image or video (or a cut inside one): its encoder output and 3D positions are not cached
    return n


def cache_nbytes(cache: Any) -> int:
    """Bytes held by a transformers cache: every tensor in its layers (keys, values, conv and recurrent states)."""
    import torch

    total, seen = 0, set()
    for layer in getattr(cache, "layers", ()):
        for value in vars(layer).values():
            items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else (
                value,)
            for t in items:
                if isinstance(t, torch.Tensor) and id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


@dataclass
class PrefixEntry:
    """One conversation's cache, the ids it covers, and the model's rope offset for them (Qwen's M-RoPE)."""

    ids: list[int]
    cache: Any
    rope_deltas: Any
    nbytes: int
    media: tuple[tuple[int, str], ...] = ()  # media_positions of `ids`

    @property
    def croppable(self) -> bool:
        return bool(getattr(self.cache, "is_croppable", True))

    def crop(self, length: int) -> None:
        """Keep the first `length` tokens (transformers crops by a negative count of tokens to remove)."""
        extra = len(self.ids) - length
        if extra > 0:
            self.cache.crop(-extra)
            self.ids = self.ids[:length]
            self.media = tuple(m for m in self.media if m[0] < length)


@dataclass(frozen=True)
class PrefixStats:
    entries: int
    used_bytes: int
    budget_bytes: int


class PrefixCache:
    """Entries by conversation id, least recently used first out when the budget is exceeded. Thread-safe."""

    def __init__(self, budget_mb: int) -> None:
        if not 0 <= budget_mb <= MAX_PREFIX_CACHE_MB:
            raise ValueError(f"budget_mb must be between 0 and {MAX_PREFIX_CACHE_MB}, got {budget_mb}")
        self.budget_bytes = budget_mb * 2**20
        self._entries: OrderedDict[str, PrefixEntry] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    def take(self, key: str) -> PrefixEntry | None:
        """Remove and return `key`'s entry (its request now owns it)."""
        with self._lock:
            return self._entries.pop(key, None)

    def put(self, key: str, entry: PrefixEntry) -> bool:
        """Keep `entry` as the most recent; evict the least recently used until within budget. False if the entry
        alone is over the budget (it is dropped)."""
        with self._lock:
            self._entries.pop(key, None)
            if entry.nbytes > self.budget_bytes:
                return False
            self._entries[key] = entry
            while sum(e.nbytes for e in self._entries.values()) > self.budget_bytes:
                self._entries.popitem(last=False)
            return True

    def forget(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        """Drop everything (the first thing to go when the GPU runs out of memory)."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> PrefixStats:
        with self._lock:
            return PrefixStats(len(self._entries), sum(e.nbytes for e in self._entries.values()), self.budget_bytes)

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._entries
