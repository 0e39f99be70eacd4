"""Export a checkpoint for other tools: a Hugging Face Llama folder, or a GGUF file for llama.cpp.

`export_checkpoint(path, "hf" | "gguf", out, dtype)`. The Hugging Face folder loads with
`AutoModelForCausalLM` and `AutoTokenizer` (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json with the chat template, generation_config.json and a README model card).
The GGUF file follows llama.cpp's `llama` architecture with a GPT-2 style BPE vocabulary; like
llama.cpp's own converter it permutes q and k rows to the interleaved RoPE pairs GGML rotates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.checkpoint import Checkpoint, load_checkpoint
from core.config import count_params
from core.errors import SLMError
from core.hf import CHAT_TEMPLATE, eos_field, llama_config, special_ids, to_llama_state, tokenizer_config
from core.sampling import SamplingSettings
from core.tokenizer import Tokenizer

if TYPE_CHECKING:
    import numpy as np
    import torch

FORMATS = ("hf", "gguf")
DTYPES = ("f32", "f16", "q8_0")
HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
)


def export_checkpoint(path: Path, fmt: str, out: Path, dtype: str = "f32") -> Path:
    """Write the checkpoint at `path` to `out` as `fmt` ("hf": a folder, "gguf": a file); returns `out`."""
    if fmt not in FORMATS:
        raise SLMError(f"unknown export format {fmt!r}: use {' or '.join(FORMATS)}")
    if dtype not in DTYPES:
        raise SLMError(f"unknown dtype {dtype!r}: use {', '.join(DTYPES)}")
    if fmt == "hf" and dtype == "q8_0":
        raise SLMError("q8_0 is a GGUF type: the Hugging Face export takes f32 or f16")
    ckpt = load_checkpoint(Path(path))
    out = Path(out).expanduser()
    (export_hf if fmt == "hf" else export_gguf)(ckpt, out, dtype)
    return out


def model_name(ckpt: Checkpoint) -> str:
    """RUN/KIND, how the studio and the server name a checkpoint."""
    return f"{ckpt.path.parent.name}/{ckpt.path.name}"


# --- Hugging Face -------------------------------------------------------------------------------


def export_hf(ckpt: Checkpoint, out: Path, dtype: str) -> None:
    """A transformers-loadable LlamaForCausalLM folder, written atomically."""
    import torch
    from safetensors.torch import save_file

    if out.exists() and not out.is_dir():
        raise SLMError(f"{out} is a file: the Hugging Face export is a folder")
    others = sorted(p.name for p in out.iterdir() if p.name not in HF_FILES) if out.is_dir() else []
    if others:
        raise SLMError(f"{out} holds other files ({', '.join(others[:3])}): export to a new or empty folder")
    torch_dtype = torch.float16 if dtype == "f16" else torch.float32
    config, tokenizer = ckpt.config, ckpt.tokenizer
    state = {k: v.to(torch_dtype) for k, v in to_llama_state(ckpt.state, config).items()}
    bos, eos = special_ids(tokenizer)
    defaults = SamplingSettings()
    generation = {
        "bos_token_id": bos,
        "eos_token_id": eos_field(eos),
        "do_sample": True,
        "temperature": defaults.temperature,
        "top_k": defaults.top_k,
        "top_p": defaults.top_p,
    }
    files = {
        "config.json": llama_config(config, tokenizer, "float16" if dtype == "f16" else "float32"),
        "generation_config.json": generation,
        "tokenizer_config.json": tokenizer_config(tokenizer, config.context),
    }

    def build(tmp: Path) -> None:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for name, value in files.items():
            (tmp / name).write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
        (tmp / "README.md").write_text(model_card(ckpt, out.name), encoding="utf-8")

    atomic.replace_dir(build, out)


def model_card(ckpt: Checkpoint, folder: str) -> str:
    """README.md for the Hugging Face folder: what was trained on what, how well, and how to load it."""
    config, meta = ckpt.config, ckpt.meta
    run_file = ckpt.path.parent / "run.json"
    run = json.loads(run_file.read_text(encoding="utf-8")) if run_file.exists() else {}
    metrics = meta.get("metrics", {})
    data = run.get("train", {}).get("data") or ["all of data/"]
    rows = [
        ("parameters", f"{count_params(config):,}"),
        ("layers, width, heads (kv)", f"{config.n_layer}, {config.n_embd}, {config.n_head} ({config.n_kv_head})"),
        ("context, vocabulary", f"{config.context}, {config.vocab_size}"),
        ("steps, tokens seen", f"{meta.get('step', 0):,}, {meta.get('tokens_seen', 0):,}"),
        ("data", ", ".join(data)),
    ]
    if "train_tokens" in run.get("data", {}):
        rows.append(("training tokens in the data", f"{run['data']['train_tokens']:,}"))
    for key, label in (("val_loss", "validation loss"), ("val_bpb", "validation bits per byte")):
        if key in metrics:
            rows.append((label, f"{metrics[key]:.4f}"))
    if "imported" in meta:
        rows.append(("imported from", meta["imported"].get("from", "?")))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [slm-studio, llama]
---

# {model_name(ckpt)}

A small Llama-architecture language model trained with SLM Studio (RMSNorm, RoPE, SwiGLU,
grouped-query attention{", tied embeddings" if config.tie_embeddings else ""}).

| | |
| --- | --- |
{table}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{folder}")
model = AutoModelForCausalLM.from_pretrained("{folder}")
ids = tokenizer("The", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50)[0]))
```
"""


