"""The pipeline: a base trained, branches continued from it in parallel, merged, and the merge fine-tuned.

A pipeline NAME runs NAME-base, one NAME-ENTRY per branch (`core.merge.branches`), NAME-merged and
NAME-tuned, and resumes where it stopped: a stage that finished is skipped, one that saved `latest` is
resumed, and one that died before saving anything is cleared and started again. Branches and fine-tuning
continue a trained model, so they peak at CONTINUE_LR of the base's learning rate unless told otherwise.

The caller trains: the base and the fine-tuning in its own process through a `train` callable (the CLI
prints their progress, the studio shows it), each branch in a process of its own that runs the caller's
`slm` command. Settings are a flat dict named like `slm train`'s flags (`lr`, `max_steps`, `preset` …).
What happens is reported as events; nothing here prints.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from core.config import TrainConfig, preset
from core.errors import SLMError

if TYPE_CHECKING:  # branches, checkpoints and weights load when a stage runs: `slm --help` stays quick
    from core.merge.branches import Branch, Job, Per
    from core.train.events import RunEnded
    from core.workspace import Workspace

CONTINUE_LR = 0.3  # the peak learning rate of branches and fine-tuning, as a fraction of the base's

Stage = Literal["base", "branch", "merge", "tune"]
StageState = Literal["done", "resume", "new"]
STAGE_RUNS: dict[Stage, str] = {"base": "base", "merge": "merged", "tune": "tuned"}  # a branch: NAME-ENTRY

# The settings a branch process is handed on: the preset and every training setting but those the branch
# sets itself (its data, hence its mixture, and start) or takes from its base (the tokenizer), the threads (a total, split
# between the processes), and the switches `slm branch` does not take.
NOT_HANDED_ON = frozenset({"data", "mix", "init_from", "tokenizer", "threads", "compile", "grad_checkpoint", "shard"})
HANDED_ON = ("preset", *(f.name for f in fields(TrainConfig) if f.name not in NOT_HANDED_ON))


# --- names and settings ----------------------------------------------------------------------------


def stage_run(name: str, stage: Stage) -> str:
    """The run of one of a pipeline's own stages: NAME-base, NAME-merged or NAME-tuned."""
    return f"{name}-{STAGE_RUNS[stage]}"


def check_no_clash(name: str, branches: Sequence[Branch]) -> None:
    """Refuse branches of which one would take a stage's run name (a data entry called base, merged or tuned)."""
    if clash := {stage_run(name, stage) for stage in STAGE_RUNS} & {b.name for b in branches}:
        raise SLMError(f"the branch {min(clash)} would take the name of a pipeline stage: rename that data entry")


def continue_lr(settings: Mapping[str, Any]) -> float:
    """The peak learning rate of branches and fine-tuning: CONTINUE_LR × the settings' `lr`, or their preset's."""
    return CONTINUE_LR * (settings.get("lr") or preset(settings["preset"]).train["lr"])


@dataclass(frozen=True)
class StageOverrides:
    """What one stage changes in the settings it is given (`--base-steps` in place of `--max-steps` …).

    None (or 0) keeps the settings' own value."""

    max_steps: int | None = None
    max_minutes: float | None = None
    lr: float | None = None  # branches and fine-tuning: None is continue_lr

    def apply(self, settings: Mapping[str, Any], lr: float | None = None) -> dict[str, Any]:
        """`settings` with this stage's limits and learning rate (`lr` where it names none)."""
        changes = {"max_steps": self.max_steps, "max_minutes": self.max_minutes, "lr": self.lr or lr}
        return {**settings, **{key: value for key, value in changes.items() if value}}


@dataclass(frozen=True)
class MergeRecipe:
    """A method of `core.merge.weights` and its settings (None: the method's default)."""

    method: str = "linear"
    weights: list[float] | None = None  # one per checkpoint; None: equal
    density: float | None = None
    scale: float | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> MergeRecipe:
        get = settings.get
        return cls(get("method") or "linear", get("weights"), get("density"), get("scale"))

    def merge(self, paths: list[Path], out: Path, base: Path | None = None, force: bool = False) -> Path:
        """Merge `paths` into the new run folder `out`; returns the merged checkpoint."""
        from core.merge.weights import MergeOptions, merge_checkpoints

        given = {"density": self.density, "scale": self.scale}
        options = MergeOptions(**{key: value for key, value in given.items() if value is not None})
        return merge_checkpoints(paths, self.weights, self.method, out=out, base=base, options=options, force=force)


