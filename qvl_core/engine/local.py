"""Owns the one model and processor, one GPU lock, and streams generations; knows nothing about Gradio."""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from qvl_core.engine.decoding import IncrementalDecoder
from qvl_core.engine.inputs import prepare_media, request_image_budget
from qvl_core.engine.literal import guard_messages, place_markers, splice_texts
from qvl_core.engine.loading import LoadedModel, LoadOptions, load_model
from qvl_core.engine.messages import MessagePlan
from qvl_core.engine.prefix_cache import (
    PrefixCache,
    PrefixEntry,
    cache_nbytes,
    media_key,
    media_positions,
    prefix_cache_mb,
    reuse_length,
)
from qvl_core.engine.sampling import SamplingDefaults, SamplingParams, defaults_from_generation_config
from qvl_core.engine.seeded import sampling_processors
from qvl_core.engine.thinking import (
    DEFAULT_THINKING_BUDGET,
    ReasoningGuard,
    ThinkingSupport,
    opens_reasoning,
    thinking_support,
)
from qvl_core.engine.types import Chunk, FinishReason, GenerationRequest, GenerationStats, SessionStatus, collect
from qvl_core.errors import GenerationError, UserError
from qvl_core.families import FamilySpec
from qvl_core.media.images import PixelBudget, PreparedImage
from qvl_core.media.video import SampledVideo
from qvl_core.parse.thinking import ReasoningSplitter
from qvl_core.settings import Limits

log = logging.getLogger(__name__)

OOM_ADVICE = (
    "The GPU ran out of memory for this request. Lower the max image tokens (pixels), the video fps "
    "or max frames, or max new tokens, and try again; the model is still loaded and ready."
)


@dataclass(frozen=True)
class PreparedInputs:
    """Processor output plus what was done to each medium (sizes for coordinate mapping, frame times)."""

    inputs: Any
    plan: MessagePlan
    images: tuple[PreparedImage, ...]
    videos: tuple[SampledVideo, ...]
    prompt_tokens: int
    opened: bool = False  # the prompt ends in an open `<think>` block: the output starts with reasoning
    thinking_budget: int = DEFAULT_THINKING_BUDGET
    conversation_id: str | None = None  # whose kept prefix (KV cache) this request may continue


