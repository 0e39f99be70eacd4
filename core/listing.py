"""Finding checkpoints and runs, from their JSON only (no torch: listing stays instant), and reading back a
checkpoint's `checkpoint.json`: every entry is checked (types, ranges, finite numbers, the model config) before
anyone uses it, and a damaged file is a one-line `Unreadable` naming what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import atomic
from core.config import ModelConfig, from_dict, load_json, shown, type_problem
from core.errors import SLMError
from core.workspace import Workspace

FORMAT = 1
KINDS = ("best", "final", "latest")  # the order in which a bare run name picks its checkpoint


def label(path: Path) -> str:
    """How a checkpoint is named to the user: RUN/KIND."""
    return f"{Path(path).parent.name}/{Path(path).name}"


class Unreadable(SLMError):
    """A checkpoint whose files do not hold what they should; `why` says what without naming the folder."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"checkpoint {path} is corrupt: {why}")
        self.why = why


# The entries of checkpoint.json (each optional unless a reader needs it) and of the records inside it.
META = {
    "format": int, "created": str, "kind": str, "run": str, "run_id": str | None, "step": int, "tokens_seen": int,
    "params": int, "metrics": dict[str, float | None], "lineage": list[dict[str, Any]], "tokenizer_hash": str,
    "weights_digest": str, "chat": bool, "trainer": dict[str, Any], "merge": dict[str, Any],
    "imported": dict[str, Any],
}  # fmt: skip
LINEAGE_REF = {"run_id": str | None, "path": str | None, "step": int | None}
MERGE = {
    "method": str, "parents": list[str], "weights": list[float], "base": str, "warnings": list[str],
    "density": float, "scale": float,
}  # fmt: skip
IMPORTED = {"from": str, "format": str}
NOT_NEGATIVE = ("step", "tokens_seen", "params", "elapsed_s", "evals_since_best")  # besides their types


def check_fields(path: Path, record: Any, spec: dict[str, Any], where: str, required: tuple[str, ...] = ()) -> None:
    """Refuse `record` (Unreadable) unless it is an object whose entries named in `spec` have those types."""
    if not isinstance(record, dict):
        raise Unreadable(path, f"{where.rstrip(': ') or 'checkpoint.json'} must be an object, not {shown(record)}")
    for key in required:
        if key not in record:
            raise Unreadable(path, f"{where}{key} is missing")
    for key, hint in spec.items():
        value = record.get(key)
        if key in record and (problem := type_problem(value, hint)):
            raise Unreadable(path, f"{where}{key} must be {problem}, not {shown(value)}")
        if key in NOT_NEGATIVE and isinstance(value, int | float) and value < 0:
            raise Unreadable(path, f"{where}{key} must be at least 0, not {shown(value)}")


def check_meta(path: Path, meta: dict[str, Any]) -> None:
    """Refuse checkpoint.json entries of the wrong type or range, the model config included (Unreadable)."""
    check_fields(path, meta, META, "checkpoint.json: ", required=("model",))
    if meta.get("format", FORMAT) != FORMAT:
        raise Unreadable(path, f"checkpoint.json has format {meta['format']}; this version reads format {FORMAT}")
    try:
        from_dict(ModelConfig, meta["model"])
    except SLMError as e:
        raise Unreadable(path, f"checkpoint.json: {e}") from None
    for i, ref in enumerate(meta.get("lineage", [])):
        check_fields(path, ref, LINEAGE_REF, f"lineage entry {i}: ")
    if "merge" in meta:
        merge = meta["merge"]
        check_fields(path, merge, MERGE, "merge record: ", required=("method", "parents", "weights"))
        if len(merge["parents"]) != len(merge["weights"]):
            raise Unreadable(path, "merge record: parents and weights differ in number")
    if "imported" in meta:
        check_fields(path, meta["imported"], IMPORTED, "import record: ")


def _read(path: Path, folder: Path) -> dict[str, Any]:
    """checkpoint.json of the checkpoint `path`, read from `folder` (`path` itself or its aside copy), checked."""
    file = folder / "checkpoint.json"
    try:
        meta = load_json(file)
    except SLMError as e:
        raise Unreadable(path, "checkpoint.json" + str(e).removeprefix(str(file))) from None
    check_meta(path, meta)
    return meta


def read_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's checked checkpoint.json (after undoing an interrupted save)."""
    path = Path(path)
    atomic.recover_dir(path)
    return _read(path, path)


# --- finding checkpoints and runs ---------------------------------------------------------------


@dataclass
class CheckpointEntry:
    """A row of `slm checkpoints`: what listing needs, read from checkpoint.json only; `error` says why a
    checkpoint cannot be read (its other fields are then empty)."""

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
    error: str | None = None


def _entry(path: Path) -> CheckpointEntry:
    """The row of checkpoint `path`, read from `path` or, when a save was interrupted, its aside copy (left in
    place: loading restores it, and a listing must not race a save in progress)."""
    old = path.with_name(f".{path.name}.old")
    folder = path if path.exists() else old
    try:
        meta = _read(path, folder)
        for name in ("model.safetensors", "tokenizer.json"):
            if not (folder / name).is_file():
                raise Unreadable(path, f"{name} is missing")
    except Unreadable as e:
        return CheckpointEntry(path, path.parent.name, path.name, 0, 0, "", None, None, None, {}, error=e.why)
    metrics = meta.get("metrics", {})
    lineage = meta.get("lineage") or []
    return CheckpointEntry(
        path=path,
        run=path.parent.name,
        kind=path.name,
        step=meta.get("step", 0),
        params=meta.get("params", 0),
        created=meta.get("created", ""),
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


def checkpoint_dirs(run: Path) -> list[Path]:
    """The checkpoints of a run folder: its folders with a checkpoint.json or model.safetensors, and those whose
    only copy is the `.KIND.old` an interrupted save left."""
    names = set()
    for p in run.iterdir():
        if not p.is_dir():
            continue
        if p.name.startswith(".") and p.name.endswith(".old") and len(p.name) > 5:
            names.add(p.name[1:-4])
        elif not p.name.startswith(".") and ((p / "checkpoint.json").exists() or (p / "model.safetensors").exists()):
            names.add(p.name)
    return [run / name for name in sorted(names)]


def list_checkpoints(workspace: Workspace, unreadable: bool = False) -> list[CheckpointEntry]:
    """Every checkpoint of every run; with `unreadable`, also those that cannot be read (their `error` set)."""
    entries = [_entry(path) for run in run_dirs(workspace) for path in checkpoint_dirs(run)]
    return [e for e in entries if unreadable or e.error is None]


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
