"""`slm merge`, `slm branch` and `slm pipeline`: sub-models branched from one base, trained in parallel, merged."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from tui.cli.parser import CONTINUE_LR, TRAIN_FLAGS, field
from tui.cli.train import run_train
from tui.format import clock


def cmd_merge(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.workspace import default_run_name

    paths = [resolve_checkpoint(ws, ref) for ref in args.checkpoints]
    base = resolve_checkpoint(ws, args.base) if args.base else None
    _merge(args, paths, base, ws.run_dir(args.name or default_run_name("merge")), args.force)


def _merge(args: argparse.Namespace, paths: list[Path], base: Path | None, out: Path, force: bool) -> Path:
    """Merge with the method flags of `args`, print what was merged; returns the merged checkpoint."""
    from core.checkpoint import label, read_meta
    from core.merge.weights import MergeOptions, merge_checkpoints, shares

    options = MergeOptions(**{k: getattr(args, k) for k in ("density", "scale") if getattr(args, k) is not None})
    path = merge_checkpoints(paths, args.weights, args.method, out=out, base=base, options=options, force=force)
    record = read_meta(path)["merge"]
    for warning in record.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    settings = [record["method"]] + [f"{k} {record[k]:g}" for k in ("density", "scale") if k in record]
    if "base" in record:
        settings.append(f"base {label(record['base'])}")
    print(f"merged {shares(record['parents'], record['weights'])} ({', '.join(settings)}) into {label(path)}")
    return path


def cmd_branch(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.merge.branches import plan_branches

    ws.ensure()
    base = resolve_checkpoint(ws, args.base)
    finals = _branch(args, ws, base, plan_branches(ws, args.prefix or base.parent.name, args.per, args.data))
    runs = " ".join(p.parent.name for p in finals)
    print(f"merge them with: slm merge {runs} --method ties --base {base.parent.name}/{base.name}")


# the flags a branch process is handed on (--threads is the total, split between the processes)
BRANCH_FLAGS = ["preset", "optimizer", "schedule", "device", "precision", "decode-errors"] + [
    flag for flag, _, _ in TRAIN_FLAGS if flag != "threads"
]


def _branch(args: argparse.Namespace, ws, base: Path, branches: list) -> list[Path]:
    """Train the branches that have not finished, in parallel processes; returns their final checkpoints."""
    from core.errors import SLMError
    from core.merge.branches import LOG, Job, available_cpus, gpu_ids, run_parallel, stage_state

    forwarded = [f"--{f}={getattr(args, field(f))}" for f in BRANCH_FLAGS if getattr(args, field(f)) is not None]
    jobs = []
    for branch in branches:
        run_dir = ws.run_dir(branch.name)
        if _skip_or_clear(run_dir):
            print(f"{branch.name}: finished already")
            continue
        resume = stage_state(run_dir) == "resume"
        start = ["--resume", branch.name] if resume else ["--from", str(base), "--name", branch.name]
        argv = [sys.executable, "-m", "tui.cli", "--workspace", str(ws.root), "train", *start, "--data", branch.data]
        jobs.append(Job(branch.name, argv + forwarded, run_dir / LOG, run_dir / "final" / "checkpoint.json"))
        print(f"{branch.name}: {'resuming' if resume else 'training'} on data/{branch.data}, log {run_dir / LOG}")
    if jobs:
        threads = args.threads or available_cpus()
        printer = BranchPrinter(ws, [job.name for job in jobs])
        parallel = args.parallel or min(len(jobs), threads)
        failed = [
            e for e in run_parallel(jobs, parallel, threads, gpu_ids(args.device), printer, printer.poll) if e.error
        ]
        if failed:
            raise SLMError(
                f"{len(failed)} of {len(jobs)} branches failed: {'; '.join(f'{e.name}: {e.error}' for e in failed)}; "
                "the others are kept: fix the cause and run the same command again to train only the failed ones"
            )
    return [ws.run_dir(branch.name) / "final" for branch in branches]


class BranchPrinter:
    """Branch processes starting and ending, and every `every_s` seconds the step and loss of those running."""

    def __init__(self, ws, names: list[str], every_s: float = 30.0) -> None:
        from core.train.monitor import MetricsTail, RunHistory

        self.ws, self.every_s = ws, every_s
        self.tails = {name: MetricsTail(ws.run_dir(name) / "metrics.jsonl") for name in names}
        self.histories = {name: RunHistory() for name in names}
        self.running: set[str] = set()
        self.due = time.monotonic() + every_s

    def __call__(self, event) -> None:
        from core.checkpoint import read_meta
        from core.merge.branches import JobStarted

        if isinstance(event, JobStarted):
            self.running.add(event.name)
            gpu = f", GPU {event.gpu}" if event.gpu is not None else ""
            threads = f"{event.threads} CPU thread{'s' if event.threads != 1 else ''}"
            print(f"{event.name}: started, pid {event.pid}, {threads}{gpu}", flush=True)
            return
        self.running.discard(event.name)
        if event.error:
            print(f"{event.name}: failed after {clock(event.seconds)}: {event.error}", flush=True)
            return
        bpb = read_meta(self.ws.run_dir(event.name) / "final")["metrics"].get("val_bpb")
        result = f", {bpb:.3f} bits/byte on its validation text" if bpb is not None else ""
        print(f"{event.name}: finished in {clock(event.seconds)}{result}", flush=True)

    def poll(self) -> None:
        for name, tail in self.tails.items():
            for event in tail.read():
                self.histories[name].apply(event)
        if time.monotonic() < self.due:
            return
        self.due += self.every_s
        steps = [(n, h.last_step, h.max_steps) for n, h in self.histories.items() if n in self.running and h.last_step]
        if steps:
            print(" | ".join(f"{n} step {s.step}/{total} loss {s.loss:.3f}" for n, s, total in steps), flush=True)


def cmd_pipeline(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.config import preset
    from core.errors import SLMError
    from core.merge.branches import plan_branches

    ws.ensure()
    stages = {f"{args.name}-{stage}" for stage in ("base", "merged", "tuned")}
    if args.init_from:
        base = resolve_checkpoint(ws, args.init_from)
    else:
        base = _train_stage(_stage(args, "base", init_from=None), ws, f"{args.name}-base")
    branches = plan_branches(ws, args.name, args.per, args.data)
    if clash := stages & {b.name for b in branches}:
        raise SLMError(f"the branch {clash.pop()} would take the name of a pipeline stage: rename that data entry")
    lr = CONTINUE_LR * (args.lr or preset(args.preset).train["lr"])
    parents = _branch(_stage(args, "branch", lr=args.branch_lr or lr), ws, base, branches)
    merged = ws.run_dir(f"{args.name}-merged")
    if _skip_or_clear(merged):
        print(f"{merged.name}: merged already")
    else:
        _merge(args, parents, base, merged, force=False)
    tuned = _train_stage(
        _stage(args, "tune", init_from=str(merged / "final"), tokenizer=None, lr=args.tune_lr or lr),
        ws,
        f"{args.name}-tuned",
    )
    print(f"pipeline done: {tuned.parent.name}/{tuned.name}; try: slm generate {tuned.parent.name}")


def _stage(args: argparse.Namespace, stage: str, **changes: Any) -> argparse.Namespace:
    """`args` with one pipeline stage's limits (`--base-steps` …) in place of `--max-steps` and `--max-minutes`."""
    steps, minutes = getattr(args, f"{stage}_steps"), getattr(args, f"{stage}_minutes")
    limits = {"max_steps": steps or args.max_steps, "max_minutes": minutes or args.max_minutes}
    return argparse.Namespace(**{**vars(args), **limits, **changes})


def _skip_or_clear(run_dir: Path) -> bool:
    """Whether the run finished; one with nothing to resume from is cleared for a fresh start."""
    from core.merge.branches import discard_unstarted, stage_state

    state = stage_state(run_dir)
    if state == "new":
        discard_unstarted(run_dir)
    return state == "done"


def _train_stage(args: argparse.Namespace, ws, name: str) -> Path:
    """Train run `name` unless it finished, resuming it if it stopped; returns its final checkpoint."""
    from core.errors import SLMError
    from core.merge.branches import stage_state

    run_dir = ws.run_dir(name)
    if _skip_or_clear(run_dir):
        print(f"{name}: finished already")
        return run_dir / "final"
    resume = name if stage_state(run_dir) == "resume" else None
    end = run_train(argparse.Namespace(**{**vars(args), "name": name, "resume": resume}), ws)
    if end.reason not in ("finished", "early_stop"):
        raise SLMError(f"{name} {end.reason} at step {end.step}: run the same command again to resume the pipeline")
    return run_dir / "final"
