"""When training goes wrong: nan and inf kept out of steps and checkpoints, advice for running out of memory,
and what a run that failed can do next (go on from its last good checkpoint, or start over)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from core import atomic
from core.config import TrainConfig
from core.errors import SLMError
from core.listing import read_meta
from core.train.state import has_checkpoint


class NotFinite(SLMError):
    """Training met nan or inf (in the loss, the gradients or the weights): none of it was applied or saved."""


def not_finite(loss: float, grad_norm: float, scaled: bool) -> str | None:
    """What in a step is nan or inf, or None. Under fp16's GradScaler (`scaled`) inf gradients are normal: it
    skips that step itself. The loss is averaged over ranks and the gradient norm global: every rank agrees."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if not math.isfinite(grad_norm) and not scaled:
        return f"the gradient norm became {grad_norm}"
    return None


def last_good(run_dir: Path, run: str) -> str:
    """Where a run that met nan or inf can go on from, as the end of its error message. Its `latest` holds no nan
    or inf (`save` refuses them); its train loss shows whether the run had already diverged before that."""
    if not has_checkpoint(run_dir):
        return f"no checkpoint to resume from was saved yet: --resume {run} starts it over"
    try:
        meta = read_meta(run_dir / "latest")
        loss = meta.get("metrics", {}).get("train_loss")
        at = f" (step {meta['step']}{f', train loss {loss:.4g}' if loss is not None else ''})"
    except (SLMError, KeyError, TypeError, ValueError):
        at = ""
    return f"the last good checkpoint is latest{at}: continue from it with --resume {run}"


def name_taken(run_dir: Path, run: str) -> str:
    """Why a new run may not take the name of the run folder `run_dir`, and what to do instead."""
    if has_checkpoint(run_dir):
        return f"run {run!r} already exists: resume it with --resume {run} or choose another --name"
    return (
        f"run {run!r} has no checkpoint to resume from: resume it with --resume {run} (it starts over) "
        "or choose another --name"
    )


def start_over(run_dir: Path, run: str) -> str:
    """Ready the folder of a run that saved no `latest` to start over, and say so. Its metrics.jsonl is replaced;
    a `best` it saved is kept under a free name, best-before-restart (then -2, -3...)."""
    kept = ""
    atomic.recover_dir(run_dir / "best")
    if (run_dir / "best").exists():
        names = (f"best-before-restart{f'-{n}' if n > 1 else ''}" for n in itertools.count(1))
        name = next(name for name in names if not (run_dir / name).exists())
        (run_dir / "best").rename(run_dir / name)
        kept = f"; its best checkpoint is kept as {run}/{name}"
    return (
        f"run {run} saved no checkpoint to resume from: it starts over from step 0 with its recorded settings "
        f"(its metrics.jsonl is replaced{kept})"
    )


def out_of_memory_advice(cfg: TrainConfig, objective: str, building: bool = False) -> str:
    """The one-line advice for running out of memory, naming only flags that would change something: a model
    tuned `--from` a checkpoint keeps its size and context, and --grad-checkpoint is `slm train`'s."""
    fresh = not cfg.init_from
    smaller = "pick a smaller --preset" if fresh else "start from a smaller --from checkpoint"
    if building:  # the weights alone do not fit: batch size and activations play no part yet
        return f"out of memory building the model: {smaller}{'' if cfg.shard else ' or shard it (--nproc N --shard)'}"
    knobs = ["lower --batch-size (raise --grad-accum to keep the tokens per step)"] if cfg.batch_size > 1 else []
    knobs += ["lower --context"] if fresh else []
    knobs += ["add --grad-checkpoint"] if fresh and objective == "lm" and not cfg.grad_checkpoint else []
    return f"out of memory at batch size {cfg.batch_size}: " + ", ".join([*knobs, "or " * bool(knobs) + smaller])
