"""GGUF for llama.cpp: the `llama` architecture with a GPT-2 style BPE vocabulary.

Like llama.cpp's own converter it permutes q and k rows to the interleaved RoPE pairs GGML rotates; it writes
the file with `gguf.GGUFWriter` directly, since llama.cpp's converter refuses a newly trained tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.checkpoint import Checkpoint
from core.errors import SLMError
from core.export.hf import special_ids, to_llama_state
from core.listing import label
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import CHAT_TEMPLATE

if TYPE_CHECKING:
    import numpy as np
    import torch

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


def ggml_type(dtype: str, shape: tuple[int, ...], output: bool) -> Any:
    """The GGML type a weight of `shape` gets in an export as `dtype`: norms stay F32; the quantized types need
    rows that split into blocks of 32 (else F16); at q4_0 the output matrix keeps 8 bits (as llama.cpp keeps
    more for it), since every logit goes through it."""
    import gguf

    types = gguf.GGMLQuantizationType
    if len(shape) == 1 or dtype == "f32":
        return types.F32
    quantized = {"q8_0": types.Q8_0, "q4_0": types.Q8_0 if output else types.Q4_0}.get(dtype)
    if quantized is not None and shape[-1] % gguf.GGML_QUANT_SIZES[quantized][0] == 0:
        return quantized
    return types.F16


def _encode(tensor: torch.Tensor, kind: Any) -> np.ndarray:
    import gguf
    import numpy as np

    array = tensor.float().numpy()
    if kind == gguf.GGMLQuantizationType.F32:
        return array.astype(np.float32)
    if kind == gguf.GGMLQuantizationType.F16:
        return array.astype(np.float16)
    return gguf.quants.quantize(array, kind)


def weights_as_exported(ckpt: Checkpoint, dtype: str) -> dict[str, torch.Tensor]:
    """The checkpoint's weights (our names) as a GGUF export as `dtype` holds them: each matrix quantized by
    `ggml_type`'s rule and back, so that a model built from them scores what the exported weights score."""
    import gguf
    import torch

    output = "embed.weight" if ckpt.config.tie_embeddings else "lm_head.weight"
    state = {}
    for name, tensor in ckpt.state.items():
        kind = ggml_type(dtype, tuple(tensor.shape), name == output)
        if kind == gguf.GGMLQuantizationType.F32:
            state[name] = tensor.float()
        else:
            back = gguf.quants.dequantize(_encode(tensor, kind), kind)
            state[name] = torch.from_numpy(back.astype("float32").reshape(tensor.shape))
    return state


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
    files = gguf.LlamaFileType
    file_type = {"f32": files.ALL_F32, "f16": files.MOSTLY_F16, "q8_0": files.MOSTLY_Q8_0}.get(dtype, files.MOSTLY_Q4_0)
    weights = gguf_tensors(ckpt)
    output = "output.weight" if "output.weight" in weights else "token_embd.weight"  # tied: the embedding
    kinds = {name: ggml_type(dtype, tuple(t.shape), name == output) for name, t in weights.items()}
    tensors = {name: (_encode(t, kinds[name]), kinds[name]) for name, t in weights.items()}

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(tmp, arch="llama")
        try:
            _write(writer)
        finally:  # a failed write (a full disk) closes the file here, not with a second error when it is collected
            writer.close()

    def _write(writer: gguf.GGUFWriter) -> None:
        writer.add_name(label(ckpt.path))
        writer.add_file_type(file_type)
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

    atomic.write_with(out, write)
