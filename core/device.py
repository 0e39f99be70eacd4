"""The machine: which device to run on, which precision to compute in, and whether an error means memory ran out.

Shared by training, evaluation and generation, so each picks devices and precisions the same way.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from core.errors import SLMError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SLMError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SLMError("device cuda was asked for but this torch has no CUDA GPU available")
    return device


def amp_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for a precision setting; None means plain fp32."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None  # CPUs without native bf16 run it ~100x slower; MPS is safest in fp32
    if precision == "fp16" and device.type != "cuda":
        raise SLMError("fp16 training needs a CUDA GPU: use --precision bf16 or fp32 on this device")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Compute in `dtype` on `device` inside the block; None leaves everything in fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without it bf16 is ~100x slower."""
    return bool(getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")() in ("AVX512_BF16", "AMX"))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` means a device (or the host) ran out of memory."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextlib.contextmanager
def out_of_memory_as(message: str) -> Iterator[None]:
    """Running out of memory inside the block raises `SLMError(message)`; other errors pass unchanged."""
    try:
        yield
    except Exception as e:
        if is_out_of_memory(e):
            raise SLMError(message) from None
        raise