@dataclass(frozen=True)
class Pipeline:
    """One pipeline: its name, each stage's overrides, how the data is split into branches and how they merge."""

    name: str
    base: StageOverrides = field(default_factory=StageOverrides)
    branch: StageOverrides = field(default_factory=StageOverrides)
    tune: StageOverrides = field(default_factory=StageOverrides)
    merge: MergeRecipe = field(default_factory=MergeRecipe)
    per: Per = "folder"  # one branch per top-level entry of data/, or per file
    parallel: int | None = None  # branches trained at once; None: all, at most one per CPU thread

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Pipeline:
        """From settings named like `slm pipeline`'s flags: name, base_steps, branch_minutes, tune_lr, method …"""
        get = settings.get
        base, branch, tune = (
            StageOverrides(get(f"{s}_steps"), get(f"{s}_minutes"), get(f"{s}_lr")) for s in ("base", "branch", "tune")
        )
        merge = MergeRecipe.from_settings(settings)
        return cls(settings["name"], base, branch, tune, merge, get("per") or "folder", get("parallel"))


# --- skip, resume or clear -------------------------------------------------------------------------


def stage_state(run_dir: Path) -> StageState:
    """done: the run finished (it has `final`); resume: it can continue from `latest`; new: nothing to keep."""
    if (run_dir / "run.json").exists() and (run_dir / "final" / "checkpoint.json").exists():
        return "done"
    from core.train.state import has_checkpoint

    if has_checkpoint(run_dir):
        return "resume"
    return "new"


def discard_unstarted(run_dir: Path) -> None:
    """Remove a run folder that holds nothing to resume from (a run that died before its first `latest`)."""
    if stage_state(run_dir) != "new":
        raise SLMError(f"{run_dir} holds a checkpoint to resume from: it is not discarded")
    if run_dir.exists():
        shutil.rmtree(run_dir)


def prepare_stage(run_dir: Path) -> StageState:
    """A stage's state: done (skip it), resume (continue it) or new (start it: what was left is cleared)."""
    state = stage_state(run_dir)
    if state == "new":
        discard_unstarted(run_dir)
    return state


# --- events and the stage a caller trains ----------------------------------------------------------


@dataclass(frozen=True)
class StageSkipped:
    name: str
    stage: Stage  # merge: merged already; the others: finished already


@dataclass(frozen=True)
class BranchQueued:
    name: str
    data: str  # the file or folder under data/ it trains on
    resume: bool
    log: Path  # what its process prints


@dataclass(frozen=True)
class Merged:
    path: Path  # the merged checkpoint


@dataclass(frozen=True)
class StageRun:
    """A stage for the caller to train: run `name`, resumed from its `latest` or started with `settings`."""

    name: str
    resume: bool
    settings: dict[str, Any]


Train = Callable[[StageRun], "RunEnded"]
OnEvent = Callable[[Any], None]


def _ignore(event: Any) -> None:
    pass


# --- running the stages ----------------------------------------------------------------------------


def train_stage(
    ws: Workspace, stage: Stage, name: str, settings: Mapping[str, Any], train: Train, on_event: OnEvent | None = None
) -> Path:
    """Train run `name` with `train` unless it finished, resuming it if it stopped; returns its final checkpoint."""
    run_dir = ws.run_dir(name)
    state = prepare_stage(run_dir)
    if state == "done":
        (on_event or _ignore)(StageSkipped(name, stage))
        return run_dir / "final"
    end = train(StageRun(name, state == "resume", dict(settings)))
    if end.reason not in ("finished", "early_stop"):
        raise SLMError(f"{name} {end.reason} at step {end.step}: run the same command again to resume the pipeline")
    return run_dir / "final"


def handed_on(settings: Mapping[str, Any]) -> list[str]:
    """The flags a branch process gets: --FLAG=VALUE for each of HANDED_ON that `settings` set (a switch: --FLAG
    when it is on; the switches of TrainConfig are off by default)."""
    flags = []
    for key in HANDED_ON:
        value, flag = settings.get(key), f"--{key.replace('_', '-')}"
        if isinstance(value, bool):
            flags += [flag] if value else []
        elif value is not None:
            flags.append(f"{flag}={value}")
    return flags


