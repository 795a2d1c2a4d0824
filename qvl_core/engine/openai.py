"""The Backend over HTTP: any OpenAI-compatible server (vLLM, SGLang, `transformers serve`); no Gradio, no torch.

Media are prepared by our own code exactly as the in-process session prepares them: images are resized to the
size the model will see (so grounding and layout coordinates map back exactly, whatever the server would have
done) and sent as PNG data URLs; videos are sampled by our sampler and sent as their frames with the true rate.
Generation streams through the server's event stream; closing the iterator closes the HTTP response, which
is how every one of these servers learns that the client went away and stops generating.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qvl_core.engine.inputs import prepare_media, request_image_budget
from qvl_core.engine.literal import neutralise
from qvl_core.engine.messages import build_messages
from qvl_core.engine.sampling import SERVER_DEFAULTS, SamplingDefaults
from qvl_core.engine.sse import MAX_ERROR_CHARS, MAX_EXTRA_EVENTS, StreamCaps, broken, read_events, shown_text
from qvl_core.engine.thinking import ThinkingSupport
from qvl_core.engine.types import Chunk, FinishReason, GenerationRequest, GenerationStats, SessionStatus, collect
from qvl_core.errors import GenerationError, ModelLoadError, UserError
from qvl_core.families import FAMILIES, FamilySpec, family_for
from qvl_core.media.images import PixelBudget, PreparedImage
from qvl_core.media.video import SampledVideo
from qvl_core.parse.thinking import ReasoningSplitter
from qvl_core.settings import Limits

log = logging.getLogger(__name__)
DEFAULT_API_TIMEOUT_S = 600.0  # longest wait for the next answer token, the first included (a long video prefill)

# Named limits and defaults.
CONNECT_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 120.0  # load(): a 1-token request to a server that does not list its model
MAX_ERROR_BODY_BYTES = 64 << 10  # of an HTTP error's body; the rest is not read
FLAVORS = ("auto", "vllm", "transformers", "openai")
Flavor = Literal["vllm", "transformers", "openai"]
FLAVOR_NAMES = {"vllm": "vLLM", "transformers": "transformers serve", "openai": "OpenAI-compatible"}
# --family accepts these names as well as the model_type keys of FAMILIES.
FAMILY_ALIASES = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl",
                  "qwen3-vl-moe": "qwen3_vl_moe", "qwen3.5": "qwen3_5", "qwen3.5-moe": "qwen3_5_moe",
                  "qwen3.8-flash-next": "qwen4_exp"}
# Model names -> family, most specific first (served names are free-form; these are the released ones).
_NAME_PATTERNS = (
    # 2026: Qwen3.5 / 3.6 / 3.8 dense are qwen3_5, their A..B MoE ones qwen3_5_moe; 3.8-Flash-Next is qwen4_exp.
    (re.compile(r"qwen3\.8[-_.]?flash[-_.]?next", re.I), "qwen4_exp"),
    (re.compile(r"qwen3\.[5-8]\b.*\b(a\d+b|moe)\b", re.I), "qwen3_5_moe"),
    (re.compile(r"qwen3\.[5-8]\b", re.I), "qwen3_5"),
    (re.compile(r"qwen3[-_.]?vl.*\b(a\d+b|moe)\b", re.I), "qwen3_vl_moe"),
    (re.compile(r"qwen3[-_.]?vl", re.I), "qwen3_vl"),
    (re.compile(r"qwen2(\.|_|-)?5[-_.]?vl", re.I), "qwen2_5_vl"),
    (re.compile(r"qwen2[-_.]?vl", re.I), "qwen2_vl"),
)
SLOW_SERVER_ADVICE = ("A long video or many pages can take that long to read: raise --api-timeout "
                      "(QVL_API_TIMEOUT), or lower the video fps, max frames or max image tokens.")
# A served model's template cannot be rendered from here. Assumed: it may think and does by default (the 2026
# Qwen models from 4B up do); `enable_thinking` is sent explicitly on every request, so the server's own default
# never decides, and a template that does not read it ignores it.
SERVED_THINKING = ThinkingSupport(can_think=True, switchable=True, default_on=True, preserve=True)
_FINISH: dict[str, FinishReason] = {"stop": "stop", "eos": "stop", "length": "length", "abort": "cancelled",
                                    "cancelled": "cancelled", "tool_calls": "stop", "content_filter": "stop"}


@dataclass(frozen=True)
class ServerInfo:
    """What load() learned: the server's flavor and the models it lists (possibly none)."""

    flavor: Flavor
    models: tuple[str, ...]


