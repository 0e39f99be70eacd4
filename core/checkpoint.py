"""Checkpoints: atomic save and load, metadata, lineage, and listing runs.

A checkpoint is a folder: `model.safetensors` (weights), `checkpoint.json` (model config, step,
tokens seen, metrics, tokenizer hash, lineage, weights checksum), `tokenizer.json`, and for resumable
checkpoints `trainer.safetensors` plus the `trainer` entry of the JSON (optimizer, RNG and data
position). Nothing is pickled. A run folder `checkpoints/<run>/` holds `run.json`, `metrics.jsonl`
and the checkpoints `latest/`, `best/` and `final/`.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.config import ModelConfig, count_params, from_dict, load_json, to_dict
from core.errors import SLMError
from core.tokenizer.bpe import Tokenizer
from core.workspace import Workspace

if TYPE_CHECKING:  # torch loads only when weights are read or written: listing stays instant
    import torch

FORMAT = 1
KINDS = ("best", "final", "latest")  # the order in which a bare run name picks its checkpoint


def save_file(tensors: dict[str, torch.Tensor], path: str) -> None:
    from safetensors.torch import save_file as save

    save(tensors, path)


def load_file(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file as load

    return load(path)


def label(path: Path) -> str:
    """How a checkpoint is named to the user: RUN/KIND."""
    return f"{Path(path).parent.name}/{Path(path).name}"


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


def read_meta(path: Path) -> dict[str, Any]:
    atomic.recover_dir(path)
    meta = load_json(Path(path) / "checkpoint.json")
    if "model" not in meta:
        raise SLMError(f"{path}/checkpoint.json has no model config")
    return meta


def load_checkpoint(path: Path, with_trainer: bool = False) -> Checkpoint:
    """Load and verify a checkpoint folder; every failure is a one-line SLMError."""
    path = Path(path)
    if not (path / "checkpoint.json").exists() and not path.with_name(f".{path.name}.old").exists():
        raise SLMError(f"{path} is not a checkpoint (no checkpoint.json)")
    meta = read_meta(path)
    config = from_dict(ModelConfig, meta["model"])
    weights = path / "model.safetensors"
    if not weights.exists():
        raise SLMError(f"checkpoint {path} is incomplete: model.safetensors is missing")
    if meta.get("weights_digest") and file_digest(weights) != meta["weights_digest"]:
        raise SLMError(f"checkpoint {path} is corrupt: model.safetensors does not match its checksum")
    from safetensors import SafetensorError

    try:
        state = load_file(str(weights))
        trainer = load_file(str(path / "trainer.safetensors")) if with_trainer else {}
    except (SafetensorError, OSError, ValueError) as e:
        raise SLMError(f"checkpoint {path} is corrupt or truncated ({e})") from None
    if with_trainer and not trainer:
        raise SLMError(f"checkpoint {path} holds no trainer state: it cannot be resumed")
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
    missing, unexpected = model.load_state_dict(state, strict=False)
    if model.config.tie_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise SLMError(
            f"checkpoint {source} does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


# --- finding checkpoints and runs ---------------------------------------------------------------


@dataclass
class CheckpointEntry:
    """A row of `slm checkpoints`: what listing needs, read from checkpoint.json only."""

    path: Path
    run: str
    kind: str
    step: int
    params: int
    created: str
    val_loss: float | None
    val_bpb: float | None
    parent: str | None
    meta: dict[str, Any]


def _entry(path: Path) -> CheckpointEntry | None:
    try:
        meta = read_meta(path)
    except SLMError:
        return None
    metrics = meta.get("metrics", {})
    lineage = meta.get("lineage") or []
    return CheckpointEntry(
        path=path,
        run=path.parent.name,
        kind=path.name,
        step=int(meta.get("step", 0)),
        params=int(meta.get("params", 0)),
        created=str(meta.get("created", "")),
        val_loss=metrics.get("val_loss"),
        val_bpb=metrics.get("val_bpb"),
        parent=_parent(meta, lineage),
        meta=meta,
    )


def _parent(meta: dict[str, Any], lineage: list[dict[str, Any]]) -> str | None:
    """Where a checkpoint came from: its parent checkpoint, or the checkpoints it merges."""
    merge = meta.get("merge")
    if merge and merge.get("parents"):
        names = ["/".join(Path(p).parts[-2:]) for p in merge["parents"]]
        return f"{merge.get('method', 'merge')} of {' + '.join(names)}"
    return lineage[0].get("path") if lineage else None


def run_dirs(workspace: Workspace) -> list[Path]:
    """Run folders (those with a run.json), most recently changed first."""
    root = workspace.checkpoints_dir
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and (p / "run.json").exists()]
    return sorted(runs, key=lambda p: (p / "run.json").stat().st_mtime, reverse=True)


def list_checkpoints(workspace: Workspace) -> list[CheckpointEntry]:
    entries = []
    for run in run_dirs(workspace):
        children = sorted(p for p in run.iterdir() if p.is_dir() and not p.name.startswith("."))
        for child in children:
            atomic.recover_dir(child)
            entry = _entry(child)
            if entry is not None:
                entries.append(entry)
    return entries


def resolve_checkpoint(workspace: Workspace, ref: str | None) -> Path:
    """A checkpoint folder from a path, RUN/KIND, RUN (best, else final, else latest) or None (newest run)."""
    if ref is None:
        runs = run_dirs(workspace)
        for run in runs:
            found = _pick(run)
            if found:
                return found
        raise SLMError(f"no checkpoints in {workspace.checkpoints_dir}: train a model first with `slm train`")
    direct = Path(ref).expanduser()
    for candidate in (direct, workspace.checkpoints_dir / ref):
        atomic.recover_dir(candidate)
        if (candidate / "checkpoint.json").exists():
            return candidate
        if (candidate / "run.json").exists() and (found := _pick(candidate)):
            return found
    known = ", ".join(p.name for p in run_dirs(workspace)[:8]) or "none"
    raise SLMError(f"no checkpoint {ref!r} (runs in {workspace.checkpoints_dir}: {known})")


def _pick(run: Path) -> Path | None:
    for kind in KINDS:
        atomic.recover_dir(run / kind)
        if (run / kind / "checkpoint.json").exists():
            return run / kind
    return None
