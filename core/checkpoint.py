"""Checkpoints: atomic save and load, with every weight checked on the way back (`core.listing` reads and checks
checkpoint.json and finds the runs).

A checkpoint is a folder: `model.safetensors` (weights), `checkpoint.json` (model config, step,
tokens seen, metrics, tokenizer hash, lineage, weights checksum), `tokenizer.json`, and for resumable
checkpoints `trainer.safetensors` plus the `trainer` entry of the JSON (optimizer, RNG and data
position). Nothing is pickled. A run folder `checkpoints/<run>/` holds `run.json`, `metrics.jsonl`
and the checkpoints `latest/`, `best/` and `final/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.config import ModelConfig, count_params, from_dict, shown, to_dict
from core.errors import SLMError
from core.listing import FORMAT, Unreadable, check_fields, read_meta
from core.tokenizer.bpe import Tokenizer

if TYPE_CHECKING:  # torch loads only when weights are read or written: listing stays instant
    import torch

WEIGHT_DTYPES = ("F16", "BF16", "F32", "F64")
TRAINER = {
    "step": int, "tokens_seen": int, "elapsed_s": float, "best_val_loss": float | None, "evals_since_best": int,
    "optimizers": list[dict[str, Any]], "scaler": dict[str, float | bool | None] | None,
}  # fmt: skip
Scalar = float | bool | str | list[float] | None  # what optimizers' parameter groups and scalars hold besides tensors
OPTIMIZER = {"param_groups": list[dict[str, Scalar]], "scalars": dict[str, dict[str, Scalar]]}
GROUP = {"params": list[int], "lr": float, "weight_decay": float, "eps": float, "momentum": float, "betas": list[float]}


def save_file(tensors: dict[str, torch.Tensor], path: str, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, whose failures to write (a full disk, a file-size limit) raise OSError, and whose
    file gets the umask's permissions (safetensors' own are 0600)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file as save

    try:
        save(tensors, path, metadata=metadata)
    except SafetensorError as e:  # "Error while serializing: I/O error: No space left on device (os error 28)"
        code = re.search(r"\(os error (\d+)\)", str(e))
        if code is None:
            raise
        raise OSError(int(code[1]), os.strerror(int(code[1])), path) from None
    os.chmod(path, atomic.file_mode())


def load_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as load

    return load(path)


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


@dataclass
class Checkpoint:
    """A loaded checkpoint: config, weights on CPU, tokenizer, metadata and (maybe) trainer state."""

    path: Path
    config: ModelConfig
    state: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    meta: dict[str, Any]
    trainer_tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def step(self) -> int:
        return int(self.meta.get("step", 0))

    def lineage_ref(self) -> dict[str, Any]:
        """How a child records this checkpoint as its parent."""
        return {"run_id": self.meta.get("run_id"), "path": str(self.path), "step": self.step}

    def ancestors(self) -> list[str]:
        """Run ids this checkpoint descends from, its own first."""
        ids = [self.meta.get("run_id")] + [p.get("run_id") for p in self.meta.get("lineage", [])]
        return [i for i in ids if i]


def weights_for_saving(model: torch.nn.Module, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The state dict (`model`'s, or `state` gathered from shards) without the tied output weight
    (safetensors refuses shared tensors)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in (state or model.state_dict()).items()}
    if getattr(model, "config", None) is not None and model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def save_checkpoint(
    path: Path,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    tokenizer: Tokenizer,
    trainer_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint folder atomically: a crash leaves the previous one at `path` intact."""

    def build(tmp: Path) -> None:
        save_file(weights, str(tmp / "model.safetensors"))
        if trainer_tensors is not None:
            save_file(trainer_tensors, str(tmp / "trainer.safetensors"))
        full = {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **meta,
            "params": count_params(ModelConfig(**meta["model"])),
            "tokenizer_hash": tokenizer.hash,
            "weights_digest": file_digest(tmp / "model.safetensors"),
        }
        (tmp / "checkpoint.json").write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")

    atomic.replace_dir(build, path)


