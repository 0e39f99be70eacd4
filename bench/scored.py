"""One training run of a bench, scored: what the quality, sweep and ablation benches each run many times."""

from __future__ import annotations

from core.config import ModelConfig, TrainConfig
from core.train.events import EvalMetrics
from core.train.trainer import Trainer
from core.workspace import Workspace


def scored_run(
    ws: Workspace, name: str, model: ModelConfig, train: TrainConfig, trainer: type[Trainer] = Trainer
) -> tuple[float, int]:
    """Train run `name` to its end; (final val bits/byte, steps)."""
    evals: list[EvalMetrics] = []
    run = trainer(ws, name, model, train, lambda e: evals.append(e) if isinstance(e, EvalMetrics) else None)
    run.run()
    return evals[-1].val_bpb, run.step
