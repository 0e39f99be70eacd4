"""Merging checkpoints: check that they can be merged, combine their weights, save the result as a run.

Only checkpoints of one architecture and tokenizer merge, and only those that share an ancestor
average well: two models trained from different initialisations learn the same features in
different, permuted hidden units, so their mean is noise. A merged checkpoint is a run of its own
(`checkpoints/NAME/final` plus `run.json`): it lists, chats and fine-tunes like any other, and its
lineage holds its parents, so runs branched from it still share their ancestors.

Methods live in `METHODS`, keyed by the name the CLI and the studio show: a linear (weighted) average,
SLERP between two models, and task arithmetic and TIES, which combine each model's change from the
base it was branched from (its task vector) rather than the weights themselves.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.checkpoint import Checkpoint, load_checkpoint, save_as_run
from core.config import ModelConfig, from_dict, option, to_dict
from core.data.corpus import ProgressFn
from core.errors import SLMError
from core.listing import label, read_meta
from core.tokenizer.bpe import Tokenizer
from core.workspace import check_name

if TYPE_CHECKING:  # torch loads when weights are merged, not when the studio starts
    import torch

State = dict[str, "torch.Tensor"]
NEAR_PARALLEL = 1e-6  # slerp interpolates tensors whose cosine is this close to ±1 linearly


def shares(paths: list[Path] | list[str], weights: list[float]) -> str:
    """A merge's inputs with their weights: `0.50 × a/final + 0.50 × b/final`."""
    return " + ".join(f"{w:.2f} × {label(Path(p))}" for p, w in zip(paths, weights, strict=True))


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


@dataclass(frozen=True)
class MergeOptions:
    """Settings some methods read: TIES's density, task arithmetic's and TIES's scale."""

    density: float = option(0.2, "ties: share of each change from the base kept")
    scale: float = option(1.0, "task-arithmetic and ties: multiplies the merged change")

    def __post_init__(self) -> None:
        if not 0.0 < self.density <= 1.0:
            raise SLMError(f"density must be in (0, 1], not {self.density:g}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise SLMError(f"scale must be a positive number, not {self.scale:g}")


def _same_tensors(states: list[State]) -> None:
    keys = states[0].keys()
    if any(s.keys() != keys for s in states):
        raise SLMError("the checkpoints hold different tensors: they cannot be merged")


def merge_linear(states: list[State], weights: list[float]) -> State:
    """The weighted average of the weights (computed in float32, stored in the inputs' dtype)."""
    weights = normalised(weights, len(states))
    _same_tensors(states)
    merged = {}
    for key in states[0]:
        total = sum(w * s[key].float() for w, s in zip(weights, states, strict=True))
        merged[key] = total.to(states[0][key].dtype).contiguous()
    return merged


def merge_slerp(a: State, b: State, t: float) -> State:
    """Spherical interpolation from `a` (t=0) to `b` (t=1), tensor by tensor.

    Each tensor moves along the arc between the two rather than the chord, so it does not shrink the way
    a straight average of dissimilar tensors does; (nearly) parallel tensors have no arc to follow and
    are interpolated linearly.
    """
    if not 0.0 <= t <= 1.0:
        raise SLMError(f"slerp's t must be between 0 and 1, not {t:g}")
    _same_tensors([a, b])
    return {key: _slerp(a[key], b[key], t) for key in a}


def _slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    x, y = a.double().flatten(), b.double().flatten()
    norms = float(x.norm() * y.norm())
    cos = float(x @ y) / norms if norms > 0 else 1.0
    if abs(cos) > 1.0 - NEAR_PARALLEL:
        mixed = (1.0 - t) * x + t * y
    else:
        theta = math.acos(cos)
        mixed = (math.sin((1.0 - t) * theta) * x + math.sin(t * theta) * y) / math.sin(theta)
    return mixed.view_as(a).to(a.dtype).contiguous()


def _deltas(base: State, states: list[State], key: str) -> torch.Tensor:
    """The models' changes to one tensor since the base, stacked: (models, *shape) in float32."""
    import torch

    return torch.stack([s[key].float() - base[key].float() for s in states])


def _relative(weights: list[float], like: torch.Tensor) -> torch.Tensor:
    """Weights scaled so that equal weights are each 1, shaped to broadcast over stacked deltas."""
    import torch

    shares = normalised(weights, len(weights))
    return torch.tensor([w * len(shares) for w in shares]).view(-1, *[1] * (like.dim() - 1))


def merge_task_arithmetic(base: State, states: list[State], weights: list[float], options: MergeOptions) -> State:
    """base + scale × the weighted sum of task vectors (model − base); equal weights add each once."""
    _same_tensors([base, *states])
    merged = {}
    for key in base:
        deltas = _deltas(base, states, key)
        total = (_relative(weights, deltas) * deltas).sum(0)
        merged[key] = (base[key].float() + options.scale * total).to(base[key].dtype).contiguous()
    return merged


def merge_ties(base: State, states: list[State], weights: list[float], options: MergeOptions) -> State:
    """TIES: trim each task vector to its `density` largest magnitudes, elect a sign per weight by the
    weighted mass of the trimmed values, average only the values that agree with it, add scale × that to base.
    """
    _same_tensors([base, *states])
    merged = {}
    for key in base:
        deltas = _trim(_deltas(base, states, key), options.density)
        relative = _relative(weights, deltas)
        weighted = relative * deltas
        sign = weighted.sum(0).sign()
        agree = (deltas.sign() == sign) & (deltas != 0)
        mass = (relative * agree).sum(0)
        mean = (weighted * agree).sum(0) / mass.clamp_min(1e-12)  # 0 where no model agrees
        merged[key] = (base[key].float() + options.scale * mean).to(base[key].dtype).contiguous()
    return merged


def _trim(deltas: torch.Tensor, density: float) -> torch.Tensor:
    """Each model's delta with all but its `density` share of largest magnitudes set to zero."""
    flat = deltas.abs().flatten(1)
    keep = max(1, math.ceil(density * flat.shape[1]))
    threshold = flat.kthvalue(flat.shape[1] - keep + 1, dim=1).values
    return deltas * (flat >= threshold[:, None]).view_as(deltas)


Combine = Callable[[list[State], list[float], "State | None", MergeOptions], State]


@dataclass(frozen=True)
class MergeMethod:
    name: str
    description: str
    combine: Combine  # (states, normalised weights, base state or None, options)
    needs_base: bool = False  # works on deltas from the checkpoint the models were branched from
    count: int | None = None  # the number of checkpoints it merges, when fixed
    options: tuple[str, ...] = ()  # the MergeOptions fields it reads, recorded with the merge


METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in [
        MergeMethod("linear", "weighted average of the weights", lambda s, w, base, o: merge_linear(s, w)),
        MergeMethod(
            "slerp",
            "spherical interpolation of two models; t is the second one's weight share",
            lambda s, w, base, o: merge_slerp(s[0], s[1], w[1]),
            count=2,
        ),
        MergeMethod(
            "task-arithmetic",
            "base + scale × the weighted sum of each model's change from the base",
            lambda s, w, base, o: merge_task_arithmetic(base, s, w, o),
            needs_base=True,
            options=("scale",),
        ),
        MergeMethod(
            "ties",
            "changes from the base trimmed to the largest (density), signs elected, agreeing ones averaged",
            lambda s, w, base, o: merge_ties(base, s, w, o),
            needs_base=True,
            options=("density", "scale"),
        ),
    ]
}