class ModelSession:
    """The process-wide model session: load once (thread-safe), then one generation at a time on the GPU."""

    def __init__(self, options: LoadOptions | None = None, *, loaded: LoadedModel | None = None,
                 limits: Limits | None = None, prefix_cache: PrefixCache | None = None) -> None:
        self.options = options or LoadOptions()
        self.limits = limits or Limits.from_env()  # checked by `prepare` for every request
        self._prefix = prefix_cache  # None: made on first use, sized for the model's device
        self._loaded = loaded
        self._load_lock = threading.Lock()
        self._gpu_lock = threading.Lock()  # one generation at a time, whoever calls (UI, API, CLI)
        self._thinking: ThinkingSupport | None = None

    # ---- loading and status -------------------------------------------------------------------
    def load(self) -> LoadedModel:
        if self._loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    self._loaded = load_model(self.options)
        return self._loaded

    @property
    def loaded(self) -> LoadedModel:
        return self.load()

    @property
    def family(self) -> FamilySpec:
        return self.load().family

    @property
    def model_id(self) -> str:
        return self.load().model_id

    def status(self) -> SessionStatus:
        lm = self.load()
        return SessionStatus(lm.model_id, lm.family.display_name, _describe_devices(lm.model), lm.dtype,
                             lm.attn, lm.quantization, _gpu_memory_mb(), lm.random_weights, lm.scripted,
                             lm.precision_note, self.thinking)

    @property
    def prefix(self) -> PrefixCache:
        """The conversations' kept prefixes (KV caches), within QVL_PREFIX_CACHE_MB (default by device)."""
        if self._prefix is None:
            mb = self.options.prefix_cache_mb
            self._prefix = PrefixCache(mb if mb is not None else
                                       prefix_cache_mb(str(getattr(self.load().model, "device", "cpu"))))
        return self._prefix

    def forget(self, conversation_id: str) -> None:
        """Drop a conversation's kept prefix (it was cleared, or its browser session ended)."""
        if self._prefix is not None:
            self._prefix.forget(conversation_id)

    @property
    def thinking(self) -> ThinkingSupport:
        """What the loaded model's template does with thinking, read once by rendering it."""
        if self._thinking is None:
            self._thinking = thinking_support(self.load().processor)
        return self._thinking

    # ---- inputs --------------------------------------------------------------------------------
    def image_budget(self, request: GenerationRequest) -> PixelBudget:
        return request_image_budget(request, self.family)

    def prepare(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
                ) -> PreparedInputs:
        """Decode and resize media, render the chat template, run the processor. CPU only, no lock.

        `videos`, when given, are clips the caller already sampled (e.g. trimmed), in the order of the
        conversation's videos; otherwise each video is sampled here with `request.video`.
        """
        lm = self.load()
        plan, images, videos = prepare_media(request, lm.family, videos, limits=self.limits)
        template_kwargs = self.thinking.template_kwargs(request.thinking, request.preserve_thinking)
        # Message texts go in as markers and come back as plain-text ids: typed special tokens stay text.
        guarded = guard_messages(plan.messages, lm.processor.tokenizer)
        prompt = lm.processor.apply_chat_template(guarded.messages, tokenize=False, add_generation_prompt=True,
                                                  **template_kwargs)
        marked_prompt, texts = place_markers(prompt, guarded.texts)
        kwargs: dict[str, Any] = {"text": [marked_prompt], "return_tensors": "pt"}
        # Our own resize already fixed every size; an open pixel range makes the processor's a no-op.
        open_range = {"shortest_edge": lm.family.pixels_per_token,
                      "longest_edge": 16384 * lm.family.pixels_per_token}
        if images:
            kwargs["images"] = [im.image for im in images]
            kwargs["images_kwargs"] = {"size": open_range}
        if videos:
            kwargs["videos"] = [v.frames for v in videos]
            kwargs["videos_kwargs"] = {
                # No resize at all: Qwen3-VL bounds the pixels of all frames together, so no open range
                # fits every clip (128 frames of 576x416 came out at 416x288, half the planned tokens).
                # cap_pixels_per_frame=False only silences the processor's per-call warning.
                "do_resize": False, "do_sample_frames": False, "cap_pixels_per_frame": False,
                # The true sampling rate: without it every timestamp the model says is wrong.
                "video_metadata": [v.processor_metadata() for v in videos],
                "return_metadata": True,
            }
        inputs = splice_texts(lm.processor(**kwargs), texts, lm.processor.tokenizer)
        inputs.pop("video_metadata", None)
        _check_grid(inputs, images, lm.family)
        _check_video_grid(inputs, videos, lm.family)
        return PreparedInputs(inputs, plan, images, videos, int(inputs["input_ids"].shape[1]),
                              opens_reasoning(prompt), request.thinking_budget, request.conversation_id)

    # ---- generation ------------------------------------------------------------------------------
    def stream(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
               ) -> Iterator[Chunk]:
        """Stream a generation. Closing the iterator (Gradio's Stop) cancels it within one decode step.

        `videos`: clips the caller already sampled (see `prepare`). Errors from inside the model reach the
        caller as exceptions as soon as they happen: UserError for out-of-memory (with what to lower),
        GenerationError otherwise.
        """
        prepared = self.prepare(request, videos=videos)
        yield from self.stream_prepared(prepared, request.sampling)

    def sampling_defaults(self) -> SamplingDefaults:
        """The checkpoint's own sampling settings (its generation_config.json), which requests start from."""
        return defaults_from_generation_config(self.load().model.generation_config)

    def check_context(self, prepared: PreparedInputs, sampling: SamplingParams) -> None:
        """Refuse (UserError) a request whose prompt plus max new tokens exceeds the model's context."""
        check_fits_context(prepared.prompt_tokens, sampling.max_new_tokens, context_length(self.load().model))

    def stream_prepared(self, prepared: PreparedInputs, sampling: SamplingParams) -> Iterator[Chunk]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        lm = self.load()
        tokenizer = lm.processor.tokenizer
        stop_event = threading.Event()  # per request: one user's Stop never touches another's generation
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        class _Stop(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), stop_event.is_set(), dtype=torch.bool,
                                  device=input_ids.device)

        class _Streamer(BaseStreamer):
            # generate() first puts the prompt, then one tensor per new token.
            def __init__(self) -> None:
                self.prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                events.put(("tokens", value.reshape(-1).tolist()))

            def end(self) -> None:
                pass

        # The checkpoint's generation_config fills every setting the user left to the model.
        sampling = sampling.resolved(self.sampling_defaults())
        gen_kwargs = _generate_kwargs(sampling, lm)
        # Last of the processors: a token it forces (closing the reasoning) is what generate picks.
        guard = ReasoningGuard(tokenizer, prompt_tokens=prepared.prompt_tokens, opened=prepared.opened,
                               budget=prepared.thinking_budget)
        # Before the lock and the prefill: a request that cannot fit must not wait for, then hold, the GPU.
        self.check_context(prepared, sampling)
        with self._gpu_lock:
            start = time.perf_counter()
            inputs = dict(prepared.inputs.to(lm.model.device))
            _reset_peak_memory()
            key = prepared.conversation_id if self.prefix.enabled else None
            media = _media_of(prepared, lm) if key else ()
            reused, cache_kwargs = self._continue_prefix(key, inputs, media)
            # A cache that cannot be cropped is kept as a snapshot at the end of the history (before this turn's
            # assistant prompt), the point the next prompt of the conversation extends exactly.
            split = _history_end(inputs["input_ids"][0].tolist(), lm) if key and _recurrent(lm.model) else None
            split = split if split is not None and split > reused else None
            generated: dict[str, Any] = {}

            def run() -> None:
                try:
                    with torch.inference_mode():
                        if split is not None:
                            generated["snapshot"] = self._prefill_history(inputs, split, cache_kwargs, reused,
                                                                          media)
                        generated["out"] = lm.model.generate(
                            **inputs, **gen_kwargs, **cache_kwargs, streamer=_Streamer(),
                            return_dict_in_generate=key is not None,
                            logits_processor=LogitsProcessorList([*sampling_processors(sampling), guard]),
                            stopping_criteria=StoppingCriteriaList([_Stop()]))
                    events.put(("done", None))
                except BaseException as exc:  # noqa: BLE001 - forwarded to the caller, never swallowed
                    events.put(("error", exc))

            thread = threading.Thread(target=run, name="qvl-generate", daemon=True)
            thread.start()
            decoder = IncrementalDecoder(tokenizer)
            splitter = ReasoningSplitter(opened=prepared.opened)
            first_token_at: float | None = None
            last_id: int | None = None
            finish: FinishReason = "stop"
            try:
                while True:
                    kind, payload = events.get()
                    if kind == "tokens":
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                        last_id = payload[-1]
                        # Yield every token, even one that adds no visible text yet (a held-back partial UTF-8
                        # character, a control token): a consumer can only close us (Stop) when we yield.
                        reasoning, answer = splitter.feed(decoder.add(payload))
                        yield Chunk(answer, decoder.count, reasoning=reasoning)
                        continue
                    if kind == "error":
                        if _is_oom(payload):
                            self.prefix.clear()  # kept prefixes are the first memory to give back
                        raise _user_facing(payload)
                    break
                if stop_event.is_set():
                    finish = "cancelled"
                elif last_id is not None and last_id in _eos_ids(lm):
                    finish = "stop"
                elif decoder.count >= sampling.max_new_tokens:
                    finish = "length"
                r_tail, a_tail = splitter.feed(decoder.flush())
                r_end, a_end = splitter.flush()
                end = time.perf_counter()
                stats = replace(_stats(prepared, decoder.count, start, first_token_at, end, finish),
                                reasoning_tokens=guard.reasoning_tokens, thinking_note=guard.note,
                                reused_tokens=reused)
                yield Chunk(a_tail + a_end, decoder.count, stats, reasoning=r_tail + r_end)
            finally:
                # Runs on normal end, on error, and when the consumer closes us (Stop / disconnect).
                stop_event.set()
                thread.join()
                if key is not None and "snapshot" in generated:
                    self.prefix.put(key, generated.pop("snapshot"))
                elif key is not None and "out" in generated:  # a Stop too: the cache holds what was generated
                    self._keep_prefix(key, generated.pop("out"), media)

    def generate(self, request: GenerationRequest) -> tuple[str, GenerationStats]:
        """Run to the end and return the whole text and its stats."""
        return collect(self.stream(request))

    # ---- prefix reuse (holding the GPU lock) ---------------------------------------------------------------
    def _continue_prefix(self, key: str | None, inputs: dict[str, Any], media: tuple[tuple[int, str], ...]
                         ) -> tuple[int, dict[str, Any]]:
        """Take `key`'s kept prefix; if it serves these inputs, crop it to the shared tokens and return (their
        count, generate's cache arguments). Every image and video is then in the cached part, so their pixels
        are dropped from `inputs`, and the model's rope offset is the one that prefix was built with."""
        entry = self.prefix.take(key) if key is not None else None
        rope = getattr(self.load().model, "model", None)
        if entry is None or not hasattr(rope, "rope_deltas"):
            return 0, {}
        n = reuse_length(entry.ids, inputs["input_ids"][0].tolist(), croppable=entry.croppable,
                         vision_ids=_vision_ids(self.load().model), cached_media=entry.media, new_media=media)
        if n == 0:
            return 0, {}  # dropped: this request's own cache replaces it
        entry.crop(n)
        rope.rope_deltas = entry.rope_deltas  # another conversation's request may have run since
        for name in ("pixel_values", "pixel_values_videos"):
            inputs.pop(name, None)
        return n, {"past_key_values": entry.cache}

    def _prefill_history(self, inputs: dict[str, Any], split: int, cache_kwargs: dict[str, Any], reused: int,
                         media: tuple[tuple[int, str], ...]) -> PrefixEntry:
        """Prefill tokens [reused, split) (the images and videos with them when nothing is reused) through
        generate's own path (one throwaway token: generate computes the positions and rope offset), snapshot the
        cache, and leave `cache_kwargs` continuing from it; `inputs` lose their pixels (they are in the cache)."""
        import copy

        model = self.load().model
        head = {k: (v[:, :split] if k in _PER_TOKEN_INPUTS else v) for k, v in inputs.items()}
        out = model.generate(**head, **cache_kwargs, max_new_tokens=1, min_new_tokens=None, do_sample=False,
                             temperature=None, top_p=None, top_k=None, return_dict_in_generate=True,
                             pad_token_id=self.load().processor.tokenizer.pad_token_id)
        cache = out.past_key_values
        if cache.get_seq_length() != split:
            raise GenerationError(f"The history prefill kept {cache.get_seq_length()} tokens, not {split}.")
        rope = model.model.rope_deltas
        snapshot = PrefixEntry(inputs["input_ids"][0, :split].tolist(), copy.deepcopy(cache), rope,
                               cache_nbytes(cache), tuple(m for m in media if m[0] < split))
        for name in ("pixel_values", "pixel_values_videos"):
            inputs.pop(name, None)
        cache_kwargs["past_key_values"] = cache
        return snapshot

    def _keep_prefix(self, key: str, out: Any, media: tuple[tuple[int, str], ...]) -> None:
        cache = getattr(out, "past_key_values", None)
        rope = getattr(self.load().model, "model", None)
        if cache is None or not hasattr(rope, "rope_deltas"):
            return
        n = cache.get_seq_length()
        ids = out.sequences[0][:n].tolist()
        self.prefix.put(key, PrefixEntry(ids, cache, rope.rope_deltas, cache_nbytes(cache),
                                         tuple(m for m in media if m[0] < n)))


