"""What a run trains for, by the name its run.json records: `lm` (pretraining), `sft` or `dpo`.

The base Trainer names none of its subclasses; this table does, so resuming any run finds its class.
"""

from __future__ import annotations

from typing import Any

from core.config import ModelConfig, TrainConfig, from_dict, load_json
from core.errors import SLMError
from core.train.dpo import DPOTrainer
from core.train.events import Control
from core.train.sft import SFTTrainer
from core.train.trainer import EventFn, Trainer
from core.workspace import Workspace

OBJECTIVES: dict[str, type[Trainer]] = {cls.objective: cls for cls in (Trainer, SFTTrainer, DPOTrainer)}


def resume_run(
    workspace: Workspace,
    run: str,
    overrides: dict[str, Any] | None = None,
    on_event: EventFn | None = None,
    control: Control | None = None,
) -> Trainer:
    """A Trainer of the run's own objective that continues `run` from its latest checkpoint (or, when it saved
    none, starts it over with its recorded settings); `overrides` may change limits, schedule and the machine."""
    run_dir = workspace.run_dir(run)
    if not (run_dir / "run.json").exists():
        raise SLMError(f"no run {run!r} in {workspace.checkpoints_dir} to resume")
    saved = load_json(run_dir / "run.json")
    objective = saved.get("objective", "lm")
    if not isinstance(objective, str) or objective not in OBJECTIVES:
        raise SLMError(f"run {run!r} trains for {objective!r}, which this version does not know")
    if not (isinstance(saved.get("model"), dict) and isinstance(saved.get("train"), dict)):
        raise SLMError(f"{run_dir / 'run.json'} is damaged: it needs its model and train configs to resume")
    model = from_dict(ModelConfig, saved["model"])
    train = from_dict(TrainConfig, {**saved["train"], **(overrides or {})})
    return OBJECTIVES[objective](workspace, run, model, train, on_event, control, resume=True)
