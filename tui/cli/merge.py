"""`slm merge`, `slm branch` and `slm pipeline`: sub-models branched from one base, trained in parallel, merged.

The rules (stage names, skip or resume, what each branch process runs) live in `core.merge.pipeline`;
this module reads the flags, runs the engine and prints its events.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from core.merge.pipeline import (
    BranchQueued,
    Merged,
    MergeRecipe,
    Pipeline,
    StageRun,
    StageSkipped,
    run_pipeline,
    train_branches,
)
from tui.cli.train import run_train
from tui.format import clock

SLM = [sys.executable, "-m", "tui.cli"]  # the command a branch process runs `slm train` with


def cmd_merge(args: argparse.Namespace, ws) -> None:
    from core.listing import resolve_checkpoint
    from core.workspace import default_run_name

    paths = [resolve_checkpoint(ws, ref) for ref in args.checkpoints]
    base = resolve_checkpoint(ws, args.base) if args.base else None
    out = ws.run_dir(args.name or default_run_name("merge"))
    print_merged(MergeRecipe.from_settings(vars(args)).merge(paths, out, base, args.force))


def print_merged(path: Path) -> None:
    """What was merged, how, and into which checkpoint; warnings (a forced merge) on stderr."""
    from core.listing import label, read_meta
    from core.merge.weights import shares

    record = read_meta(path)["merge"]
    for warning in record.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    settings = [record["method"]] + [f"{k} {record[k]:g}" for k in ("density", "scale") if k in record]
    if "base" in record:
        settings.append(f"base {label(record['base'])}")
    print(f"merged {shares(record['parents'], record['weights'])} ({', '.join(settings)}) into {label(path)}")


def cmd_branch(args: argparse.Namespace, ws) -> None:
    from core.listing import resolve_checkpoint
    from core.merge.branches import plan_branches

    ws.ensure()
    base = resolve_checkpoint(ws, args.base)
    branches = plan_branches(ws, args.prefix or base.parent.name, args.per, args.data, args.decode_errors)
    printer = PipelinePrinter(ws)
    finals = train_branches(
        ws, base, branches, vars(args), SLM, parallel=args.parallel, on_event=printer, on_poll=printer.poll
    )
    runs = " ".join(p.parent.name for p in finals)
    print(f"merge them with: slm merge {runs} --method ties --base {base.parent.name}/{base.name}")


def cmd_pipeline(args: argparse.Namespace, ws) -> None:
    def train(stage: StageRun):
        resume = stage.name if stage.resume else None
        return run_train(argparse.Namespace(**{**stage.settings, "name": stage.name, "resume": resume}), ws)

    ws.ensure()
    printer = PipelinePrinter(ws)
    settings = vars(args)
    tuned = run_pipeline(ws, Pipeline.from_settings(settings), settings, SLM, train, printer, printer.poll)
    print(f"pipeline done: {tuned.parent.name}/{tuned.name}; try: slm generate {tuned.parent.name}")


class PipelinePrinter:
    """Stages skipped, branch processes queued, starting and ending, merges; and every `every_s` seconds the
    step and loss of the branches running."""

    def __init__(self, ws, every_s: float = 30.0) -> None:
        self.ws, self.every_s = ws, every_s
        self.tails: dict[str, Any] = {}
        self.histories: dict[str, Any] = {}
        self.running: set[str] = set()
        self.due = time.monotonic() + every_s

    def __call__(self, event) -> None:
        from core.listing import read_meta
        from core.merge.branches import JobStarted

        if isinstance(event, StageSkipped):
            print(f"{event.name}: {'merged' if event.stage == 'merge' else 'finished'} already")
        elif isinstance(event, BranchQueued):
            from core.train.monitor import MetricsTail, RunHistory

            self.tails[event.name] = MetricsTail(self.ws.run_dir(event.name) / "metrics.jsonl")
            self.histories[event.name] = RunHistory()
            self.due = time.monotonic() + self.every_s  # the reports' clock starts with the branches
            print(f"{event.name}: {'resuming' if event.resume else 'training'} on data/{event.data}, log {event.log}")
        elif isinstance(event, Merged):
            print_merged(event.path)
        elif isinstance(event, JobStarted):
            self.running.add(event.name)
            gpu = f", GPU {event.gpu}" if event.gpu is not None else ""
            threads = f"{event.threads} CPU thread{'s' if event.threads != 1 else ''}"
            print(f"{event.name}: started, pid {event.pid}, {threads}{gpu}", flush=True)
        else:  # JobEnded
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