# --- GGUF ---------------------------------------------------------------------------------------

_GGUF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def interleave_rope(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from rotate-half pairs (i, i + d/2) to adjacent pairs (2i, 2i + 1)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)
    )


def gguf_tensors(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """The weights under llama.cpp's tensor names, q and k rows in its RoPE order."""
    config, tensors = ckpt.config, {}
    for hf_name, tensor in to_llama_state(ckpt.state, config).items():
        if hf_name.startswith("model.layers."):
            layer, rest = hf_name.removeprefix("model.layers.").split(".", 1)
            if rest == "self_attn.q_proj.weight":
                tensor = interleave_rope(tensor, config.n_head)
            elif rest == "self_attn.k_proj.weight":
                tensor = interleave_rope(tensor, config.n_kv_head)
            tensors[f"blk.{layer}.{_GGUF_NAMES[rest]}"] = tensor
        else:
            tensors[_GGUF_NAMES[hf_name]] = tensor
    return tensors


def _encode(tensor: torch.Tensor, dtype: str) -> tuple[np.ndarray, Any]:
    """The array to write and its GGML type: norms stay F32; Q8_0 needs rows that split into blocks of 32."""
    import gguf
    import numpy as np

    types = gguf.GGMLQuantizationType
    array = tensor.float().numpy()
    if tensor.dim() == 1 or dtype == "f32":
        return array.astype(np.float32), types.F32
    if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[types.Q8_0][0] == 0:
        return gguf.quants.quantize(array, types.Q8_0), types.Q8_0
    return array.astype(np.float16), types.F16


def _add_vocabulary(writer: Any, tokenizer: Tokenizer, vocab_size: int) -> None:
    """tokenizer.ggml.*: llama.cpp's GPT-2 BPE (same pre-tokenizer regex), special tokens as control tokens."""
    import gguf

    kinds = gguf.TokenType
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [kinds.UNUSED] * vocab_size
    for token, i in tokenizer.hf.get_vocab(with_added_tokens=True).items():
        tokens[i], types[i] = token, kinds.NORMAL
    for i, added in tokenizer.hf.get_added_tokens_decoder().items():
        types[i] = kinds.CONTROL if added.special else kinds.USER_DEFINED
    merges = json.loads(tokenizer.to_json())["model"].get("merges", [])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    bos, eos = special_ids(tokenizer)
    if bos is not None:
        writer.add_bos_token_id(bos)
    if eos:
        writer.add_eos_token_id(eos[0])
    if len(eos) > 1:
        writer.add_eot_token_id(eos[1])
        writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)


def export_gguf(ckpt: Checkpoint, out: Path, dtype: str) -> None:
    """A GGUF file for llama.cpp, written atomically."""
    import gguf

    if out.is_dir():
        raise SLMError(f"{out} is a folder: the GGUF export is a file (e.g. model.gguf)")
    config = ckpt.config
    file_types = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
    tensors = {name: _encode(t, dtype) for name, t in gguf_tensors(ckpt).items()}

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        writer.add_name(model_name(ckpt))
        writer.add_file_type(file_types.get(dtype, gguf.LlamaFileType.MOSTLY_Q8_0))
        writer.add_context_length(config.context)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.mlp_hidden)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_kv_head)
        writer.add_rope_dimension_count(config.head_dim)
        writer.add_rope_freq_base(config.rope_theta)
        writer.add_layer_norm_rms_eps(config.norm_eps)
        writer.add_vocab_size(config.vocab_size)
        _add_vocabulary(writer, ckpt.tokenizer, config.vocab_size)
        for name, (array, kind) in tensors.items():
            writer.add_tensor(name, array, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic.write_with(out, write)
