"""The resume state: what a `latest` checkpoint holds beside the weights, and putting it back.

Tensors (optimizer moments, RNG states, the data position) go to `trainer.safetensors` under flat names
(`opt0.3.exp_avg`, `rng.torch`, `rng.data`, `rng.cuda`); the optimizers' scalars and parameter groups go to the
`trainer` entry of `checkpoint.json`. Nothing is pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from core import atomic
from core.errors import SLMError
from core.train.distributed import gather_optimizer_state, load_optimizer_state

Tensors = dict[str, torch.Tensor]


def has_checkpoint(run_dir: Path) -> bool:
    """Whether a run saved a `latest` to resume from (`.latest.old` is one caught mid-replace: loading restores it)."""
    return (run_dir / "latest" / "checkpoint.json").exists() or (run_dir / ".latest.old").exists()


def rng_tensors(data: torch.Generator, device: torch.device) -> Tensors:
    """torch's global RNG, the data position (`data`, the batches' generator) and CUDA's RNG on a GPU."""
    tensors = {"rng.torch": torch.get_rng_state(), "rng.data": data.get_state()}
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    return tensors


def restore_rng(tensors: Tensors, data: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    data.set_state(tensors["rng.data"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def optimizer_records(
    optimizers: list[torch.optim.Optimizer], tensors: Tensors, sharded: torch.nn.Module | None = None
) -> list[dict[str, Any]]:
    """Each optimizer's JSON record (parameter groups and scalars); its tensors are added to `tensors`.

    `sharded` is the FSDP-sharded model whose optimizer state is gathered from every rank first."""
    records = []
    for i, opt in enumerate(optimizers):
        state = gather_optimizer_state(sharded, opt) if sharded is not None else opt.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, values in state["state"].items():
            for key, value in values.items():
                if torch.is_tensor(value):
                    tensors[f"opt{i}.{pid}.{key}"] = value.detach().cpu().contiguous()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        records.append({"param_groups": state["param_groups"], "scalars": scalars})
    return records


def restore_optimizers(
    optimizers: list[torch.optim.Optimizer],
    records: list[dict[str, Any]],
    tensors: Tensors,
    sharded: torch.nn.Module | None = None,
) -> None:
    """Load what `optimizer_records` saved back into `optimizers` (built the same way)."""
    if len(records) != len(optimizers):
        raise SLMError("the checkpoint was trained with another optimizer: resume with the same --optimizer")
    for i, (opt, saved) in enumerate(zip(optimizers, records, strict=True)):
        per_param: dict[int, dict[str, Any]] = {}
        for name, tensor in tensors.items():
            if name.startswith(f"opt{i}."):
                _, pid, key = name.split(".", 2)
                per_param.setdefault(int(pid), {})[key] = tensor  # load_state_dict places it
        for pid, values in saved["scalars"].items():
            per_param.setdefault(int(pid), {}).update(values)
        state = {"state": per_param, "param_groups": saved["param_groups"]}
        try:
            if sharded is not None:
                load_optimizer_state(sharded, opt, state)
            else:
                opt.load_state_dict(state)
        except (ValueError, KeyError, TypeError) as e:  # groups that do not fit these optimizers
            raise SLMError(f"the checkpoint's optimizer state does not fit this run ({e})") from None


def trim_metrics(path: Path, step: int) -> None:
    """Drop the metrics logged after `step` from a run's metrics.jsonl (a resumed run logs them again)."""
    kept = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("step", 0) <= step and record.get("event") != "RunEnded":
                kept.append(line + "\n")
    atomic.write_text(path, "".join(kept))
