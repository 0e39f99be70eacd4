"""Merging checkpoints: check that they can be merged, combine their weights, save the result as a run.

Only checkpoints of one architecture and tokenizer merge, and only those that share an ancestor
average well: two models trained from different initialisations learn the same features in
different, permuted hidden units, so their mean is noise. A merged checkpoint is a run of its own
(`checkpoints/NAME/final` plus `run.json`): it lists, chats and fine-tunes like any other, and its
lineage holds its parents, so runs branched from it still share their ancestors.

Methods live in `METHODS`, keyed by the name the CLI and the studio show.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core import atomic
from core.checkpoint import Checkpoint, load_checkpoint, read_meta, save_checkpoint
from core.config import ModelConfig, count_params, from_dict, to_dict
from core.data import Corpus, ProgressFn, encode_corpus
from core.errors import SLMError
from core.tokenizer import Tokenizer
from core.workspace import Workspace, check_name

if TYPE_CHECKING:  # torch loads when weights are merged or evaluated, not when the studio starts
    import torch

    from core.evaluate import EvalResult

State = dict[str, "torch.Tensor"]
EVAL_TOKENS = 16384  # validation tokens scored per checkpoint when comparing a merge with its inputs


def label(path: Path) -> str:
    """How a checkpoint is named to the user: RUN/KIND."""
    return f"{Path(path).parent.name}/{Path(path).name}"


# --- compatibility ------------------------------------------------------------------------------


def load_header(path: Path) -> Checkpoint:
    """A checkpoint without its weights (config, tokenizer, metadata): enough for `check_compatible`."""
    path = Path(path)
    meta = read_meta(path)
    return Checkpoint(path, from_dict(ModelConfig, meta["model"]), {}, Tokenizer.load(path / "tokenizer.json"), meta)


def check_compatible(checkpoints: list[Checkpoint], force: bool = False) -> list[str]:
    """Refuse checkpoints that cannot be merged (SLMError); return warnings about those that may."""
    if len(checkpoints) < 2:
        raise SLMError("a merge needs at least two checkpoints")
    first, *others = checkpoints
    for other in others:
        _check_shapes(first, other)
        if other.tokenizer.hash != first.tokenizer.hash:
            raise SLMError(
                f"cannot merge {label(first.path)} and {label(other.path)}: they use different tokenizers, "
                "so the same token ids stand for different text"
            )
    shared = set(first.ancestors()).intersection(*(c.ancestors() for c in others))
    if shared:
        return []
    *rest, last = [label(c.path) for c in checkpoints]
    names = f"{', '.join(rest)} and {last}"
    problem = (
        f"{names} share no ancestor: models trained from different initialisations do not average "
        "(their hidden units are permuted, so the mean is noise)"
    )
    if not force:
        raise SLMError(f"{problem}; branch them from one base with `slm train --from BASE`, or force the merge")
    return [f"forced: {problem}"]


def _check_shapes(first: Checkpoint, other: Checkpoint) -> None:
    a, b = to_dict(first.config), to_dict(other.config)
    differing = [f"{key} {a[key]} vs {b[key]}" for key in a if a[key] != b[key]]
    if differing:
        raise SLMError(
            f"cannot merge {label(first.path)} and {label(other.path)}: their model configs differ "
            f"({', '.join(differing)})"
        )


# --- methods ------------------------------------------------------------------------------------


def normalised(weights: list[float], count: int) -> list[float]:
    """Weights that sum to 1; refuses a wrong count and weights that are not positive numbers."""
    if len(weights) != count:
        raise SLMError(f"{len(weights)} weights for {count} checkpoints: give one weight per checkpoint")
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise SLMError(f"weights must be positive numbers, not {', '.join(f'{w:g}' for w in weights)}")
    total = sum(weights)
    return [w / total for w in weights]


def merge_linear(states: list[State], weights: list[float]) -> State:
    """The weighted average of the weights (computed in float32, stored in the inputs' dtype)."""
    weights = normalised(weights, len(states))
    keys = states[0].keys()
    if any(s.keys() != keys for s in states):
        raise SLMError("the checkpoints hold different tensors: they cannot be averaged")
    merged = {}
    for key in keys:
        total = sum(w * s[key].float() for w, s in zip(weights, states, strict=True))
        merged[key] = total.to(states[0][key].dtype).contiguous()
    return merged


@dataclass(frozen=True)
class MergeMethod:
    name: str
    description: str
    merge: Callable[[list[State], list[float]], State]


METHODS: dict[str, MergeMethod] = {
    m.name: m for m in [MergeMethod("linear", "weighted average of the weights", merge_linear)]
}


# --- merging checkpoints into a run --------------------------------------------------------------


def merge_checkpoints(
    paths: list[Path],
    weights: list[float] | None,
    method: str = "linear",
    *,
    out: Path,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Merge checkpoints into the new run folder `out`; returns the merged checkpoint (`out/final`).

    `weights` None means equal weights. Warnings (a forced merge) are kept in the checkpoint's `merge` entry.
    """
    out = Path(out)
    check_name(out.name)
    if method not in METHODS:
        raise SLMError(f"unknown merge method {method!r} (known: {', '.join(METHODS)})")
    if (out / "run.json").exists():
        raise SLMError(f"run {out.name!r} already exists: choose another name for the merge")
    weights = normalised(weights or [1.0] * len(paths), len(paths))
    checkpoints = []
    for i, path in enumerate(paths):
        checkpoints.append(load_checkpoint(Path(path)))
        if on_progress:
            on_progress("load", i + 1, len(paths))
    warnings = check_compatible(checkpoints, force)
    state = METHODS[method].merge([c.state for c in checkpoints], weights)
    if on_progress:
        on_progress("save", 0, 0)
    record = {"method": method, "parents": [str(c.path) for c in checkpoints], "weights": weights}
    if warnings:
        record["warnings"] = warnings
    return _save_run(out, checkpoints, state, record)


def _lineage(parents: list[Checkpoint]) -> list[dict[str, Any]]:
    """The parents' refs first (the first parent is the one listings show), then their ancestors, once each."""
    refs = [p.lineage_ref() for p in parents] + [ref for p in parents for ref in p.meta.get("lineage", [])]
    seen, lineage = set(), []
    for ref in refs:
        key = (ref.get("run_id"), ref.get("path"))
        if key not in seen:
            seen.add(key)
            lineage.append(ref)
    return lineage


def _save_run(out: Path, parents: list[Checkpoint], state: State, record: dict[str, Any]) -> Path:
    first = parents[0]
    run_id, lineage = uuid.uuid4().hex, _lineage(parents)
    model = to_dict(first.config)
    meta = {
        "kind": "final",
        "run": out.name,
        "run_id": run_id,
        "step": 0,
        "tokens_seen": 0,
        "model": model,
        "metrics": {},
        "lineage": lineage,
        "merge": record,
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "final", state, meta, first.tokenizer)
    first.tokenizer.save(out / "tokenizer.json")
    run_info = {
        "id": run_id,
        "name": out.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "params": count_params(first.config),
        "tokenizer_hash": first.tokenizer.hash,
        "lineage": lineage,
        "merge": record,
    }
    atomic.write_json(out / "run.json", run_info)
    return out / "final"


# --- comparing checkpoints on the validation split -----------------------------------------------


def evaluate_checkpoints(
    workspace: Workspace,
    paths: list[Path],
    selection: list[str] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_tokens: int = EVAL_TOKENS,
    device: str = "auto",
    on_progress: ProgressFn | None = None,
) -> list[EvalResult]:
    """Val loss and bits per byte of each checkpoint on the first `max_tokens` of the selection's validation split."""
    import torch

    from core.evaluate import evaluate_tokens
    from core.generate import Generator

    corpus = Corpus.scan(workspace.data_dir, selection)
    results = []
    for i, path in enumerate(paths):
        gen = Generator.from_checkpoint(Path(path), device)
        data = encode_corpus(corpus, gen.tokenizer, workspace.cache_dir, val_fraction, split_seed)
        byte_lengths = torch.tensor(gen.tokenizer.byte_lengths())
        results.append(evaluate_tokens(gen.model, data.val.array(), byte_lengths, batch_size=8, max_tokens=max_tokens))
        if on_progress:
            on_progress("evaluate", i + 1, len(paths))
    return results