def shared_base(checkpoints: list[Checkpoint]) -> Path | None:
    """The nearest ancestor of the first checkpoint that all the others share, if it is still on disk unchanged."""
    others = [set(c.ancestors()) for c in checkpoints[1:]]
    for ref in checkpoints[0].meta.get("lineage", []):
        run_id, path = ref.get("run_id"), Path(ref.get("path") or "")
        if not run_id or not all(run_id in ancestors for ancestors in others):
            continue
        try:
            meta = read_meta(path)
        except (SLMError, OSError):
            continue  # gone, or no longer readable
        if meta.get("run_id") == run_id and meta.get("step") == ref.get("step"):
            return path
    return None


# --- merging checkpoints into a run --------------------------------------------------------------


def merge_checkpoints(
    paths: list[Path],
    weights: list[float] | None,
    method: str = "linear",
    *,
    out: Path,
    base: Path | None = None,
    options: MergeOptions | None = None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
) -> Path:
    """Merge checkpoints into the new run folder `out`; returns the merged checkpoint (`out/final`).

    `weights` None means equal weights. `base` is read only by methods that need one, and defaults to
    the checkpoints' nearest shared ancestor. Warnings (a forced merge) are kept in the `merge` entry.
    """
    out = Path(out)
    check_name(out.name)
    if method not in METHODS:
        raise SLMError(f"unknown merge method {method!r} (known: {', '.join(METHODS)})")
    spec, options = METHODS[method], options or MergeOptions()
    if spec.count and len(paths) != spec.count:
        raise SLMError(f"{method} merges exactly {spec.count} checkpoints, not {len(paths)}")
    if (out / "run.json").exists():
        raise SLMError(f"run {out.name!r} already exists: choose another name for the merge")
    weights = normalised(weights or [1.0] * len(paths), len(paths))
    checkpoints = []
    for i, path in enumerate(paths):
        checkpoints.append(load_checkpoint(Path(path)))
        if on_progress:
            on_progress("load", i + 1, len(paths))
    base_ckpt = _load_base(checkpoints, base, method) if spec.needs_base else None
    inputs = [*checkpoints, *([base_ckpt] if base_ckpt else [])]
    warnings = check_compatible(inputs, force)
    state = spec.combine([c.state for c in checkpoints], weights, base_ckpt and base_ckpt.state, options)
    if on_progress:
        on_progress("save", 0, 0)
    record: dict[str, Any] = {"method": method, "parents": [str(c.path) for c in checkpoints], "weights": weights}
    if base_ckpt:
        record["base"] = str(base_ckpt.path)
    record.update({name: getattr(options, name) for name in spec.options})
    if warnings:
        record["warnings"] = warnings
    return _save_run(out, inputs, state, record)


def _load_base(checkpoints: list[Checkpoint], base: Path | None, method: str) -> Checkpoint:
    base = base or shared_base(checkpoints)
    if base is None:
        raise SLMError(
            f"{method} works on changes from the checkpoint the models were branched from, and none of their "
            "shared ancestors is on disk: name it with --base"
        )
    return load_checkpoint(Path(base))


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
    return save_as_run(out, first.config, state, first.tokenizer, _lineage(parents), {"merge": record})
