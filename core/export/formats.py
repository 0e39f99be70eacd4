"""Export a checkpoint for other tools: a Hugging Face Llama folder (`hf`), or a GGUF file for llama.cpp (`gguf`).

The Hugging Face folder loads with `AutoModelForCausalLM` and `AutoTokenizer` (config.json, model.safetensors,
tokenizer.json, tokenizer_config.json with the chat template, generation_config.json and a README model card).
"""

from __future__ import annotations

from pathlib import Path

from core.checkpoint import load_checkpoint
from core.errors import SLMError
from core.export.gguf import export_gguf
from core.export.hf import export_hf

FORMATS = ("hf", "gguf")
DTYPES = ("f32", "f16", "q8_0", "q4_0")
GGUF_ONLY = ("q8_0", "q4_0")
F16_MAX = 65504.0


def export_checkpoint(path: Path, fmt: str, out: Path, dtype: str = "f32") -> Path:
    """Write the checkpoint at `path` to `out` as `fmt` ("hf": a folder, "gguf": a file); returns `out`."""
    if fmt not in FORMATS:
        raise SLMError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise SLMError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    if fmt == "hf" and dtype in GGUF_ONLY:
        raise SLMError(f"{dtype} is a GGUF type: the Hugging Face export takes f32 or f16")
    ckpt = load_checkpoint(Path(path))
    if dtype != "f32":
        largest = max(float(t.abs().max()) for t in ckpt.state.values() if t.numel())
        if (
            largest > F16_MAX
        ):  # it would become inf in f16 (the quantized types keep some tensors, and their scales, in f16)
            raise SLMError(f"{path} holds weights up to {largest:.3g}, beyond what {dtype} can hold: export as f32")
    out = Path(out).expanduser()
    (export_hf if fmt == "hf" else export_gguf)(ckpt, out, dtype)
    return out
