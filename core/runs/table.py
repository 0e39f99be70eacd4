"""Every run of a workspace as one row: its status, kind, shape, progress, best figure and where it came from.

A row is read from the run's own files (run.json, metrics.jsonl through its `Curves`, the live mark): no
torch, no checkpoint weights. A run whose run.json cannot be read is a row with `error` set; the others
are unaffected.
"""

from __future__ import annotations

import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.config import ModelConfig, TrainConfig, from_dict, load_json, shown, to_dict, type_problem
from core.data.mixture import weights_line
from core.errors import SLMError
from core.listing import label, run_dirs
from core.runs.curves import Curves
from core.train.live import liveness
from core.workspace import Workspace

Status = Literal["training", "stopped", "finished", "failed"]
Kind = Literal["pretrain", "fine-tune", "branch", "sft", "dpo", "merge", "import"]
KINDS: tuple[Kind, ...] = typing.get_args(Kind)
SORTS = ("created", "name", "status", "bpb")  # bpb: best bits per byte first
ENDED: dict[str, Status] = {
    "finished": "finished", "early_stop": "finished", "stopped": "stopped", "killed": "stopped",
    "nan": "failed", "error": "failed",
}  # fmt: skip


@dataclass
class RunRow:
    """One run, as `slm runs` and the Runs view show it."""

    name: str
    path: Path
    status: Status = "stopped"
    kind: Kind = "pretrain"
    run_id: str = ""
    created: str = ""
    shape: str = ""
    params: int = 0
    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    best_bpb: float | None = None
    parents: list[str] = field(default_factory=list)  # the runs it came from: one, or several for a merge
    config: dict[str, Any] = field(default_factory=dict)  # run.json's settings, flattened (see `flatten`)
    error: str | None = None  # why its run.json cannot be read (the other fields are then empty)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "path": str(self.path), "status": self.status, "kind": self.kind,
            "run_id": self.run_id, "created": self.created, "shape": self.shape, "params": self.params,
            "steps": self.steps, "tokens": self.tokens, "seconds": round(self.seconds, 3), "best_bpb": self.best_bpb,
            "parents": self.parents, "config": self.config, "error": self.error,
        }  # fmt: skip


def shape_of(model: ModelConfig) -> str:
    """A model's shape in a few characters: layers × width, heads (kv heads when fewer), context."""
    heads = f"{model.n_head}h" + (f"/{model.n_kv_head}kv" if model.n_kv_head != model.n_head else "")
    return f"{model.n_layer}×{model.n_embd} {heads} ctx {model.context}"


def kind_of(info: dict[str, Any]) -> Kind:
    """What made a run, from its run.json."""
    if "merge" in info:
        return "merge"
    if "imported" in info:
        return "import"
    objective = info.get("objective", "lm")
    if objective in ("sft", "dpo"):
        return objective
    train = info.get("train") if isinstance(info.get("train"), dict) else {}
    if not train.get("init_from"):
        return "pretrain"
    return "branch" if train.get("data") else "fine-tune"  # a branch trains a part of data/ from its parent


def flatten(info: dict[str, Any]) -> dict[str, Any]:
    """run.json's settings as `section.field` entries of plain values (lists and weights shown as text); a field the run's
    version did not write yet reads as its default, which is what it trained with."""
    out: dict[str, Any] = {"kind": kind_of(info)}
    for section, defaults in (("model", {}), ("train", _train_defaults())):  # model configs are written whole
        values = info.get(section)
        for key, value in {**defaults, **values}.items() if isinstance(values, dict) else ():
            if key == "init_from" and isinstance(value, str):
                value = label(Path(value))  # RUN/KIND, not the workspace's path
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = ", ".join(value) or "-"
            elif key == "mix" and isinstance(value, dict):
                value = weights_line(value) if not type_problem(value, dict[str, float]) else shown(value)
                value = value or "by size"
            out[f"{section}.{key}"] = value if isinstance(value, str | int | float | bool | None) else shown(value)
    return out


@functools.cache
def _train_defaults() -> dict[str, Any]:
    return to_dict(TrainConfig())


