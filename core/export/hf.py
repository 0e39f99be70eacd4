"""Hugging Face's Llama format, both ways: `export_hf` writes a transformers folder, `import_hf` reads one.

Our GPT maps one to one onto `LlamaForCausalLM`. Both rotate the halves (i, i + d/2) of each head
for RoPE, so q and k need no permutation; only the fused matrices differ: `attn.qkv` is q_proj, k_proj
and v_proj stacked by rows, `mlp.gate_up` is gate_proj then up_proj. `import_hf` turns a local
Llama checkpoint (safetensors and a byte-level BPE tokenizer.json) into a run of ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.chat.sampling import SamplingSettings
from core.checkpoint import Checkpoint, save_as_run, save_file
from core.config import ModelConfig, count_params, load_json
from core.errors import SLMError
from core.listing import label
from core.tokenizer.bpe import EOT, Tokenizer
from core.tokenizer.chat_template import CHAT_TEMPLATE, END, has_chat_tokens
from core.workspace import Workspace

if TYPE_CHECKING:
    import torch

State = dict[str, "torch.Tensor"]

_PER_LAYER = {  # ours -> theirs, for the tensors that are not fused
    "attn_norm.weight": "input_layernorm.weight",
    "attn.proj.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    "mlp.down.weight": "mlp.down_proj.weight",
}
_GLOBAL = {"embed.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}


# --- weights ------------------------------------------------------------------------------------


def to_llama_state(state: State, config: ModelConfig) -> State:
    """Our state dict under Llama's names, fused matrices split (no lm_head when tied)."""
    out = {theirs: state[ours] for ours, theirs in _GLOBAL.items()}
    if not config.tie_embeddings:
        out["lm_head.weight"] = state["lm_head.weight"]
    q_rows, kv_rows = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        for name, hf_name in _PER_LAYER.items():
            out[theirs + hf_name] = state[ours + name]
        q, k, v = state[ours + "attn.qkv.weight"].split([q_rows, kv_rows, kv_rows])
        gate, up = state[ours + "mlp.gate_up.weight"].chunk(2)
        out |= {
            theirs + "self_attn.q_proj.weight": q,
            theirs + "self_attn.k_proj.weight": k,
            theirs + "self_attn.v_proj.weight": v,
            theirs + "mlp.gate_proj.weight": gate,
            theirs + "mlp.up_proj.weight": up,
        }
    return {name: t.contiguous() for name, t in out.items()}


def from_llama_state(state: State, config: ModelConfig) -> State:
    """A Llama state dict as ours (float32, fused matrices joined); a missing tensor is an SLMError."""
    import torch

    def get(name: str) -> torch.Tensor:
        if name not in state:
            raise SLMError(f"the Hugging Face weights have no {name}: is this a Llama checkpoint?")
        return state[name].float()

    out = {ours: get(theirs) for ours, theirs in _GLOBAL.items()}
    if not config.tie_embeddings:
        out["lm_head.weight"] = get("lm_head.weight")
    for i in range(config.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}.self_attn."
        for name, hf_name in _PER_LAYER.items():
            out[ours + name] = get(f"model.layers.{i}.{hf_name}")
        out[ours + "attn.qkv.weight"] = torch.cat([get(theirs + f"{p}_proj.weight") for p in "qkv"])
        mlp = f"model.layers.{i}.mlp."
        out[ours + "mlp.gate_up.weight"] = torch.cat([get(mlp + "gate_proj.weight"), get(mlp + "up_proj.weight")])
    return {name: t.contiguous() for name, t in out.items()}


# --- config and tokenizer files -----------------------------------------------------------------


def special_ids(tokenizer: Tokenizer) -> tuple[int | None, list[int]]:
    """The bos id (the end-of-text token, as in GPT-2) and the ids that end a generation."""
    eos = sorted(tokenizer.stop_ids)  # the tokens our generation stops at, an imported model's included
    if has_chat_tokens(tokenizer):
        eos.append(tokenizer.special_ids[END])
    return tokenizer.eot_id, eos


def eos_field(eos: list[int]) -> int | list[int] | None:
    """eos_token_id as transformers writes it: one id, a list of them, or null."""
    return eos[0] if len(eos) == 1 else eos or None


def llama_config(config: ModelConfig, tokenizer: Tokenizer, dtype: str) -> dict[str, Any]:
    """config.json of the equivalent LlamaForCausalLM (readable by transformers 4 and 5)."""
    bos, eos = special_ids(tokenizer)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.context,
        "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,  # defaults to false: a tied head would be random
        "bos_token_id": bos,
        "eos_token_id": eos_field(eos),
        "torch_dtype": dtype,
        "use_cache": True,
    }