def branch_job(
    ws: Workspace, branch: Branch, base: Path, slm: Sequence[str], settings: Mapping[str, Any], resume: bool = False
) -> Job:
    """The process that trains `branch`: `slm train` resuming it, or starting it from `base` on its data.

    `slm` is the command that runs the `slm` command line (a program and its first arguments).
    """
    from core.merge.branches import LOG, Job

    run_dir = ws.run_dir(branch.name)
    start = ["--resume", branch.name] if resume else ["--from", str(base), "--name", branch.name]
    argv = [*slm, "--workspace", str(ws.root), "train", *start, "--data", branch.data, *handed_on(settings)]
    return Job(branch.name, argv, run_dir / LOG, run_dir / "final" / "checkpoint.json")


def train_branches(
    ws: Workspace,
    base: Path,
    branches: Sequence[Branch],
    settings: Mapping[str, Any],
    slm: Sequence[str],
    *,
    parallel: int | None = None,
    on_event: OnEvent | None = None,
    on_poll: Callable[[], None] | None = None,
) -> list[Path]:
    """Train the branches that have not finished, in parallel processes; returns their final checkpoints.

    `settings` are handed on to each branch; their `threads` (default: every CPU) are split between the
    processes running at once, at most `parallel` (default: all, at most one per thread).
    """
    from core.merge.branches import available_cpus, gpu_ids, run_parallel

    emit = on_event or _ignore
    jobs = []
    for branch in branches:
        state = prepare_stage(ws.run_dir(branch.name))
        if state == "done":
            emit(StageSkipped(branch.name, "branch"))
            continue
        jobs.append(branch_job(ws, branch, base, slm, settings, resume=state == "resume"))
        emit(BranchQueued(branch.name, branch.data, state == "resume", jobs[-1].log))
    if jobs:
        threads = settings.get("threads") or available_cpus()
        gpus = gpu_ids(settings.get("device"))
        ended = run_parallel(jobs, parallel or min(len(jobs), threads), threads, gpus, emit, on_poll)
        if failed := [e for e in ended if e.error]:
            raise SLMError(
                f"{len(failed)} of {len(jobs)} branches failed: {'; '.join(f'{e.name}: {e.error}' for e in failed)}; "
                "the others are kept: fix the cause and run the same command again to train only the failed ones"
            )
    return [ws.run_dir(branch.name) / "final" for branch in branches]


def run_pipeline(
    ws: Workspace,
    pipeline: Pipeline,
    settings: Mapping[str, Any],
    slm: Sequence[str],
    train: Train,
    on_event: OnEvent | None = None,
    on_poll: Callable[[], None] | None = None,
) -> Path:
    """Run the stages that have not finished: base, branches, merge, fine-tuning; returns the tuned checkpoint.

    `settings` are every stage's training settings, `preset` included; their `init_from` names a checkpoint
    to branch from instead of training NAME-base, their `data` what the base trains on and the branches split.
    """
    from core.listing import resolve_checkpoint
    from core.merge.branches import plan_branches

    emit, name = on_event or _ignore, pipeline.name
    if settings.get("init_from"):
        base = resolve_checkpoint(ws, settings["init_from"])
    else:
        base_settings = pipeline.base.apply({**settings, "init_from": None})
        base = train_stage(ws, "base", stage_run(name, "base"), base_settings, train, emit)
    branches = plan_branches(ws, name, pipeline.per, settings.get("data"), settings.get("decode_errors") or "skip")
    check_no_clash(name, branches)
    lr = continue_lr(settings)
    branch_settings = pipeline.branch.apply(settings, lr)
    parents = train_branches(
        ws, base, branches, branch_settings, slm, parallel=pipeline.parallel, on_event=emit, on_poll=on_poll
    )
    merged = ws.run_dir(stage_run(name, "merge"))
    if prepare_stage(merged) == "done":
        emit(StageSkipped(merged.name, "merge"))
    else:
        emit(Merged(pipeline.merge.merge(parents, merged, base)))
    tune_settings = {**pipeline.tune.apply(settings, lr), "init_from": str(merged / "final"), "tokenizer": None}
    return train_stage(ws, "tune", stage_run(name, "tune"), tune_settings, train, emit)
