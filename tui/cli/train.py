"""`slm train`, `slm sft` and `slm dpo`: configs from flags, torchrun launching, training progress as text."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from tui.cli.flags import collect
from tui.cli.parser import ALL_TRAIN_FLAGS, MODEL_FLAGS, RECIPE_FLAGS, RESUME_FLAGS, TRAIN_FLAGS
from tui.format import PREPARATION, PreparationLine, clock, count


def preset_name(args: argparse.Namespace) -> str:
    """The preset a run uses: the one named, else `auto` under a time budget, else `toy`."""
    return args.preset or ("auto" if getattr(args, "max_minutes", None) else "toy")


def train_configs(args: argparse.Namespace, ws) -> tuple[Any, Any, str]:
    """Model and training configs from a preset (or the planner's) plus the flags given; returns (model, train,
    name)."""
    from core.config import ModelConfig, TrainConfig, preset
    from core.workspace import default_run_name

    name = preset_name(args)
    if name == "auto":
        from tui.cli.plan import auto_configs

        model, train = auto_configs(args, ws)
    else:
        chosen = preset(name)
        model = {**chosen.model, **collect(args, MODEL_FLAGS)}
        train = {**chosen.train, **collect(args, ALL_TRAIN_FLAGS)}
    train |= {key: getattr(args, key) for key in ("tokenizer", "init_from") if getattr(args, key, None) is not None}
    return ModelConfig(**model), TrainConfig(**train), args.name or default_run_name(name)


def cmd_train(args: argparse.Namespace, ws) -> None:
    ws.ensure()
    if args.nproc and "WORLD_SIZE" not in os.environ:
        _launch_torchrun(args)
        return
    if "WORLD_SIZE" in os.environ and not args.resume and not args.name:
        from core.train.distributed import Dist
        from core.workspace import default_run_name

        args.name = Dist.from_env(args.device or "auto").share(default_run_name(preset_name(args)))  # one for all
    run_train(args, ws)


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--rdzv-endpoint")


def drop_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """`argv` without `flags` and their values (`--flag VALUE` or `--flag=VALUE`)."""
    kept, i = [], 0
    while i < len(argv):
        if argv[i] in flags:
            i += 2
            continue
        if not argv[i].startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(argv[i])
        i += 1
    return kept


def _launch_torchrun(args: argparse.Namespace) -> None:
    """Run this same `slm train` under torchrun, `args.nproc` processes per machine, and wait for it."""
    import subprocess

    from core.errors import SLMError
    from core.train.distributed import torchrun_command
    from core.workspace import default_run_name

    if args.nnodes != "1" and not args.rdzv_endpoint:
        raise SLMError("a job on several machines needs --rdzv-endpoint HOST:PORT (the same on every machine)")
    argv = drop_flags(args.argv, LAUNCH_FLAGS)
    name = args.resume or args.name
    if not name:
        name = default_run_name(preset_name(args))
        argv += ["--name", name]  # every machine must agree on it: say it now
    command = torchrun_command(args.nproc, argv, args.nnodes, args.rdzv_endpoint)
    print("running: torchrun", " ".join(command[3:]), flush=True)
    interrupted = []
    # Ctrl-C reaches torchrun too, which passes it to the ranks: they stop after the step and save `latest`.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        code = subprocess.run(command).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise SLMError(f"stopped on request; resume with: slm train --resume {name} --nproc {args.nproc}")
    if code:
        raise SLMError(f"torchrun ended with exit code {code}: the first failing rank's error is printed above")


def run_train(args: argparse.Namespace, ws):
    """Train (new, or `args.resume`) with progress printed; returns the run's RunEnded."""
    from core.train.objectives import resume_run
    from core.train.trainer import Trainer

    def make(printer, control):
        if args.resume:
            return resume_run(ws, args.resume, resume_overrides(args), printer, control)
        model, train, name = train_configs(args, ws)
        return Trainer(ws, name, model, train, printer, control)

    return run_trainer(make, args.log_interval)


def resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What a resumed run may change: limits, schedule and the machine."""
    return collect(args, RESUME_FLAGS)


def run_trainer(make: Callable[[Any, Any], Any], log_interval: int):
    """Run the trainer `make(on_event, control)` builds, printing its events; Ctrl-C stops it. Returns RunEnded."""
    from core.train.events import Control

    control = Control()
    printer = TrainPrinter(log_interval)
    trainer = make(printer, control)
    with _stop_on_interrupt(control):
        end = trainer.run()
    if trainer.dist.main:
        printer.summary(end, trainer)
    return end


class _stop_on_interrupt:
    """First Ctrl-C asks the run to stop (it saves a checkpoint); a second one interrupts at once."""

    def __init__(self, control) -> None:
        self.control = control

    def __enter__(self):
        def handler(signum, frame):
            if self.control.stopped:
                raise KeyboardInterrupt
            print("\nstopping after this step (saving a checkpoint); Ctrl-C again to abort", file=sys.stderr)
            self.control.stop()

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


class TrainPrinter:
    """Renders training events as log lines."""

    def __init__(self, log_interval: int) -> None:
        self.log_interval = max(1, log_interval)
        self.max_steps = 0
        self._last_stage = ""
        self.preparation = PreparationLine()
        self.tty = sys.stderr.isatty()
        self.preferences: list[Any] = []  # PreferenceMetrics of a DPO run

    def __call__(self, event) -> None:
        name = type(event).__name__
        handler: Callable[[Any], None] | None = getattr(self, f"on_{name}", None)
        if handler:
            handler(event)

    def on_Progress(self, e) -> None:
        line = self.preparation(e.stage, e.done, e.total)
        if e.total and self.tty:
            end = "\n" if e.done >= e.total else ""
            print(f"\r{line:<72}", end=end, file=sys.stderr, flush=True)
        elif e.stage != self._last_stage:
            print(f"{PREPARATION.get(e.stage, e.stage)} ...", file=sys.stderr, flush=True)
        self._last_stage = e.stage

    def on_Notice(self, e) -> None:
        print(f"{'warning: ' if e.level == 'warning' else ''}{e.message}", file=sys.stderr)

    def on_RunStarted(self, e) -> None:
        self.max_steps = e.max_steps
        resumed = f", resumed at step {e.start_step}" if e.start_step else ""
        print(
            f"run {e.run}: {e.params / 1e6:.2f}M parameters on {e.device} ({e.precision}){resumed}\n"
            f"  {count(e.train_tokens)} training and {count(e.val_tokens)} validation tokens, "
            f"{count(e.tokens_per_step)} tokens per step, up to {e.max_steps} steps\n"
            f"  folder {e.run_dir}"
        )

    def on_StepMetrics(self, e) -> None:
        if e.step % self.log_interval == 0 or e.step == 1:
            print(
                f"step {e.step:>6}/{self.max_steps} | loss {e.loss:.4f} | lr {e.lr:.2e} | "
                f"{count(e.tokens_per_s)} tok/s | {clock(e.elapsed_s)} | eta {clock(e.eta_s)}",
                flush=True,
            )

    def on_EvalMetrics(self, e) -> None:
        best = "  (best)" if e.val_loss <= e.best_val_loss else ""
        print(
            f"eval {e.step:>6} | val loss {e.val_loss:.4f} | ppl {e.val_ppl:.2f} | {e.val_bpb:.3f} bits/byte{best}",
            flush=True,
        )
        if e.sources:
            print(f"       bits/byte by source: {e.by_source()}", flush=True)

    def on_SampleText(self, e) -> None:
        text = e.text.strip().replace("\n", "\n  ")
        print(f"sample at step {e.step}:\n  {text}", flush=True)

    def on_StateChanged(self, e) -> None:
        print(f"{e.state} at step {e.step}")

    def on_PreferenceMetrics(self, e) -> None:
        self.preferences.append(e)
        print(
            f"prefs {e.step:>5} | held-out chosen-rejected log-prob margin {e.margin:+.3f} | "
            f"win rate {e.win_rate:.0%} of {e.pairs} pairs",
            flush=True,
        )

    def summary(self, end, trainer) -> None:
        best = f", best val loss {end.best_val_loss:.4f}" if end.best_val_loss is not None else ""
        metrics = trainer.last_metrics
        bpb = f", {metrics['val_bpb']:.3f} bits/byte" if "val_bpb" in metrics else ""
        note = f" ({end.message})" if end.message else ""
        print(f"{end.reason} at step {end.step}{best}{bpb}{note}")
        if len(self.preferences) > 1:
            first, last = self.preferences[0], self.preferences[-1]
            print(
                f"held-out margin {first.margin:+.3f} -> {last.margin:+.3f}, "
                f"win rate {first.win_rate:.0%} -> {last.win_rate:.0%} (steps {first.step} -> {last.step})"
            )
        chat = ' --chat --prompt "..."' if getattr(trainer, "chat", False) else ""
        print(f"checkpoints in {trainer.run_dir}; try: slm generate {trainer.run_name}{chat}")


def cmd_sft(args: argparse.Namespace, ws) -> None:
    from core.config import SFT_TRAIN
    from core.data.conversations import DialogFormat
    from core.errors import SLMError
    from core.train.sft import SFTTrainer

    data = list(args.data or [])
    if args.sample and not args.resume:
        from core.data.sample import write_sample_chat

        path = write_sample_chat(ws.data_dir)
        print(f"wrote the sample conversations: {path.relative_to(ws.root)}")
        data.append(str(path.relative_to(ws.data_dir)))
    if not data and not args.resume:
        raise SLMError(
            "name the conversations with --data FILE (.jsonl with messages, or dialog .txt), or use --sample"
        )
    dialog = DialogFormat(args.user_prefix, args.assistant_prefix, args.system_prefix)
    _tune(args, ws, SFTTrainer, SFT_TRAIN, "sft", data, dialog=dialog)


def cmd_dpo(args: argparse.Namespace, ws) -> None:
    from core.config import DPO_TRAIN
    from core.train.dpo import DPOTrainer

    _tune(args, ws, DPOTrainer, DPO_TRAIN, "dpo", [], beta=args.beta)


def _tune(args: argparse.Namespace, ws, trainer_class, defaults: dict, prefix: str, data: list[str], **extra):
    """Tune `--from` (default: the newest checkpoint) with a Trainer subclass, or resume `--resume`."""
    from core.config import ModelConfig, TrainConfig
    from core.listing import read_meta, resolve_checkpoint
    from core.train.objectives import resume_run
    from core.workspace import default_run_name

    ws.ensure()
    if args.resume:
        overrides = resume_overrides(args)
        return run_trainer(
            lambda on_event, control: resume_run(ws, args.resume, overrides, on_event, control),
            args.log_interval,
        )
    parent = resolve_checkpoint(ws, args.init_from)
    chosen = {**collect(args, TRAIN_FLAGS), **collect(args, RECIPE_FLAGS), "init_from": str(parent), "data": data}
    train = TrainConfig(**{**defaults, **chosen})
    model = ModelConfig(**read_meta(parent)["model"])
    name = args.name or default_run_name(prefix)
    return run_trainer(
        lambda on_event, control: trainer_class(ws, name, model, train, on_event, control, **extra), args.log_interval
    )