def tokenizer_config(tokenizer: Tokenizer, context: int) -> dict[str, Any]:
    """tokenizer_config.json: a fast tokenizer with no added bos/eos, and the chat template if it has chat tokens."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": context,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
    }
    if tokenizer.eot_id is not None:
        config |= {"bos_token": EOT, "eos_token": EOT, "pad_token": EOT}
    if has_chat_tokens(tokenizer):
        config["chat_template"] = CHAT_TEMPLATE
    return config


def model_config_from_llama(hf: dict[str, Any], source: Path) -> ModelConfig:
    """Our ModelConfig for a Llama config.json; refuses what our GPT cannot represent."""
    if hf.get("model_type") != "llama":
        raise SLMError(f"{source} holds a {hf.get('model_type')!r} model: only Llama-architecture models import")
    rope = hf.get("rope_parameters") or {}
    unsupported = [
        (hf.get("attention_bias") or hf.get("mlp_bias"), "biases"),
        (hf.get("hidden_act", "silu") != "silu", f"the {hf.get('hidden_act')} activation"),
        (hf.get("rope_scaling") or rope.get("rope_type", "default") != "default", "RoPE scaling"),
    ]
    for bad, what in unsupported:
        if bad:
            raise SLMError(f"{source} uses {what}, which this model does not support")
    try:
        config = _model_config(hf)
    except KeyError as e:
        raise SLMError(f"{source}/config.json has no {e.args[0]}") from None
    except (TypeError, ValueError) as e:  # a value of the wrong type
        raise SLMError(f"{source}/config.json cannot be read as a Llama config ({e})") from None
    if hf.get("head_dim", config.head_dim) != config.head_dim:
        raise SLMError(f"{source}: head_dim {hf['head_dim']} is not hidden_size / num_attention_heads")
    return config


def _model_config(hf: dict[str, Any]) -> ModelConfig:
    rope = hf.get("rope_parameters") or {}
    heads = hf["num_attention_heads"]
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        context=hf.get("max_position_embeddings", 2048),
        n_layer=hf["num_hidden_layers"],
        n_head=heads,
        n_kv_head=hf.get("num_key_value_heads") or heads,
        n_embd=hf["hidden_size"],
        mlp_hidden=hf["intermediate_size"],
        rope_theta=float(rope.get("rope_theta", hf.get("rope_theta", 10000.0))),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
    )


# --- import -------------------------------------------------------------------------------------


def _read_weights(hf_dir: Path) -> State:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = hf_dir / "model.safetensors.index.json"
    files = sorted(set(load_json(index).get("weight_map", {}).values())) if index.exists() else ["model.safetensors"]
    state: State = {}
    for name in files:
        if not (hf_dir / name).exists():
            raise SLMError(f"{hf_dir} has no {name} (only safetensors checkpoints import)")
        try:
            state |= load_file(str(hf_dir / name))
        except (SafetensorError, OSError) as e:
            raise SLMError(f"{hf_dir / name} is corrupt or truncated ({e})") from None
    return state


def _read_tokenizer(hf_dir: Path) -> Tokenizer:
    tokenizer = Tokenizer.load(hf_dir / "tokenizer.json")
    if json.loads(tokenizer.to_json()).get("decoder", {}).get("type") != "ByteLevel":
        raise SLMError(f"{hf_dir}/tokenizer.json is not a byte-level BPE tokenizer (GPT-2 style): it cannot import")
    return tokenizer


def import_hf(hf_dir: Path, workspace: Workspace, name: str) -> Path:
    """Save a local Llama checkpoint as the run `name` (checkpoints/NAME/final); returns that checkpoint."""
    hf_dir = Path(hf_dir).expanduser()
    out = workspace.run_dir(name)
    if (out / "run.json").exists():
        raise SLMError(f"run {name!r} already exists: choose another --name")
    config = model_config_from_llama(load_json(hf_dir / "config.json"), hf_dir)
    tokenizer = _read_tokenizer(hf_dir)
    if tokenizer.vocab_size > config.vocab_size:
        raise SLMError(
            f"{hf_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}"
        )
    state = from_llama_state(_read_weights(hf_dir), config)
    source = {"from": str(hf_dir.resolve()), "format": "hf-llama"}
    return save_as_run(out, config, state, tokenizer, [], {"imported": source})


# --- export -------------------------------------------------------------------------------------

HF_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
)


def export_hf(ckpt: Checkpoint, out: Path, dtype: str) -> None:
    """A transformers-loadable LlamaForCausalLM folder, written atomically."""
    import torch

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


def _run_record(path: Path) -> dict[str, Any]:
    """The run's run.json for the model card; a missing or damaged one only leaves its details out."""
    try:
        return load_json(path)
    except SLMError:
        return {}


def model_card(ckpt: Checkpoint, folder: str) -> str:
    """README.md for the Hugging Face folder: what was trained on what, how well, and how to load it."""
    config, meta = ckpt.config, ckpt.meta
    run = _run_record(ckpt.path.parent / "run.json")
    metrics = meta.get("metrics", {})
    train, run_data = run.get("train"), run.get("data")
    data = train.get("data") if isinstance(train, dict) else None
    data = data if isinstance(data, list) and data and all(isinstance(d, str) for d in data) else ["all of data/"]
    rows = [
        ("parameters", f"{count_params(config):,}"),
        ("layers, width, heads (kv)", f"{config.n_layer}, {config.n_embd}, {config.n_head} ({config.n_kv_head})"),
        ("context, vocabulary", f"{config.context}, {config.vocab_size}"),
        ("steps, tokens seen", f"{meta.get('step', 0):,}, {meta.get('tokens_seen', 0):,}"),
        ("data", ", ".join(data)),
    ]
    if isinstance(run_data, dict) and type(run_data.get("train_tokens")) is int:
        rows.append(("training tokens in the data", f"{run_data['train_tokens']:,}"))
    for key, what in (("val_loss", "validation loss"), ("val_bpb", "validation bits per byte")):
        if metrics.get(key) is not None:
            rows.append((what, f"{metrics[key]:.4f}"))
    if "imported" in meta:
        rows.append(("imported from", meta["imported"].get("from", "?")))
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [slm-studio, llama]
---

# {label(ckpt.path)}

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