def _generate_kwargs(sampling: SamplingParams, lm: LoadedModel) -> dict[str, Any]:
    """generate's arguments for a `resolved` request: the checkpoint's own values are already in `sampling`."""
    kwargs: dict[str, Any] = {
        "max_new_tokens": sampling.max_new_tokens,
        "pad_token_id": lm.processor.tokenizer.pad_token_id,
        "eos_token_id": list(_eos_ids(lm)),
    }
    if sampling.repetition_penalty != lm.model.generation_config.repetition_penalty:
        kwargs["repetition_penalty"] = sampling.repetition_penalty  # only a change: the checkpoint's applies as is
    # Always "greedy" for generate itself: a sampled request's draw happens in its own logits processors
    # (`sampling_processors`, with the checkpoint's temperature/top-p/top-k unless the user changed them), from a
    # generator seeded for that request, never generate's global-RNG multinomial. So generate's own sampling is
    # switched off here, or it warns and samples anyway.
    kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def _eos_ids(lm: LoadedModel) -> frozenset[int]:
    ids: set[int] = set()
    gc_eos = getattr(lm.model.generation_config, "eos_token_id", None)
    for value in (gc_eos, lm.processor.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)


# Inputs with one entry per prompt token (sliced with the prompt); the rest (pixels, grids) are per image/video.
_PER_TOKEN_INPUTS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


