"""Running one training job on several processes under `torchrun` (PyTorch's own launcher).

torchrun starts one process per GPU (or CPU share) and tells each its place through the environment
(`RANK`, `LOCAL_RANK`, `WORLD_SIZE`, `MASTER_ADDR`...). `Dist.from_env()` joins the process group
(nccl on CUDA, gloo on CPU); a plain `slm train` gets a single-process `Dist` whose collectives do
nothing, so the Trainer has one code path. Every rank runs the same loop on its own slice of each
global batch; rank 0 alone writes metrics and checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from core.errors import SLMError

TIMEOUT = timedelta(minutes=10)  # a collective waiting longer than this means a rank is gone


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank among `world` processes, and rank on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "auto") -> Dist:
        """Join torchrun's process group if this process was started by torchrun, else run alone."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        me = cls(
            rank=int(os.environ["RANK"]),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )
        if dist.is_initialized():
            return me
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if cuda:
            if torch.cuda.device_count() < me.local_world:
                raise SLMError(
                    f"{me.local_world} processes on this machine but {torch.cuda.device_count()} GPUs: "
                    "use one process per GPU (--nproc)"
                )
            torch.cuda.set_device(me.local_rank)
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
        return me

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: its own GPU on CUDA."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" and self.active else device

    def cpu_threads(self) -> int:
        """A fair share of this machine's cores for one rank."""
        return max(1, (os.cpu_count() or 1) // self.local_world)

    # -- collectives (no-ops in a single process) ----------------------------------------------

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over ranks (in place; gloo has no AVG, so sum and divide)."""
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world
        return value

    def agree(self, flag: bool, seconds: float, device: torch.device) -> tuple[bool, float]:
        """(any rank's flag, the largest of the ranks' `seconds`), the same on every rank."""
        if not self.active:
            return flag, seconds
        value = torch.tensor([float(flag), seconds], dtype=torch.float64, device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value[0].item()), float(value[1].item())

    def share(self, value: Any) -> Any:
        """Rank 0's `value` on every rank (a picklable object made by this program, not user data)."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


# -- a sharded (FSDP2) model's state, whole, in the layout of an unsharded one ------------------


def _full_state_options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def shard_model(model: torch.nn.Module) -> None:
    """Shard every block, then the rest, across the ranks (FSDP2); optimizers built after hold shards too."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model, reshard_after_forward=True)  # else evaluation leaves the root's weights whole


def gradient_sync(model: torch.nn.Module, active: bool, sharded: bool, sync: bool) -> contextlib.AbstractContextManager:
    """Where gradients are averaged across ranks: only on the last micro-step (`sync`) of an accumulation. `model`
    is what trains: the DDP wrapper, or the FSDP-sharded model itself."""
    if sharded:
        model.set_requires_gradient_sync(sync or not active)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync or not active else model.no_sync()


def gather_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict on rank 0 (empty elsewhere); every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_state_options())


def _with_params(groups: list[dict[str, Any]], keys: list[Any]) -> list[dict[str, Any]]:
    """The param groups with their "params" replaced, in order, by the next items of `keys`."""
    out, start = [], 0
    for group in groups:
        count = len(group["params"])
        out.append({**group, "params": keys[start : start + count]})
        start += count
    return out


def gather_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """`optimizer.state_dict()` as an unsharded run would have it (parameters by position), on rank 0;
    every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    full = get_optimizer_state_dict(model, optimizer, options=_full_state_options())
    if not full:
        return {"state": {}, "param_groups": []}  # not rank 0: the whole state went there
    names = [name for group in full["param_groups"] for name in group["params"]]
    position = {name: i for i, name in enumerate(names)}
    return {
        "state": {position[name]: value for name, value in full["state"].items()},
        "param_groups": _with_params(full["param_groups"], list(range(len(names)))),
    }


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load an unsharded-layout optimizer state (from any run) into a sharded model's optimizer."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    full = {
        "state": {order[pid]: value for pid, value in state["state"].items()},
        "param_groups": _with_params(state["param_groups"], order),
    }
    set_optimizer_state_dict(model, optimizer, full, options=StateDictOptions(full_state_dict=True))


def torchrun_command(nproc: int, argv: list[str], nnodes: str = "1", rdzv: str | None = None) -> list[str]:
    """The torchrun command that runs `slm ARGV` on `nproc` processes per machine."""
    cmd = [sys.executable, "-m", "core.train.torchrun", f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv:
        cmd += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv}"]
    else:
        cmd += ["--standalone"]
    return [*cmd, "-m", "tui.cli", *argv]