# ---- family ----------------------------------------------------------------------------------------
def resolve_family(model: str, family: str | None = None) -> FamilySpec:
    """--family if given, else the local checkpoint's config.json, else the served model's name."""
    if family:
        key = FAMILY_ALIASES.get(family.lower(), family.lower())
        if key not in FAMILIES:
            names = ", ".join([*FAMILY_ALIASES, *FAMILIES])
            raise UserError(f"--family {family!r} is not a Qwen-VL family; choose one of {names}.")
        return FAMILIES[key]
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        model_type = json.loads(config.read_text()).get("model_type", "")
        return family_for(model_type)
    for pattern, key in _NAME_PATTERNS:
        if pattern.search(model):
            return FAMILIES[key]
    raise UserError(f"Cannot tell the model family from the served model name {model!r}: pass --family "
                    f"(qwen2-vl, qwen2.5-vl, qwen3-vl, qwen3.5, qwen3.5-moe or qwen3.8-flash-next; env QVL_FAMILY).")


def local_config(model: str) -> dict:
    config = Path(model).expanduser() / "config.json"
    return json.loads(config.read_text()) if config.is_file() else {}


# ---- payload (pure) --------------------------------------------------------------------------------
def png_data_url(image: Any) -> str:
    """A PIL image or an (H, W, 3) uint8 array as a lossless PNG data URL (sizes stay exactly ours)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # level 1: a fraction of the time, same pixels
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def jpeg_frames_url(frames: Any) -> str:
    """vLLM's form for pre-sampled video frames: one data URL, base64 JPEG frames separated by commas."""
    from PIL import Image

    parts = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        parts.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return "data:video/jpeg;base64," + ",".join(parts)


def frame_times(video: SampledVideo) -> list[float]:
    """Each frame's time on the model's clock, which starts at the clip's first sampled frame."""
    return [t - video.start for t in video.timestamps]


def video_parts(video: SampledVideo, flavor: Flavor) -> list[dict]:
    """Content parts for one sampled video.

    vLLM (and by default any other server): one `video_url` of JPEG frames; the frame times travel in the
    request's `media_io_kwargs` (see `build_payload`). `transformers serve` 5.23 cannot take video from Qwen-VL
    at all (it treats these models as audio-capable and tries to read an audio track from every video), so
    there the frames go as images, each after its time written as Qwen3-VL writes it ("<1.5 seconds>").
    """
    if flavor != "transformers":
        return [{"type": "video_url", "video_url": {"url": jpeg_frames_url(video.frames)}}]
    parts: list[dict] = []
    for t, frame in zip(frame_times(video), video.frames, strict=True):
        parts.append({"type": "text", "text": f"<{t:.1f} seconds>"})
        parts.append({"type": "image_url", "image_url": {"url": png_data_url(frame)}})
    return parts


