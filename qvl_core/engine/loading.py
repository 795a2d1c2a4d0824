"""Find and load a Qwen-VL checkpoint: default choice, dtype, attention, device map, quantization."""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qvl_core.errors import ModelLoadError, UserError
from qvl_core.families import (
    LINEAR_ATTENTION_PACKAGES,
    FamilySpec,
    family_for,
    in_process_family,
    linear_attention_note,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_LARGE = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_MODEL_SMALL = "Qwen/Qwen2.5-VL-3B-Instruct"
# 7B in bf16 is ~16.6 GB of weights; leave room for activations and the KV cache.
LARGE_MODEL_MIN_FREE_GB = 24.0
ATTN_CHOICES = ("auto", "flash_attention_2", "sdpa", "eager")
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
QUANT_CHOICES = ("none", "int8", "int4")
FLASH_ATTN_MIN_CAPABILITY = (8, 0)  # flash-attn 2 kernels exist for Ampere and newer only


@dataclass(frozen=True)
class LoadOptions:
    """How to load. 'auto' picks per device (`choose_precision`): on CUDA bf16 (fp32 where the GPU lacks bf16) with
    flash-attn where it can run, else sdpa; fp32 + sdpa on CPU."""

    model: str | None = None
    device: str = "auto"  # auto | cuda | cpu
    dtype: str = "auto"
    attn: str = "auto"
    quantization: str = "none"
    # Load on the CPU, then move the whole model to CUDA: what ZeroGPU requires at startup (its CUDA emulation
    # intercepts `.to("cuda")`, not loading straight onto the device). Otherwise device_map places it.
    load_then_move: bool = False
    # MB of kept conversation prefixes (KV caches) for follow-ups; None: QVL_PREFIX_CACHE_MB or the device's default
    # (engine/prefix_cache.py); 0 turns reuse off.
    prefix_cache_mb: int | None = None

    def __post_init__(self) -> None:
        from qvl_core.engine.prefix_cache import MAX_PREFIX_CACHE_MB

        mb = self.prefix_cache_mb
        if mb is not None and (isinstance(mb, bool) or not isinstance(mb, int) or not 0 <= mb <= MAX_PREFIX_CACHE_MB):
            raise UserError(f"--prefix-cache-mb must be a whole number from 0 (off) to {MAX_PREFIX_CACHE_MB}, got "
                            f"{mb!r} (env QVL_PREFIX_CACHE_MB).")
        for name, value, choices in (("dtype", self.dtype, DTYPE_CHOICES), ("attn", self.attn, ATTN_CHOICES),
                                     ("quantization", self.quantization, QUANT_CHOICES),
                                     ("device", self.device, ("auto", "cuda", "cpu"))):
            if value not in choices:
                raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")


@dataclass(frozen=True)
class LoadedModel:
    """The model, its processor and what was chosen for them."""

    model: Any
    processor: Any
    family: FamilySpec
    model_id: str
    device: str
    dtype: str
    attn: str
    quantization: str
    random_weights: bool
    scripted: bool
    precision_note: str = ""  # why the dtype/attention is not the usual one (e.g. float32 on a GPU without bf16)


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_model_id() -> str:
    """7B on a CUDA GPU with enough free memory, 3B otherwise (QVL_MODEL overrides)."""
    if env := os.environ.get("QVL_MODEL"):
        return env
    if cuda_available():
        import torch

        free, _total = torch.cuda.mem_get_info()
        if free / 2**30 >= LARGE_MODEL_MIN_FREE_GB:
            return DEFAULT_MODEL_LARGE
    return DEFAULT_MODEL_SMALL


def choose_device(opt: LoadOptions) -> str:
    if opt.device == "cuda" and not cuda_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is visible (use --device cpu or auto).")
    if opt.device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return opt.device


@dataclass(frozen=True)
class GpuFacts:
    """What the precision choice needs to know about the GPUs the model will run on."""

    capability: tuple[int, int]  # the lowest compute capability among them
    bf16: bool


@dataclass(frozen=True)
class Precision:
    """The dtype and attention kernel to load with, and a note for the status line when it is not the obvious one."""

    dtype: str
    attn: str
    note: str = ""


def gpu_facts() -> GpuFacts | None:
    """Capability and bf16 support of the visible CUDA GPUs (the weakest one decides), or None without CUDA."""
    if not cuda_available():
        return None
    import torch

    caps = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
    return GpuFacts(min(caps), bool(torch.cuda.is_bf16_supported()))


def choose_precision(opt: LoadOptions, device: str, gpu: GpuFacts | None, *, flash_attn_installed: bool
                     ) -> Precision:
    """Pure: dtype and attention from the request, the device, what the GPU supports and what is installed.

    Always an explicit dtype (loading without one gave fp32 weights silently). On a CUDA GPU without bfloat16
    (before Ampere) 'auto' means float32, not float16: Qwen-VL overflows in float16 and answers NaN or "!!!!".
    """
    notes: list[str] = []
    if opt.dtype != "auto":
        dtype = opt.dtype
        if dtype == "float16" and device == "cuda":
            notes.append("float16 may give NaN or '!!!!' output with Qwen-VL")
    elif device != "cuda":
        dtype = "float32"
    elif gpu is not None and gpu.bf16:
        dtype = "bfloat16"
    else:
        dtype = "float32"
        notes.append("float32: this GPU has no bfloat16, and float16 gives NaN or '!!!!' output with Qwen-VL")
    flash_blocker = _flash_attn_blocker(device, dtype, gpu, flash_attn_installed)
    if opt.attn == "flash_attention_2" and flash_blocker:
        raise UserError(f"attn 'flash_attention_2' cannot run here: {flash_blocker}.")
    if opt.attn != "auto":
        attn = opt.attn
    else:
        attn = "sdpa" if flash_blocker else "flash_attention_2"
        if flash_blocker and device == "cuda" and flash_attn_installed:
            notes.append(f"sdpa: {flash_blocker}")
    return Precision(dtype, attn, "; ".join(notes))


def _flash_attn_blocker(device: str, dtype: str, gpu: GpuFacts | None, installed: bool) -> str:
    """Why flash-attn cannot run for this load, or '' when it can."""
    if not installed:
        return "it needs the flash-attn package (pip install flash-attn)"
    if device != "cuda" or gpu is None:
        return "flash-attn runs on CUDA GPUs only"
    if dtype not in ("float16", "bfloat16"):
        return f"flash-attn runs in float16/bfloat16 only, not {dtype}"
    if gpu.capability < FLASH_ATTN_MIN_CAPABILITY:
        major, minor = gpu.capability
        return f"flash-attn needs compute capability 8.0 or newer (Ampere), this GPU has {major}.{minor}"
    return ""


def quantization_config(kind: str) -> Any:
    """Weight-only int4/int8 through torchao, or None. A missing library is a clear UserError."""
    if kind == "none":
        return None
    if importlib.util.find_spec("torchao") is None:
        raise UserError(f"quantization '{kind}' needs the torchao package (pip install torchao).")
    from torchao.quantization import Int4WeightOnlyConfig, Int8WeightOnlyConfig
    from transformers import TorchAoConfig

    quant = Int4WeightOnlyConfig(group_size=128) if kind == "int4" else Int8WeightOnlyConfig()
    return TorchAoConfig(quant_type=quant)


def _looks_like_path(model: str) -> bool:
    # Hub ids are exactly "org/name"; anything else is meant as a folder.
    return model.startswith(("/", ".", "~")) or model.count("/") != 1


def read_family(model: str) -> tuple[FamilySpec, Any]:
    """Read config.json (local folder, hub cache or hub) and map its model_type to a family."""
    from transformers import AutoConfig

    if _looks_like_path(model) and not Path(model).expanduser().exists():
        raise ModelLoadError(f"Model folder {model!r} does not exist.")
    try:
        config = AutoConfig.from_pretrained(os.path.expanduser(model))
    except ValueError as exc:  # transformers: unknown model_type
        raise ModelLoadError(f"Model {model!r} is not a model type this transformers knows: {exc}") from None
    except OSError:
        raise ModelLoadError(
            f"Could not load model {model!r}: it is not a local folder, not in the Hugging Face cache, and "
            "the Hub could not be reached. Download it once where there is network "
            "(huggingface-cli download ...) and pass the folder: --model /path/to/folder (or QVL_MODEL=...)."
        ) from None
    return family_for(config.model_type), config


def load_model(opt: LoadOptions) -> LoadedModel:
    """Load model + processor through the one path used for real and tiny checkpoints alike."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model_id = opt.model or default_model_id()
    family, config = read_family(model_id)
    in_process_family(family.model_type)  # a served-only family is refused before any weight is read
    device = choose_device(opt)
    precision = choose_precision(opt, device, gpu_facts() if device == "cuda" else None,
                                 flash_attn_installed=importlib.util.find_spec("flash_attn") is not None)
    dtype, attn = precision.dtype, precision.attn
    installed = {name for name in LINEAR_ATTENTION_PACKAGES if importlib.util.find_spec(name) is not None}
    note = "; ".join(n for n in (precision.note, linear_attention_note(family, device, installed)) if n)
    if note:
        log.warning("loading %s: %s", model_id, note)
    kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype), "attn_implementation": attn}
    # device_map="auto" spreads a large model over every visible GPU.
    kwargs["device_map"] = "auto" if device == "cuda" and not opt.load_then_move else "cpu"
    if (qc := quantization_config(opt.quantization)) is not None:
        kwargs["quantization_config"] = qc
    path = os.path.expanduser(model_id)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        processor = AutoProcessor.from_pretrained(path)
    except OSError as exc:
        raise ModelLoadError(f"Could not load the weights of {model_id!r}: {exc}") from None
    if device == "cuda" and opt.load_then_move:
        model.to("cuda")
    model.eval()
    log.info("loaded %s (%s) on %s as %s with %s", model_id, family.display_name, device, dtype, attn)
    return LoadedModel(
        model=model, processor=processor, family=family, model_id=model_id, device=device, dtype=dtype,
        attn=attn, quantization=opt.quantization, precision_note=note,
        random_weights=bool(getattr(config, "qvl_random_weights", False)),
        scripted=bool(getattr(config, "qvl_scripted_answer", False)),
    )
