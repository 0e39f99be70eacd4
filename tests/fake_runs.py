"""Run folders written by hand (run.json, metrics.jsonl, a final checkpoint.json), for tests that read runs
without training any."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import TINY_MODEL


def fake_run(
    root: Path,
    name: str,
    *,
    steps: int = 20,
    loss: float = 5.0,
    ended: str | None = "finished",
    lr: float = 3e-3,
    parent: str | None = None,
    data: list[str] | None = None,
    extra: dict[str, Any] | None = None,
    created: str = "2026-12-01T10:00:00",
) -> Path:
    """`checkpoints/NAME` with `steps` train points (loss falling from `loss`), an eval every 5 steps, and
    `ended` as its last event (None: none). `parent` names the run it started from."""
    run_dir = Path(root) / "checkpoints" / name
    run_dir.mkdir(parents=True)
    init_from = str(run_dir.parent / parent / "final") if parent else None
    info = {
        "id": f"id-{name}", "name": name, "objective": "lm", "created": created, "model": dict(TINY_MODEL),
        "train": {"lr": lr, "batch_size": 4, "data": data or [], "init_from": init_from}, "params": 12345,
        "lineage": [{"run_id": f"id-{parent}", "path": init_from, "step": 10}] if parent else [],
        **(extra or {}),
    }  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    events: list[dict[str, Any]] = [
        {"event": "RunStarted", "run": name, "run_dir": str(run_dir), "params": 12345, "device": "cpu",
         "precision": "fp32", "max_steps": steps, "train_tokens": 1000, "val_tokens": 100, "tokens_per_step": 128}
    ]  # fmt: skip
    for step in range(1, steps + 1):
        value = loss / (1 + 0.1 * step)
        events.append(
            {"event": "StepMetrics", "step": step, "loss": value, "lr": lr, "tokens_seen": 128 * step,
             "tokens_per_s": 1000.0, "elapsed_s": 0.5 * step, "progress": step / steps, "eta_s": 0.0}
        )  # fmt: skip
        if step % 5 == 0:
            events.append(
                {"event": "EvalMetrics", "step": step, "val_loss": value + 0.1, "val_ppl": 2.0,
                 "val_bpb": (value + 0.1) / 2, "best_val_loss": value + 0.1, "elapsed_s": 0.5 * step}
            )  # fmt: skip
    if ended:
        events.append({"event": "RunEnded", "step": steps, "reason": ended})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return run_dir