def build_messages_payload(request: GenerationRequest, images: tuple[PreparedImage, ...],
                           videos: tuple[SampledVideo, ...], flavor: Flavor) -> list[dict]:
    """OpenAI chat messages from the request's turns: the same plan as in process, media filled in order.

    Every text (system, messages, earlier answers) is `neutralise`d: the server tokenizes with its own tokenizer,
    which would read a special-token string in it as the token itself.
    """
    plan = build_messages(request.turns, system=request.system, label_media=request.label_media)
    image_iter, video_iter = iter(images), iter(videos)
    out: list[dict] = []
    for message in plan.messages:
        parts: list[dict] = []
        for part in message["content"]:
            if part["type"] == "image":
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(next(image_iter).image)}})
            elif part["type"] == "video":
                parts.extend(video_parts(next(video_iter), flavor))
            else:  # the server's tokenizer would read a typed "<|im_start|>" as the token: break it
                parts.append({"type": "text", "text": neutralise(part["text"])})
        if all(p["type"] == "text" for p in parts):  # plain strings: what every server takes for every role
            sent: dict = {"role": message["role"], "content": "".join(p["text"] for p in parts)}
        else:
            sent = {"role": message["role"], "content": parts}
        # Earlier reasoning goes back only where it is to be kept: the template drops it otherwise anyway.
        if request.preserve_thinking and message.get("reasoning_content"):
            sent["reasoning_content"] = neutralise(message["reasoning_content"])
        out.append(sent)
    return out


def thinking_kwargs(request: GenerationRequest) -> dict[str, bool]:
    """`chat_template_kwargs` for thinking, sent explicitly every time: a server's default is not the model's
    (vLLM applies none of its own unless asked), and a template that does not read them ignores them."""
    return {"enable_thinking": SERVED_THINKING.enabled(request.thinking),
            "preserve_thinking": bool(request.preserve_thinking)}


def sampling_fields(request: GenerationRequest, flavor: Flavor) -> dict:
    """Our sampling settings in each server's vocabulary (OpenAI's fields plus what each server adds)."""
    # Only what the user set: a field left out is the server's default (vLLM's come from the checkpoint's
    # generation_config), where an explicit value would override it.
    s = request.sampling
    fields: dict[str, Any] = {"max_tokens": s.max_new_tokens}
    if s.temperature is not None:
        fields["temperature"] = s.temperature
    if s.top_p is not None and not s.greedy:
        fields["top_p"] = s.top_p
    if s.seed is not None:
        fields["seed"] = s.seed
    if flavor == "vllm":
        if s.top_k is not None and not s.greedy:
            fields["top_k"] = s.top_k or -1  # vLLM spells "off" -1
        if s.repetition_penalty is not None:
            fields["repetition_penalty"] = s.repetition_penalty
    elif flavor == "transformers" and s.repetition_penalty is not None and s.repetition_penalty != 1.0:
        # transformers serve maps frequency_penalty f to repetition_penalty 1 + f; it has no top_k field.
        fields["frequency_penalty"] = round(s.repetition_penalty - 1.0, 6)
    # OpenAI's own field, which vLLM and SGLang take too; transformers serve refuses a request that has it.
    if s.presence_penalty is not None and flavor != "transformers":
        fields["presence_penalty"] = s.presence_penalty
    return fields


def build_payload(model: str, family: FamilySpec, request: GenerationRequest, images: tuple[PreparedImage, ...],
                  videos: tuple[SampledVideo, ...], flavor: Flavor) -> dict:
    """The whole /chat/completions body for one streamed generation."""
    payload: dict[str, Any] = {
        "model": model,
        "messages": build_messages_payload(request, images, videos, flavor),
        "stream": True,
        "stream_options": {"include_usage": True},  # token counts in the last event (vLLM needs the ask)
        **sampling_fields(request, flavor),
        "chat_template_kwargs": thinking_kwargs(request),
    }
    if flavor == "transformers":
        # Open the processor's pixel range so its resize is a no-op on our exact sizes, whatever its config.
        open_range = {"shortest_edge": family.pixels_per_token, "longest_edge": 16384 * family.pixels_per_token}
        payload["chat_template_kwargs"]["processor_kwargs"] = {"images_kwargs": {"size": open_range}}
    elif videos:
        metas = [v.processor_metadata() for v in videos]
        if any(m != metas[0] for m in metas[1:]):
            raise UserError(f"This server takes the frame times of one video per request; the conversation has "
                            f"{len(videos)} videos with different times. Start a new conversation per video.")
        # vLLM reads the frames' metadata from media_io_kwargs (data:video/jpeg frames carry none); -1: every frame.
        payload["media_io_kwargs"] = {"video": {**_vllm_metadata(metas[0]), "num_frames": -1}}
        payload["mm_processor_kwargs"] = {"do_sample_frames": False}  # our sampler already chose the frames
    return payload


