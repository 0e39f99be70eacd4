"""Configuration dataclasses (model and training), the presets, and their JSON form.

Each field a user can set from the command line says so with `option(default, help)`: the `slm` flags and
their help texts are derived from these declarations (`tui/cli/flags.py`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from core.errors import SLMError, check

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Schedule = Literal["cosine", "wsd"]
Optimizer = Literal["adamw", "muon"]
DecodeErrors = Literal["skip", "replace"]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    repeat: bool = False,
) -> Any:
    """A config field that is also an `slm` flag (`max_steps` is `--max-steps`), with the flag's help text.

    A list field takes several values (`--data a b`), or one per use with `repeat` (`--stop A --stop B`); a
    field that defaults to True is the flag `--no-FIELD`, and its help says what that flag does. Fields
    declared without `option` have no flag of their own."""
    metadata = {"help": help, "repeat": repeat}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# Bounds far beyond any model this studio trains: a config read back from disk past them is damaged.
MAX_VOCAB, MAX_CONTEXT, MAX_LAYERS, MAX_WIDTH, MAX_BATCH = 2**24, 2**20, 1024, 2**16, 2**20
MAX_INT = 2**63  # counts, steps and seeds: what a 64-bit integer holds


def shown(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def type_problem(value: Any, hint: Any) -> str | None:
    """What `value` should have been to be a `hint` (None when it is one), for values read back from JSON: a
    bool is no number, a float must be finite, an int must fit 64 bits, lists and dicts are checked inside."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        problems = [type_problem(value, a) for a in args if a is not type(None)]
        if None in problems:
            return None
        return " or ".join(problems) + (" or null" if type(None) in args else "")
    if origin is Literal:
        return None if isinstance(value, str) and value in args else "one of " + ", ".join(map(str, args))
    if origin is list:
        if isinstance(value, list) and all(type_problem(v, args[0]) is None for v in value):
            return None
        return f"a list of which each item is {type_problem(object(), args[0])}"
    if origin is dict:
        if isinstance(value, dict) and all(
            isinstance(k, str) and type_problem(v, args[1]) is None for k, v in value.items()
        ):
            return None
        return f"an object of which each value is {type_problem(object(), args[1])}"
    integer = isinstance(value, int) and not isinstance(value, bool)
    whole = integer and -MAX_INT <= value < MAX_INT
    ok, what = {
        bool: (isinstance(value, bool), "true or false"),
        int: (whole, "a whole number" + (" that fits 64 bits" if integer else "")),
        float: (whole or (isinstance(value, float) and math.isfinite(value)), "a finite number"),
        str: (isinstance(value, str), "a string"),
        Any: (True, "anything"),
    }[hint]
    return None if ok else what


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a dataclass (its annotations are strings), worked out once."""
    return typing.get_type_hints(cls)


def check_types(config: Any, what: str) -> None:
    """Refuse a field of a config dataclass whose value is not of its declared type (SLMError naming it)."""
    hints = field_types(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if problem := type_problem(value, hints[f.name]):
            raise SLMError(f"invalid {what}: {f.name} must be {problem}, not {shown(value)}")


@dataclass
class ModelConfig:
    """The shape of a GPT: everything needed to rebuild its weights."""

    vocab_size: int = option(2048, "tokenizer and embedding vocabulary size")
    context: int = option(256, "context length in tokens")
    n_layer: int = option(4, "transformer blocks")
    n_head: int = option(4, "attention heads")
    n_kv_head: int = option(4, "key/value heads (grouped-query attention; = n-head for plain multi-head)")
    n_embd: int = option(128, "model width")
    mlp_hidden: int = option(0, "SwiGLU hidden width (0: about 8/3 of n-embd, rounded up to a multiple of 32)")
    rope_theta: float = option(10000.0, "RoPE base")
    norm_eps: float = 1e-5
    tie_embeddings: bool = option(True, "separate input and output embeddings")
    dropout: float = option(0.0, "dropout probability")

    def __post_init__(self) -> None:
        check_types(self, "model config")
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-8 * self.n_embd // 3 // 32) * 32
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        heads = self.n_head > 0 and self.n_embd % self.n_head == 0
        checks = [
            (0 < self.vocab_size <= MAX_VOCAB, f"vocab_size must be between 1 and {MAX_VOCAB}"),
            (0 < self.context <= MAX_CONTEXT, f"context must be between 1 and {MAX_CONTEXT}"),
            (0 < self.n_layer <= MAX_LAYERS, f"n_layer must be between 1 and {MAX_LAYERS}"),
            (0 < self.n_embd <= MAX_WIDTH, f"n_embd must be between 1 and {MAX_WIDTH}"),
            (heads, "n_embd must be a multiple of n_head"),
            (heads and self.head_dim % 2 == 0, "n_embd / n_head (the head size) must be even for RoPE"),
            (self.n_kv_head > 0 and self.n_head % self.n_kv_head == 0, "n_head must be a multiple of n_kv_head"),
            (0 < self.mlp_hidden <= 4 * MAX_WIDTH, f"mlp_hidden must be between 1 and {4 * MAX_WIDTH} (0: automatic)"),
            (self.rope_theta > 0, "rope_theta must be positive"),
            (0.0 < self.norm_eps < 1.0, "norm_eps must be in (0, 1)"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
        ]
        check("model config", checks)


@dataclass
class TrainConfig:
    """How to train: data, tokenizer, optimisation, limits, evaluation and checkpoints."""

    # data and tokenizer
    data: list[str] = option(factory=list, help="files or folders under data/ (default: all of data/)")
    val_fraction: float = option(0.1, "fraction of the text held out for validation")
    split_seed: int = option(0, "seed of the train/validation split")
    decode_errors: DecodeErrors = option("skip", "files that are not UTF-8: skip them, or replace bad bytes")
    keep_duplicates: bool = option(False, "train on every copy of a duplicated document (default: on the first)")
    mix: dict[str, float] = option(
        factory=dict,
        help="sampling weights of data/'s sources, as books=0.5,wiki=0.2 (default: data/mix.json, else by size)",
    )
    tokenizer: str | None = None  # a tokenizer.json path or a workspace tokenizer name; None trains one
    min_frequency: int = option(2, "BPE: minimum pair frequency for a merge")
    init_from: str | None = None  # a checkpoint to start from (fine-tuning)
    # optimisation
    batch_size: int = option(32, "sequences per micro-batch")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    optimizer: Optimizer = option("adamw", "optimizer")
    lr: float = option(3e-3, "peak learning rate (AdamW)")
    muon_lr: float = option(0.02, "peak learning rate of Muon's hidden matrices (with --optimizer muon)")
    min_lr_ratio: float = option(0.0, "final learning rate as a fraction of the peak")
    warmup_steps: int = option(50, "linear warmup steps")
    schedule: Schedule = option("wsd", "learning-rate schedule")
    decay_fraction: float = option(0.4, "wsd: final fraction of the run spent decaying")
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only)")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "gradient norm clipping (0: off)")
    # limits: the run ends at whichever comes first (steps is always set)
    max_steps: int = option(2000, "stop after this many optimizer steps")
    max_tokens: int | None = option(None, "stop after this many training tokens")
    max_minutes: float | None = option(
        None, "stop after this many minutes of training (the schedule follows the clock)"
    )
    # evaluation, samples, checkpoints
    eval_interval: int = option(100, "evaluate every N steps")
    eval_tokens: int = option(65536, "validation tokens per evaluation")
    sample_interval: int = option(500, "print a generated sample every N steps")
    sample_tokens: int = option(64, "length of those samples")
    checkpoint_interval: int = option(500, "save `latest` every N steps")
    patience: int | None = option(None, "stop early after N evaluations without a better val loss")
    # machine
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps")
    precision: Precision = option("auto", "auto: bf16 on CUDA, fp32 on CPU")
    compile: bool = option(False, "torch.compile the model")
    grad_checkpoint: bool = option(False, "recompute activations to save memory")
    shard: bool = option(False, "under torchrun: shard the model across processes (FSDP2) instead of DDP")
    threads: int | None = option(None, "CPU threads for torch")
    seed: int = option(1337, "random seed")

    def __post_init__(self) -> None:
        check_types(self, "training config")
        checks = [
            (0.0 < self.val_fraction < 1.0, "val_fraction must be between 0 and 1"),
            (all(w >= 0 for w in self.mix.values()), "mix weights must be at least 0"),
            (not self.mix or any(self.mix.values()), "mix weights must not all be 0"),
            (0 < self.batch_size <= MAX_BATCH, f"batch_size must be between 1 and {MAX_BATCH}"),
            (0 < self.grad_accum <= MAX_BATCH, f"grad_accum must be between 1 and {MAX_BATCH}"),
            (self.min_frequency >= 0, "min_frequency must be at least 0"),
            (self.lr > 0, "lr must be positive"),
            (self.muon_lr > 0, "muon_lr must be positive"),
            (0.0 <= self.min_lr_ratio <= 1.0, "min_lr_ratio must be in [0, 1]"),
            (self.warmup_steps >= 0, "warmup_steps must be at least 0"),
            (self.weight_decay >= 0, "weight_decay must be at least 0"),
            (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0, "beta1 and beta2 must be in [0, 1)"),
            (self.grad_clip >= 0, "grad_clip must be at least 0 (0: off)"),
            (self.max_steps > 0, "max_steps must be positive"),
            (self.max_tokens is None or self.max_tokens > 0, "max_tokens must be positive"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be positive"),
            (self.eval_interval > 0, "eval_interval must be positive"),
            (self.eval_tokens > 0, "eval_tokens must be positive"),
            (self.sample_interval > 0, "sample_interval must be positive"),
            (self.sample_tokens >= 0, "sample_tokens must be at least 0"),
            (self.checkpoint_interval > 0, "checkpoint_interval must be positive"),
            (self.patience is None or self.patience >= 0, "patience must be at least 0"),
            (self.threads is None or self.threads >= 0, "threads must be at least 0"),
            (0.0 <= self.decay_fraction <= 1.0, "decay_fraction must be in [0, 1]"),
            (self.optimizer in ("adamw", "muon"), "optimizer must be adamw or muon"),
            (self.schedule in ("cosine", "wsd"), "schedule must be cosine or wsd"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "precision must be auto, fp32, bf16 or fp16"),
        ]
        check("training config", checks)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any]


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "toy",
            "about 1M parameters: learns on a laptop CPU in minutes",
            dict(vocab_size=1024, context=64, n_layer=4, n_head=4, n_kv_head=4, n_embd=128, tie_embeddings=False),
            dict(
                batch_size=16,
                lr=3e-3,
                warmup_steps=50,
                max_steps=2000,
                eval_interval=200,
                eval_tokens=16384,
                sample_interval=1000,
            ),
        ),
        Preset(
            "small",
            "about 10M parameters: a good CPU model in an hour, minutes on a GPU",
            dict(vocab_size=8192, context=512, n_layer=6, n_head=5, n_kv_head=5, n_embd=320),
            dict(batch_size=16, lr=2e-3, warmup_steps=100, max_steps=5000, eval_interval=250),
        ),
        Preset(
            "base",
            "about 35M parameters (8 layers, 512 wide): wants a GPU",
            dict(vocab_size=16384, context=1024, n_layer=8, n_head=8, n_kv_head=8, n_embd=512),
            dict(batch_size=16, grad_accum=2, lr=1.5e-3, warmup_steps=200, max_steps=10000, eval_interval=250),
        ),
        Preset(
            "gpt2",
            "about 124M parameters, GPT-2 small's shape",
            dict(vocab_size=50304, context=1024, n_layer=12, n_head=12, n_kv_head=12, n_embd=768),
            dict(batch_size=16, grad_accum=4, lr=6e-4, warmup_steps=500, max_steps=20000, eval_interval=500),
        ),
        Preset(
            "large",
            "about 350M parameters, GPT-2 medium's shape",
            dict(vocab_size=50304, context=1024, n_layer=24, n_head=16, n_kv_head=16, n_embd=1024),
            dict(batch_size=8, grad_accum=8, lr=3e-4, warmup_steps=1000, max_steps=40000, eval_interval=500),
        ),
        Preset(
            "1b",
            "about 1.1B parameters (24 layers, 1536 wide, grouped-query attention)",
            dict(
                vocab_size=50304,
                context=2048,
                n_layer=24,
                n_head=16,
                n_kv_head=4,
                n_embd=1536,
                mlp_hidden=6912,
                tie_embeddings=False,
            ),
            dict(
                batch_size=4,
                grad_accum=16,
                lr=2e-4,
                warmup_steps=2000,
                max_steps=100000,
                eval_interval=1000,
                grad_checkpoint=True,
            ),
        ),
    ]
}


# Training defaults of the commands that tune a checkpoint (flags override them): supervised fine-tuning on
# conversations (`slm sft`) and preference tuning from ratings (`slm dpo`, a few dozen pairs: small steps).
SFT_TRAIN: dict[str, Any] = dict(
    batch_size=16,
    lr=1e-3,
    warmup_steps=20,
    max_steps=300,
    eval_interval=50,
    eval_tokens=16384,
    sample_interval=100,
    sample_tokens=48,
    checkpoint_interval=100,
)
DPO_TRAIN: dict[str, Any] = dict(
    batch_size=8,
    lr=1e-4,
    warmup_steps=10,
    max_steps=100,
    eval_interval=20,
    sample_interval=100,
    sample_tokens=48,
    checkpoint_interval=50,
    val_fraction=0.2,
)


def preset(name: str) -> Preset:
    if name not in PRESETS:
        raise SLMError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_tokens(name: str) -> int:
    """The training tokens of a run of the preset with its own settings."""
    p = preset(name)
    return p.train["max_steps"] * p.train["batch_size"] * p.train.get("grad_accum", 1) * p.model["context"]


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a dict (read from JSON), refusing unknown keys and values of the wrong
    type or range with a one-line SLMError."""
    if not isinstance(data, dict):
        raise SLMError(f"a {cls.__name__} must be a JSON object, not {shown(data)}")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SLMError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    return cls(**data)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def load_json(path: Path) -> dict[str, Any]:
    """Read a JSON object, turning any failure into a one-line error naming the file."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SLMError(f"{path} does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON or UTF-8, an integer of over 4300 digits
        raise SLMError(f"{path} is not valid JSON ({e})") from None
    except RecursionError:
        raise SLMError(f"{path} is not valid JSON (nested too deeply)") from None
    if not isinstance(value, dict):
        raise SLMError(f"{path} does not hold a JSON object")
    return value


def count_params(m: ModelConfig) -> int:
    """Exact parameter count of the GPT built from `m`, without building it."""
    attn = m.n_embd * (m.n_head + 2 * m.n_kv_head) * m.head_dim + m.n_head * m.head_dim * m.n_embd
    mlp = 3 * m.n_embd * m.mlp_hidden
    block = attn + mlp + 2 * m.n_embd
    embeddings = m.vocab_size * m.n_embd * (1 if m.tie_embeddings else 2)
    return m.n_layer * block + embeddings + m.n_embd


@dataclass
class MemoryEstimate:
    """Rough training memory in bytes: weights, gradients, optimizer state and activations."""

    weights: int
    grads: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.grads + self.optimizer + self.activations


def estimate_memory(m: ModelConfig, t: TrainConfig) -> MemoryEstimate:
    """Estimate training memory for one micro-batch; weights fp32, activations in the compute dtype."""
    params = count_params(m)
    act_bytes = 2 if t.precision in ("bf16", "fp16") else 4
    tokens = t.batch_size * m.context
    # per layer and token: norms, qkv, attention output, MLP (gate, up, product) and residuals
    per_layer = m.n_embd * 8 + (m.n_head + 2 * m.n_kv_head) * m.head_dim + 3 * m.mlp_hidden
    layers = m.n_layer if not t.grad_checkpoint else 2
    logits = tokens * m.vocab_size * 4 * 3  # fp32 logits, softmax and its gradient
    activations = tokens * per_layer * layers * act_bytes + logits
    return MemoryEstimate(params * 4, params * 4, params * 8, activations)