def _recurrent(model: Any) -> bool:
    """True for models with linear-attention layers (Qwen3.5): their cache holds recurrent state, never cropped."""
    types = getattr(model.config.get_text_config(), "layer_types", None) or ()
    return any("linear" in str(t) for t in types)


def _history_end(ids: list[int], lm: LoadedModel) -> int | None:
    """Where this turn's assistant prompt starts (its `<|im_start|>`), if nothing after it is an image or video:
    everything before it is rendered the same in the conversation's next prompt."""
    start = lm.processor.tokenizer.convert_tokens_to_ids("<|im_start|>")
    at = max((i for i, t in enumerate(ids) if t == start), default=None)
    vision = _vision_ids(lm.model)
    if at is None or at == 0 or any(t in vision for t in ids[at:]):
        return None
    return at


def _media_of(prepared: PreparedInputs, lm: LoadedModel) -> tuple[tuple[int, str], ...]:
    """(first placeholder position, content key) of each image and video of the prompt, in order: placeholder
    ids are the same for any picture of a size, so a kept prefix is matched on pixels too."""
    cfg, inputs = lm.model.config, prepared.inputs
    merge = getattr(cfg.vision_config, "spatial_merge_size", 2) ** 2
    counts: dict[int, list[tuple[int, str]]] = {}
    grids = inputs.get("image_grid_thw")
    if prepared.images and grids is not None and getattr(cfg, "image_token_id", None) is not None:
        counts[cfg.image_token_id] = [
            (int(g.prod()) // merge, media_key(im.image.tobytes(), im.image.size, im.image.mode))
            for im, g in zip(prepared.images, grids, strict=True)]
    grids = inputs.get("video_grid_thw")
    if prepared.videos and grids is not None and getattr(cfg, "video_token_id", None) is not None:
        counts[cfg.video_token_id] = [
            (int(g.prod()) // merge, media_key(v.frames.tobytes(), v.frames.shape, v.timestamps, v.fps))
            for v, g in zip(prepared.videos, grids, strict=True)]
    ids = inputs["input_ids"][0].tolist()
    placeholders = sum(1 for t in ids if t in counts)
    if placeholders != sum(n for media in counts.values() for n, _ in media):
        return ((0, f"uncounted-{uuid.uuid4().hex}"),)  # the counts do not add up: match nothing, reuse nothing
    return tuple(media_positions(ids, counts))


def _vision_ids(model: Any) -> frozenset[int]:
    """The placeholder token ids of images and videos (the config names them per family)."""
    cfg = model.config
    return frozenset(int(v) for v in (getattr(cfg, "image_token_id", None), getattr(cfg, "video_token_id", None))
                     if v is not None)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.cuda.OutOfMemoryError)


def _user_facing(exc: BaseException) -> Exception:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        log.warning("CUDA out of memory during generation: %s", exc)
        return UserError(OOM_ADVICE)
    if isinstance(exc, UserError):
        return exc
    log.exception("generation failed", exc_info=exc)
    return GenerationError(f"Generation failed: {type(exc).__name__}: {exc}")


def _stats(prepared: PreparedInputs, count: int, start: float, first: float | None, end: float,
           finish: FinishReason) -> GenerationStats:
    decode_tps = (count - 1) / (end - first) if first is not None and count > 1 and end > first else None
    return GenerationStats(
        prompt_tokens=prepared.prompt_tokens,
        completion_tokens=count,
        ttft_s=(first - start) if first is not None else None,
        decode_tps=decode_tps,
        total_s=end - start,
        peak_gpu_mb=_peak_gpu_mb(),
        finish_reason=finish,
        image_input_sizes=tuple(im.input_size for im in prepared.images),
        image_original_sizes=tuple(im.original_size for im in prepared.images),
    )


def context_length(model: Any) -> int | None:
    """The text model's context (max_position_embeddings), or None if the config does not say."""
    value = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return int(value) if value else None


def check_fits_context(prompt_tokens: int, max_new_tokens: int, context: int | None) -> None:
    """Pure: raise UserError naming both numbers and the limit when prompt + max new tokens exceed the context.

    Past its context the model's positions run beyond what it was trained on (garbage, or an index error deep
    in generate after a long prefill), so this is refused up front.
    """
    if context is None or prompt_tokens + max_new_tokens <= context:
        return
    shrink = "send fewer or smaller images, fewer video frames, or a shorter conversation"
    if prompt_tokens >= context:
        raise UserError(f"The prompt is {prompt_tokens} tokens (plus {max_new_tokens} max new tokens), over the "
                        f"model's context length of {context} tokens: {shrink}.")
    raise UserError(f"The prompt is {prompt_tokens} tokens and max new tokens is {max_new_tokens}: "
                    f"{prompt_tokens + max_new_tokens} in all, over the model's context length of {context} "
                    f"tokens. Lower max new tokens to at most {context - prompt_tokens}, or {shrink}.")


def _check_grid(inputs: Any, images: tuple[PreparedImage, ...], family: FamilySpec) -> None:
    """The processor's grid is the truth for coordinates; our resize must have predicted it exactly."""
    grid = inputs.get("image_grid_thw")
    if grid is None:
        return
    for im, (_t, gh, gw) in zip(images, grid.tolist(), strict=True):
        size = (gw * family.patch_size, gh * family.patch_size)
        if size != im.input_size:
            raise GenerationError(f"Processor resized an image to {size}, expected {im.input_size}.")


def _check_video_grid(inputs: Any, videos: tuple[SampledVideo, ...], family: FamilySpec) -> None:
    """The processor must take every video at its sampled frame count and size: the estimate and the token
    budget were computed from them."""
    grid = inputs.get("video_grid_thw")
    if grid is None:
        return
    tp, p = family.temporal_patch_size, family.patch_size
    for v, got in zip(videos, grid.tolist(), strict=True):
        n, h, w = v.frames.shape[:3]
        planned = [-(-n // tp), h // p, w // p]  # an odd last frame is repeated to fill its temporal patch
        if got != planned:
            raise GenerationError(f"Processor turned a video of {n} frames of {w}x{h} into a grid of {got} "
                                  f"(time, height, width patches), expected {planned}.")


def _gpu_memory_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return sum(torch.cuda.memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20


def _reset_peak_memory() -> None:
    """Reset the peak on every GPU: the stats sum the peaks of all of them (a model spread by device_map)."""
    import torch

    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(i)


def _peak_gpu_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count())) / 2**20


def _describe_devices(model: Any) -> str:
    devmap = getattr(model, "hf_device_map", None)
    if devmap:
        devices = sorted({str(d) for d in devmap.values()})
        return ", ".join(f"cuda:{d}" if d.isdigit() else d for d in devices)
    return str(getattr(model, "device", "cpu"))