def _status(run_dir: Path, info: dict[str, Any], curves: Curves) -> Status:
    live = liveness(run_dir)
    if live == "live":
        return "training"
    if live == "stopped":  # its process vanished without ending the run
        return "stopped"
    if curves.ended is not None:
        return ENDED.get(curves.ended.reason, "stopped")
    made = "merge" in info or "imported" in info or (run_dir / "final" / "checkpoint.json").exists()
    return "finished" if made else "stopped"


Info = tuple[dict[str, Any], ModelConfig] | SLMError  # a run.json read back and checked, or why it cannot be


def _read_info(run_dir: Path) -> Info:
    file = run_dir / "run.json"
    try:
        info = load_json(file)
    except SLMError as e:
        return SLMError(str(e).replace(str(file), "run.json"))
    try:
        return info, from_dict(ModelConfig, info.get("model"))
    except SLMError as e:
        return SLMError(f"run.json: {e}")


def read_run(run_dir: Path, curves: Curves | None = None, names: dict[str, str] | None = None) -> RunRow:
    """The row of `run_dir`; `curves` (updated here) carries its metrics between calls, `names` maps run ids
    to run names for the lineage (without it, parents are named by their folders)."""
    return _row(Path(run_dir), _read_info(Path(run_dir)), curves, names or {})


def _row(run_dir: Path, read: Info, curves: Curves | None, names: dict[str, str]) -> RunRow:
    if isinstance(read, SLMError):
        return RunRow(run_dir.name, run_dir, error=str(read))
    info, model = read
    curves = curves or Curves(run_dir / "metrics.jsonl")
    curves.update()
    params = info.get("params")
    return RunRow(
        name=run_dir.name,
        path=run_dir,
        status=_status(run_dir, info, curves),
        kind=kind_of(info),
        run_id=str(info.get("id", "")),
        created=str(info.get("created", ""))[:19].replace("T", " "),
        shape=shape_of(model),
        params=params if isinstance(params, int) and not isinstance(params, bool) else 0,
        steps=curves.last_step,
        tokens=curves.tokens_seen,
        seconds=curves.seconds,
        best_bpb=curves.best_bpb,
        parents=parents_of(info, names),
        config=flatten(info),
    )


def parents_of(info: dict[str, Any], names: dict[str, str]) -> list[str]:
    """The runs a run came from: a merge's parents, else its first lineage entry."""
    merge = info.get("merge")
    if isinstance(merge, dict) and isinstance(merge.get("parents"), list):
        return [_run_name(str(p)) for p in merge["parents"]]
    lineage = info.get("lineage")
    if isinstance(lineage, list) and lineage and isinstance(lineage[0], dict):
        ref = lineage[0]
        if ref.get("run_id") in names:
            return [names[ref["run_id"]]]
        if isinstance(ref.get("path"), str):
            return [_run_name(ref["path"])]
    return []


def _run_name(checkpoint: str) -> str:
    """The run a checkpoint path belongs to (checkpoints/RUN/KIND)."""
    return Path(checkpoint).parent.name or checkpoint


def list_runs(workspace: Workspace, curves: dict[Path, Curves] | None = None) -> list[RunRow]:
    """Every run of the workspace, newest first. Pass the same `curves` dict on each call to read only what
    the metrics files gained since (a view that refreshes keeps it)."""
    curves = {} if curves is None else curves
    reads = {run_dir: _read_info(run_dir) for run_dir in run_dirs(workspace)}
    names = {r[0]["id"]: d.name for d, r in reads.items() if isinstance(r, tuple) and isinstance(r[0].get("id"), str)}
    rows = []
    for run_dir, read in reads.items():
        if run_dir not in curves:
            curves[run_dir] = Curves(run_dir / "metrics.jsonl")
        rows.append(_row(run_dir, read, curves[run_dir], names))
    return rows


def sort_rows(rows: list[RunRow], by: str) -> list[RunRow]:
    """Rows in one of the SORTS orders: newest first, by name, by status, or best bits per byte first."""
    if by == "bpb":  # runs without an eval last
        return sorted(rows, key=lambda r: (r.best_bpb is None, r.best_bpb or 0.0))
    if by in ("name", "status"):
        return sorted(rows, key=lambda r: (getattr(r, by), r.name))
    return sorted(rows, key=lambda r: r.created, reverse=True)