def _vllm_metadata(meta: dict) -> dict:
    return {"fps": meta["fps"], "frames_indices": meta["frames_indices"],
            "total_num_frames": meta["total_num_frames"], "duration": meta["duration"], "do_sample_frames": False}


# ---- event stream (pure; the parser and its limits are in sse.py) --------------------------------
def map_finish_reason(reason: str | None) -> FinishReason:
    if reason is None:
        return "stop"
    mapped = _FINISH.get(reason)
    if mapped is None:
        log.warning("unknown finish_reason %r from the server, reported as 'stop'", reason[:64])
        return "stop"
    return mapped


def error_detail(body: str) -> str:
    """The human part of an error body, encodable (a lone surrogate is shown as its escape)."""
    return shown_text(_error_detail(body))


def _error_detail(body: str) -> str:
    """The human part of an error body: OpenAI's error.message, FastAPI's detail, or the text itself."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python recurses
        return body.strip()[:MAX_ERROR_CHARS]
    if isinstance(obj, dict):
        for key in ("error", "detail", "message"):
            if key in obj:
                val = obj[key]
                if isinstance(val, dict):
                    val = val.get("message", val)
                if not isinstance(val, str):
                    try:
                        val = json.dumps(val)
                    except RecursionError:  # parsed, but too deep to encode again from here: quote it as sent
                        val = body.strip()
                return val[:MAX_ERROR_CHARS]
    return body.strip()[:MAX_ERROR_CHARS]


def read_capped(chunks: Iterable[bytes], limit: int) -> str:
    """The first `limit` bytes of a body as text; the rest is never read (an error page can be endless)."""
    data = bytearray()
    for chunk in chunks:
        data += chunk[: limit - len(data)]
        if len(data) >= limit:
            break
    return data.decode("utf-8", "replace")


def http_error(status: int, body: str, *, base: str, model: str) -> Exception:
    """An HTTP error from the server as our error type, with a message that says what to do."""
    detail = error_detail(body).rstrip(". ")
    names_model = f"'{model}'" in detail or f"`{model}`" in detail or f'"{model}"' in detail
    if status in (401, 403):
        return UserError(f"The server at {base} refused the API key (HTTP {status}): {detail}. "
                         "Pass the right one with --api-key or QVL_API_KEY.")
    if status == 404 or (status == 400 and names_model and any(w in detail.lower() for w in ("model", "pinned"))):
        return UserError(f"The server at {base} does not serve model {model!r} (HTTP {status}): {detail}")
    if status in (400, 413, 422):
        return UserError(f"The server at {base} refused the request (HTTP {status}): {detail}. If the input is "
                         "too long, lower the max image tokens, the video fps or max frames, or max new tokens "
                         "(or start the server with a larger --max-model-len).")
    if status == 429:
        return GenerationError(f"The server at {base} is busy (HTTP 429): {detail}. Try again shortly.")
    return GenerationError(f"The server at {base} failed (HTTP {status}): {detail}")


# ---- the backend -----------------------------------------------------------------------------------
class OpenAIBackend:
    """The Backend Protocol over an OpenAI-compatible server. Thread-safe: many streams at once (the server
    batches them); nothing is loaded here, so `peak_gpu_mb` is always None (we cannot see the server's GPU)."""

    def __init__(self, model: str, api_base: str, *, api_key: str | None = None, family: str | None = None,
                 timeout_s: float = DEFAULT_API_TIMEOUT_S, flavor: str = "auto", limits: Limits | None = None) -> None:
        import httpx

        if not model:
            raise UserError("--backend openai needs --model: the model name the server serves (env QVL_MODEL).")
        if not api_base:
            raise UserError("--backend openai needs --api-base, e.g. http://127.0.0.1:8000/v1 (env QVL_API_BASE).")
        if flavor not in FLAVORS:
            raise UserError(f"API flavor must be one of {', '.join(FLAVORS)}; got {flavor!r}.")
        if not timeout_s > 0:
            raise UserError(f"--api-timeout must be a positive number of seconds, got {timeout_s}.")
        self._model = model
        self.limits = limits or Limits.from_env()  # checked by `prepare` for every request
        self.api_base = api_base.rstrip("/")
        self.timeout_s = float(timeout_s)
        self._family_arg = family
        self._flavor_arg = flavor
        self._info: ServerInfo | None = None
        self._family: FamilySpec | None = None
        self._load_lock = threading.Lock()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}  # never logged or shown
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout_s, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    def __repr__(self) -> str:  # no key here either
        return f"OpenAIBackend(model={self._model!r}, api_base={self.api_base!r})"

    # ---- loading and status --------------------------------------------------------------------
    @property
    def family(self) -> FamilySpec:
        if self._family is None:
            self._family = resolve_family(self._model, self._family_arg)
        return self._family

    @property
    def model_id(self) -> str:
        return self._model

    @property
    def flavor(self) -> Flavor:
        return self.load().flavor

    def load(self) -> ServerInfo:
        """Check the server once: reachable, key accepted, model served. Clear errors for each."""
        if self._info is None:
            with self._load_lock:
                if self._info is None:
                    _ = self.family  # a model we cannot place in a family fails before any network call
                    self._info = self._check_server()
        return self._info

    def _check_server(self) -> ServerInfo:
        import httpx

        # Its own connections: a server may close one right after an error answer (transformers serve does after
        # its /models fails), and a pooled connection reused in that instant is reset.
        with httpx.Client(headers=self._client.headers, timeout=httpx.Timeout(30.0, connect=CONNECT_TIMEOUT_S),
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            return self._check_with(client)

    def _check_with(self, client: Any) -> ServerInfo:
        import httpx

        try:
            resp = client.get(f"{self.api_base}/models")
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"Cannot reach the model server at {self.api_base} ({type(exc).__name__}: "
                                 f"{exc}). Is it running, and is --api-base (QVL_API_BASE) right? It usually "
                                 "ends in /v1.") from None
        if resp.status_code in (401, 403):
            raise http_error(resp.status_code, resp.text, base=self.api_base, model=self._model)
        models: tuple[str, ...] = ()
        owners: set[str] = set()
        if resp.status_code == 200:
            try:
                data = resp.json().get("data") or []
                models = tuple(str(m.get("id")) for m in data if isinstance(m, dict))
                owners = {str(m.get("owned_by", "")).lower() for m in data if isinstance(m, dict)}
            except (ValueError, AttributeError, RecursionError):  # RecursionError: JSON nested too deep
                raise ModelLoadError(f"{self.api_base}/models did not answer like an OpenAI-compatible server: "
                                     f"{resp.text[:200]!r}. Check --api-base (it usually ends in /v1).") from None
        else:
            # transformers serve lists only the Hugging Face cache (and fails without one); the probe decides.
            log.info("GET %s/models answered HTTP %s; probing the model instead", self.api_base, resp.status_code)
        flavor = self._detect_flavor(client, owners)
        if self._model not in models:
            self._probe(client, models)
        log.info("using %s at %s (%s) for %s", FLAVOR_NAMES[flavor], self.api_base, self.family.display_name,
                 self._model)
        return ServerInfo(flavor, models)

    def _detect_flavor(self, client: Any, owners: set[str]) -> Flavor:
        if self._flavor_arg != "auto":
            return self._flavor_arg  # type: ignore[return-value]
        if "vllm" in owners:
            return "vllm"
        # transformers serve answers /health with {"status": "ok"}; vLLM and SGLang with an empty 200.
        root = self.api_base.removesuffix("/v1")
        try:
            health = client.get(f"{root}/health", timeout=10.0)
            if health.status_code == 200 and health.headers.get("content-type", "").startswith("application/json") \
                    and health.json().get("status") == "ok":
                return "transformers"
        except Exception as exc:  # noqa: BLE001 - a missing /health only means "not transformers serve"
            log.debug("no JSON /health at %s: %s", root, exc)
        return "openai"

    def _probe(self, client: Any, listed: tuple[str, ...]) -> None:
        """A one-token request: the only way to know whether a server that does not list the model serves it."""
        import httpx

        body = {"model": self._model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
                "temperature": 0.0}
        try:
            resp = client.post(f"{self.api_base}/chat/completions", json=body,
                                     timeout=httpx.Timeout(PROBE_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"The model server at {self.api_base} did not answer a test request for "
                                 f"{self._model!r} ({type(exc).__name__}: {exc}).") from None
        if resp.status_code == 200:
            return
        if resp.status_code in (400, 404):
            serves = ", ".join(repr(m) for m in listed) if listed else "no models listed"
            raise ModelLoadError(f"The server at {self.api_base} does not serve model {self._model!r} "
                                 f"(it lists: {serves}; it said: {error_detail(resp.text)}). Pass the served name "
                                 "with --model (QVL_MODEL).")
        raise http_error(resp.status_code, resp.text, base=self.api_base, model=self._model)

    def sampling_defaults(self) -> SamplingDefaults:
        """Unknown here: a setting the user leaves alone is not sent, so the server's own default applies."""
        return SERVER_DEFAULTS

    def status(self) -> SessionStatus:
        info = self.load()
        config = local_config(self._model)
        return SessionStatus(self._model, self.family.display_name, self.api_base, "served",
                             FLAVOR_NAMES[info.flavor], "none", None,
                             bool(config.get("qvl_random_weights")), bool(config.get("qvl_scripted_answer")),
                             thinking=self.thinking)

    @property
    def thinking(self) -> ThinkingSupport:
        """A served model's template is not visible from here: SERVED_THINKING (the request's choice is sent)."""
        return SERVED_THINKING

    def close(self) -> None:
        self._client.close()

    # ---- inputs ------------------------------------------------------------------------------------
    def image_budget(self, request: GenerationRequest) -> PixelBudget:
        return request_image_budget(request, self.family)

    def prepare(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
                ) -> tuple[dict, tuple[PreparedImage, ...]]:
        """Decode, resize and sample exactly as ModelSession.prepare does, then build the request body."""
        info = self.load()
        _plan, images, videos = prepare_media(request, self.family, videos, limits=self.limits)
        return build_payload(self._model, self.family, request, images, videos, info.flavor), images

    # ---- generation --------------------------------------------------------------------------------
    def stream(self, request: GenerationRequest, *, videos: tuple[SampledVideo, ...] | None = None
               ) -> Iterator[Chunk]:
        """Stream from the server. Closing this iterator closes the HTTP response: the server stops generating.

        The server is not trusted to keep to the request. We stop reading, and close the response, at our own
        max_new_tokens (counted as text events, plus MAX_EXTRA_EVENTS for a decoder's last flush, or as the server's
        running usage) and at the characters and bytes that many tokens can take (`StreamCaps`); we end a stream
        that brings no answer or reasoning token for `timeout_s` (the first token included), however many
        keep-alive comments, empty events or stray bytes keep the connection busy; a malformed event is a broken
        stream. A server that falls silent just before that deadline is caught by the HTTP read timeout, which is
        also `timeout_s`: a stream without progress ends within twice `timeout_s`.
        """
        import httpx

        payload, images = self.prepare(request, videos=videos)
        caps = StreamCaps.for_tokens(request.sampling.max_new_tokens)
        start = time.perf_counter()
        first: float | None = None
        last = start  # the last useful progress: an answer or reasoning token
        count = chars = reasoning_events = 0
        # Reasoning arrives in its own field from a server started with a reasoning parser (vLLM/SGLang
        # `--reasoning-parser qwen3`); without one, a `<think>` block in the content is split off here.
        splitter = ReasoningSplitter()
        finish: str | None = None
        usage: dict | None = None
        try:
            # identity: a compressed stream could inflate past every byte cap below before we saw a line of it.
            with self._client.stream("POST", f"{self.api_base}/chat/completions", json=payload,
                                     headers={"Accept-Encoding": "identity"}) as resp:
                if resp.status_code != 200:
                    body = read_capped(resp.iter_raw(), MAX_ERROR_BODY_BYTES)
                    raise http_error(resp.status_code, body, base=self.api_base, model=self._model)
                encoding = resp.headers.get("content-encoding", "identity").strip().lower()
                if encoding not in ("", "identity"):
                    raise broken(f"a stream compressed with {encoding[:40]!r} although we asked for none")
                for event in read_events(resp.iter_raw(), max_bytes=caps.max_bytes):
                    now = time.perf_counter()
                    if event is not None and event.done:
                        break
                    if event is not None:
                        if event.text or event.reasoning:
                            # Text events so far, or the server's own token count where it reports one as it goes.
                            spent = max(count, (usage or {}).get("completion_tokens") or 0)
                            over = spent >= caps.max_tokens + MAX_EXTRA_EVENTS or chars >= caps.max_chars
                            if finish is not None or over:
                                finish = finish or "length"  # it goes on past its own end or our cap: stop here
                                break
                            count += 1  # one event per token on these servers; usage corrects it at the end
                            first = first or now
                            last = now
                            reasoning = event.reasoning[: caps.max_chars - chars]
                            chars += len(reasoning)
                            reasoning_events += bool(event.reasoning)
                            text = event.text[: caps.max_chars - chars]
                            chars += len(text)
                            more_reasoning, answer = splitter.feed(text)
                            if reasoning or more_reasoning or answer:
                                yield Chunk(answer, min(count, caps.max_tokens), reasoning=reasoning + more_reasoning)
                            if len(text) < len(event.text) or len(reasoning) < len(event.reasoning):
                                finish = "length"  # more text in one event than max_new_tokens can hold
                                break
                        usage = event.usage or usage
                        finish = event.finish_reason or finish
                    if now - last > self.timeout_s:
                        if finish is not None or count >= caps.max_tokens:
                            break  # the answer is whole; only the server's tail (usage, [DONE]) is missing
                        what = "the first token" if first is None else "the next token"
                        raise GenerationError(
                            f"The server at {self.api_base} sent no answer text for {self.timeout_s:g} s (only "
                            f"keep-alive comments, empty events or stray bytes) while we waited for {what}. "
                            f"{SLOW_SERVER_ADVICE}")
        except httpx.TimeoutException:
            what = "the first token" if first is None else "the next token"
            raise GenerationError(f"The server at {self.api_base} sent nothing for {self.timeout_s:.0f} s while we "
                                  f"waited for {what}. {SLOW_SERVER_ADVICE}") from None
        except httpx.HTTPError as exc:
            raise GenerationError(f"Lost the connection to the model server at {self.api_base} "
                                  f"({type(exc).__name__}: {exc}).") from None
        if finish is None and count >= caps.max_tokens:
            finish = "length"  # our cap, reached as the server went silent
        if finish is None:
            raise GenerationError(f"The server at {self.api_base} ended the stream before the answer was finished "
                                  "(no finish reason); see the server's log.")
        end = time.perf_counter()
        reported = (usage or {}).get("completion_tokens")
        completion = min(count if reported is None else reported, caps.max_tokens)
        prompt = (usage or {}).get("prompt_tokens") or 0
        decode_tps = (completion - 1) / (end - first) if first is not None and completion > 1 and end > first else None
        tail_reasoning, tail_answer = splitter.flush()
        yield Chunk(tail_answer, completion, reasoning=tail_reasoning, stats=GenerationStats(
            reasoning_tokens=min(reasoning_events, completion),
            prompt_tokens=prompt, completion_tokens=completion, ttft_s=(first - start) if first else None,
            decode_tps=decode_tps, total_s=end - start, peak_gpu_mb=None, finish_reason=map_finish_reason(finish),
            image_input_sizes=tuple(im.input_size for im in images),
            image_original_sizes=tuple(im.original_size for im in images)))

    def generate(self, request: GenerationRequest) -> tuple[str, GenerationStats]:
        """Run to the end and return the whole text and its stats."""
        return collect(self.stream(request))
