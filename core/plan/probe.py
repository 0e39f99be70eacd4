"""Training speed on this machine, measured: a few steps at a shape, kept per machine and shape in the user's cache.

A probe builds the model, runs WARM_STEPS untimed steps (allocation, kernel choice) and then timed ones until
MIN_SECONDS or MAX_STEPS, on random tokens, with the trainer's optimizer and autocast. The speed is that of the
lower quartile of the steps' times, since another process slows some steps and not others. It (training
tokens a second) is kept in `cache_dir()/probe.json` under a key naming the device, torch, the threads, the
precision and the shape, so that the second plan on a machine measures nothing; unless other processes held
the cores meanwhile (our threads waited for a CPU, as Linux counts it), since a contended probe can be 100x
slow and would misplan every later run: such a speed serves its own plan only. A damaged cache is set aside
(measured again and rewritten); it never stops a plan. Nothing here imports torch until a probe runs, so
that a plan whose speeds are all cached answers in well under a second.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from core import atomic
from core.config import ModelConfig, TrainConfig
from core.errors import SLMError
from core.workspace import cache_dir

WARM_STEPS, MIN_TIMED, MAX_STEPS, MIN_SECONDS = 2, 4, 20, 0.6
BUSY_WAIT = 0.05  # seconds our threads waited for a CPU per second of probe, above which it was busy (quiet: < 0.01)
MAX_ENTRIES = 512  # the cache keeps the newest this many


class ProbeOutOfMemory(SLMError):
    """The probed shape does not fit the device."""


@dataclass(frozen=True)
class Machine:
    """What a measured speed depends on besides the shape."""

    device: str  # cpu, cuda, cuda:N or mps
    precision: str  # the training config's setting
    threads: int | None = None  # torch's CPU threads; None: its default

    @property
    def kind(self) -> str:
        return self.device.split(":")[0]

    @property
    def name(self) -> str:
        """The device in words: the CPU's or GPU's model name."""
        if self.kind == "cuda":
            import torch

            return torch.cuda.get_device_name(self.device)
        return "Apple MPS" if self.kind == "mps" else _cpu_name()

    def key(self, model: ModelConfig, rows: int) -> str:
        threads = f" x{self.threads or 'default'} (OMP {os.environ.get('OMP_NUM_THREADS', '-')})"
        shape = f"L{model.n_layer} E{model.n_embd} H{model.n_head}/{model.n_kv_head} M{model.mlp_hidden}"
        return (
            f"{self.device} {self.name}{threads if self.kind == 'cpu' else ''} | torch {_torch_version()} | "
            f"{self.precision} | {shape} V{model.vocab_size} T{model.context} tied{int(model.tie_embeddings)} | "
            f"B{rows}"
        )


def machine_device(name: str) -> str:
    """The device `name` (auto, cpu, cuda, cuda:N or mps) means here. `auto` without a GPU driver and off macOS
    is the CPU, decided without importing torch."""
    gpu_driver = any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd", "/proc/driver/nvidia"))
    if name == "cpu" or (name == "auto" and sys.platform != "darwin" and not gpu_driver):
        return "cpu"
    from core.device import pick_device

    return str(pick_device(name))


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        import torch

        return torch.__version__


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def measure(model: ModelConfig, train: TrainConfig, machine: Machine) -> float:
    """Training tokens a second of `model` at `train.batch_size` rows on `machine` (no cache)."""
    import torch

    from core.device import amp_dtype, autocast, is_out_of_memory
    from core.model import GPT

    if machine.threads:
        torch.set_num_threads(machine.threads)
    torch.manual_seed(0)
    device = torch.device(machine.device)
    amp = amp_dtype(device, machine.precision)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    rows, tokens = train.batch_size, train.batch_size * model.context
    try:
        gpt = GPT(model).to(device)
        optimizers = gpt.optimizers(train, device.type)
        x = torch.randint(0, model.vocab_size, (rows, model.context), device=device)

        def step() -> None:
            with autocast(device, amp):
                _, loss = gpt(x, x)
            loss.backward()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)

        for _ in range(WARM_STEPS):
            step()
        sync()
        times: list[float] = []
        while len(times) < MAX_STEPS and (len(times) < MIN_TIMED or sum(times) < MIN_SECONDS):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        return tokens / sorted(times)[len(times) // 4]  # the lower quartile: a busy spell slows some steps only
    except Exception as e:
        if is_out_of_memory(e):
            raise ProbeOutOfMemory(
                f"{model.n_layer} layers x {model.n_embd} wide at {rows} rows of {model.context} tokens do not fit "
                f"on {machine.device}"
            ) from None
        raise
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()


def cpu_wait() -> float:
    """Seconds this process's threads have spent ready to run but waiting for a CPU (Linux's schedstat; 0
    elsewhere, where a busy machine goes unnoticed)."""
    total = 0
    for stat in Path("/proc/self/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):  # a thread that ended meanwhile
            total += int(stat.read_text().split()[1])
    return total / 1e9


class Probe:
    """Measured speeds on one machine, from the cache where they are known (`measured`: how many were not)."""

    def __init__(
        self,
        machine: Machine,
        path: Path | None = None,
        fresh: bool = False,
        measure: Callable = measure,
        waited: Callable[[], float] = cpu_wait,
    ) -> None:
        self.machine, self.path = machine, path or cache_dir() / "probe.json"
        self._measure, self._waited = measure, waited
        self.entries = {} if fresh else read_cache(self.path)
        self.measured = 0
        self.busy: set[str] = set()  # keys measured while other work held the cores: used now, never cached

    def speed(self, model: ModelConfig, train: TrainConfig) -> float:
        """Training tokens a second of `model` at `train`'s batch on this machine. A speed measured while other
        processes kept this one waiting for the CPU serves this plan only: cached, it would misplan later ones."""
        key = self.machine.key(model, train.batch_size)
        if key not in self.entries:
            waited, start = self._waited(), time.perf_counter()
            self.entries[key] = self._measure(model, train, self.machine)
            self.measured += 1
            if self._waited() - waited > BUSY_WAIT * (time.perf_counter() - start):
                self.busy.add(key)
            self._save()
        return self.entries[key]

    def _save(self) -> None:
        kept = {k: v for k, v in list(self.entries.items())[-MAX_ENTRIES:] if k not in self.busy}
        with contextlib.suppress(OSError, SLMError):  # a read-only cache costs a probe next time, nothing more
            atomic.write_json(self.path, read_cache(self.path) | kept)  # another process's probes stay


def read_cache(path: Path) -> dict[str, float]:
    """The cache's entries: a positive finite speed for each key; anything else in the file is left out."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {
        k: float(v)
        for k, v in value.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    }