def save_as_run(
    out: Path,
    config: ModelConfig,
    weights: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    lineage: list[dict[str, Any]],
    origin: dict[str, Any],
) -> Path:
    """Save weights made outside training (a merge, an import) as the run `out` with its `final` checkpoint;
    `origin` (e.g. {"merge": ...}) goes into both the checkpoint's and the run's JSON. Returns `out/final`."""
    run_id = uuid.uuid4().hex
    model = to_dict(config)
    meta = {
        "kind": "final",
        "run": out.name,
        "run_id": run_id,
        "step": 0,
        "tokens_seen": 0,
        "model": model,
        "metrics": {},
        "lineage": lineage,
        **origin,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "final", weights, meta, tokenizer)
    tokenizer.save(out / "tokenizer.json")
    run_info = {
        "id": run_id,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "params": count_params(config),
        "tokenizer_hash": tokenizer.hash,
        "lineage": lineage,
        **origin,
    }
    atomic.write_json(out / "run.json", run_info)
    return out / "final"


# --- reading back: everything from disk is checked before it is used ---------------------------------


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The weights a model of `config` has, by name, with their shapes (read off a model on the meta device)."""
    import torch

    from core.model import GPT

    with torch.device("meta"):
        model = GPT(config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _check_header(path: Path, file: Path, config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Names, dtypes and shapes of model.safetensors against `config`, before reading a weight."""
    from safetensors import safe_open

    size, params = file.stat().st_size, count_params(config)
    if params * 2 > size:
        raise Unreadable(path, f"its config has {params:,} parameters but model.safetensors holds {size:,} bytes")
    expected = expected_shapes(config)
    try:
        with safe_open(str(file), "pt") as f:
            header = {name: (f.get_slice(name).get_dtype(), tuple(f.get_slice(name).get_shape())) for name in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors' errors for a truncated or garbled file
        raise Unreadable(path, f"model.safetensors is truncated or not safetensors ({str(e)[:120]})") from None
    optional = {"lm_head.weight"} if config.tie_embeddings else set()
    if missing := sorted(set(expected) - set(header) - optional):
        raise Unreadable(path, f"model.safetensors lacks {', '.join(missing[:3])}")
    for name, (dtype, shape) in header.items():
        if name not in expected:
            raise Unreadable(path, f"model.safetensors holds {shown(name)}, which the model has no place for")
        if dtype not in WEIGHT_DTYPES:
            raise Unreadable(path, f"{name} is {dtype}; weights are F16, BF16, F32 or F64")
        if shape != expected[name]:
            raise Unreadable(path, f"{name} has shape {list(shape)} but the config gives {list(expected[name])}")
    return expected


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether no floating-point tensor among `tensors` holds nan or inf."""
    import torch

    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def _finite(path: Path, tensors: dict[str, torch.Tensor], what: str) -> None:
    for name, t in tensors.items():
        if not all_finite([t]):
            raise Unreadable(path, f"{what} {name} holds nan or inf")


def _check_trainer(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor], shapes: list) -> None:
    """The resume state (`trainer` entry and trainer.safetensors) in the shape the trainer restores it from;
    `shapes` are those of the model's parameters."""
    import torch

    saved = meta.get("trainer")
    check_fields(path, saved, TRAINER, "trainer: ", required=("step", "tokens_seen", "elapsed_s", "optimizers"))
    ids: list[set[int]] = []
    for i, record in enumerate(saved["optimizers"]):
        where = f"trainer optimizer {i}: "
        check_fields(path, record, OPTIMIZER, where, required=("param_groups", "scalars"))
        for group in record["param_groups"]:
            check_fields(path, group, GROUP, where + "parameter group ", required=("params",))
        params = [p for group in record["param_groups"] for p in group["params"]]
        if sorted(params) != list(range(len(params))):
            raise Unreadable(path, f"{where}its parameter ids are not 0 to {len(params) - 1}, once each")
        if not all(pid.isascii() and pid.isdigit() and int(pid) < len(params) for pid in record["scalars"]):
            raise Unreadable(path, f"{where}its scalars name parameters it does not have")
        ids.append(set(params))
    if sum(map(len, ids)) != len(shapes):
        raise Unreadable(path, f"trainer: its optimizers hold {sum(map(len, ids))} parameters, the model {len(shapes)}")
    rng = torch.get_rng_state().shape
    for name in ("rng.torch", "rng.data"):
        if name not in tensors or tensors[name].dtype != torch.uint8 or tensors[name].shape != rng:
            raise Unreadable(path, f"trainer.safetensors has no valid {name} (the random state)")
    for name, t in tensors.items():
        opt = re.fullmatch(r"opt(\d+)\.(\d+)\.\w+", name)
        if name in ("rng.torch", "rng.data") or (name == "rng.cuda" and t.dtype == torch.uint8 and t.dim() == 1):
            continue
        if opt is None or int(opt[1]) >= len(ids) or int(opt[2]) not in ids[int(opt[1])]:
            raise Unreadable(path, f"trainer.safetensors holds {shown(name)}, which no optimizer has")
        if not t.is_floating_point() or (t.dim() and tuple(t.shape) not in set(shapes)):
            raise Unreadable(
                path, f"trainer.safetensors: {name} is {t.dtype} of shape {list(t.shape)}, unlike any weight"
            )
    _finite(path, tensors, "trainer state")


def load_checkpoint(path: Path, with_trainer: bool = False) -> Checkpoint:
    """Load and verify a checkpoint folder; every failure is a one-line SLMError."""
    path = Path(path)
    atomic.recover_dir(path)  # a save interrupted between its two renames left the checkpoint aside
    if not (path / "checkpoint.json").exists():
        raise SLMError(f"{path} is not a checkpoint (no checkpoint.json)")
    meta = read_meta(path)
    config = from_dict(ModelConfig, meta["model"])
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise SLMError(f"checkpoint {path} is incomplete: model.safetensors is missing")
    if meta.get("weights_digest") and file_digest(weights) != meta["weights_digest"]:
        raise SLMError(f"checkpoint {path} is corrupt: model.safetensors does not match its checksum")
    expected = _check_header(path, weights, config)
    if with_trainer and not (path / "trainer.safetensors").is_file():
        raise SLMError(f"checkpoint {path} holds no trainer state: it cannot be resumed")
    try:
        state = load_file(str(weights))
        trainer = load_file(str(path / "trainer.safetensors")) if with_trainer else {}
    except Exception as e:  # safetensors' errors for a truncated or garbled file, OSError
        raise SLMError(f"checkpoint {path} is corrupt or truncated ({str(e)[:120]})") from None
    _finite(path, state, "weight")
    if with_trainer:
        tied = {"lm_head.weight"} if config.tie_embeddings else set()  # one parameter with embed.weight
        _check_trainer(path, meta, trainer, [shape for name, shape in expected.items() if name not in tied])
    tokenizer = Tokenizer.load(path / "tokenizer.json")
    if meta.get("tokenizer_hash") and tokenizer.hash != meta["tokenizer_hash"]:
        raise SLMError(f"checkpoint {path}: tokenizer.json does not match the tokenizer the model was trained with")
    if tokenizer.vocab_size > config.vocab_size:
        raise SLMError(
            f"checkpoint {path}: the tokenizer has {tokenizer.vocab_size} tokens but the model only {config.vocab_size}"
        )
    return Checkpoint(path, config, state, tokenizer, meta, trainer)


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights into `model`, accepting only a missing tied output weight."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise SLMError(
            f"checkpoint {source} does not fit the model: {wrong[0]} has shape {list(state[wrong[0]].shape)}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if model.config.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SLMError(
            f"checkpoint {source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
