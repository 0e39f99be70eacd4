"""Configuration dataclasses (model and training), the presets, and their JSON form."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from core.errors import SLMError, check

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Schedule = Literal["cosine", "wsd"]
Optimizer = Literal["adamw", "muon"]


@dataclass
class ModelConfig:
    """The shape of a GPT: everything needed to rebuild its weights."""

    vocab_size: int = 2048
    context: int = 256
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int = 4
    n_embd: int = 128
    mlp_hidden: int = 0  # 0: the SwiGLU default, about 8/3 of n_embd rounded up to a multiple of 32
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.mlp_hidden == 0:
            self.mlp_hidden = -(-8 * self.n_embd // 3 // 32) * 32
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def validate(self) -> None:
        checks = [
            (self.vocab_size > 0, "vocab_size must be positive"),
            (self.context > 0, "context must be positive"),
            (self.n_layer > 0, "n_layer must be positive"),
            (self.n_head > 0 and self.n_embd % self.n_head == 0, "n_embd must be a multiple of n_head"),
            (self.head_dim % 2 == 0, "n_embd / n_head (the head size) must be even for RoPE"),
            (self.n_kv_head > 0 and self.n_head % self.n_kv_head == 0, "n_head must be a multiple of n_kv_head"),
            (0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
        ]
        check("model config", checks)


@dataclass
class TrainConfig:
    """How to train: data, tokenizer, optimisation, limits, evaluation and checkpoints."""

    # data and tokenizer
    data: list[str] = field(default_factory=list)  # files/folders under data/; empty means all of data/
    val_fraction: float = 0.1
    split_seed: int = 0
    decode_errors: Literal["skip", "replace"] = "skip"
    tokenizer: str | None = None  # a tokenizer.json path or a workspace tokenizer name; None trains one
    min_frequency: int = 2
    init_from: str | None = None  # a checkpoint to start from (fine-tuning)
    # optimisation
    batch_size: int = 32
    grad_accum: int = 1
    optimizer: Optimizer = "adamw"
    lr: float = 3e-3
    muon_lr: float = 0.02
    min_lr_ratio: float = 0.0
    warmup_steps: int = 50
    schedule: Schedule = "wsd"
    decay_fraction: float = 0.4  # wsd: the final fraction of the run spent decaying the learning rate
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    # limits: the run ends at whichever comes first (steps is always set)
    max_steps: int = 2000
    max_tokens: int | None = None
    max_minutes: float | None = None
    # evaluation, samples, checkpoints
    eval_interval: int = 100
    eval_tokens: int = 65536
    sample_interval: int = 500
    sample_tokens: int = 64
    checkpoint_interval: int = 500
    patience: int | None = None  # early stop after this many evaluations without a better val loss
    # machine
    device: str = "auto"
    precision: Precision = "auto"
    compile: bool = False
    grad_checkpoint: bool = False
    shard: bool = False  # under torchrun: shard weights, gradients and optimizer state (FSDP2) instead of DDP
    threads: int | None = None
    seed: int = 1337

    def __post_init__(self) -> None:
        checks = [
            (0.0 < self.val_fraction < 1.0, "val_fraction must be between 0 and 1"),
            (self.batch_size > 0, "batch_size must be positive"),
            (self.grad_accum > 0, "grad_accum must be positive"),
            (self.lr > 0, "lr must be positive"),
            (self.max_steps > 0, "max_steps must be positive"),
            (self.max_tokens is None or self.max_tokens > 0, "max_tokens must be positive"),
            (self.max_minutes is None or self.max_minutes > 0, "max_minutes must be positive"),
            (self.eval_interval > 0, "eval_interval must be positive"),
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


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a dict, refusing unknown keys with a clear message."""
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
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SLMError(f"{path} is not valid JSON ({e})") from None
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
