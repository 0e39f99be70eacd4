"""Branches: sub-models continued from one base checkpoint, one per file or folder of data/, trained in parallel.

Branch-Train-Merge: every branch starts from the same weights, so the branches stay close enough for
their weights to merge (`core.merge.weights`). Each branch trains in its own OS process with its own run folder
(`run.json`, `metrics.jsonl` the studio can attach to, checkpoints, and `train.log` with what the process
printed): one that crashes leaves the others running. The CPU threads are split fairly between the
processes running at once; with several GPUs each process gets one, round robin.

What a process runs is the caller's business (`Job.argv`; `core.merge.pipeline.branch_job` builds the
`slm train` one): this module only plans, starts, watches and reports.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.data.corpus import Corpus
from core.errors import SLMError
from core.workspace import Workspace, check_name

Per = Literal["file", "folder"]
LOG = "train.log"


# --- planning -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Branch:
    name: str  # its run name
    data: str  # the file or folder under data/ it trains on


def plan_branches(
    workspace: Workspace,
    prefix: str,
    per: Per = "folder",
    selection: list[str] | None = None,
    decode_errors: str = "skip",
) -> list[Branch]:
    """One branch per text file (`per="file"`) or per top-level entry of data/ (a folder, or a file lying there)
    that holds usable text (a binary file or an undecodable one gets no branch).

    Runs are named PREFIX-ENTRY, with characters a run name cannot hold replaced by '_'.
    """
    root = workspace.data_dir
    rel = [Path(f.path) for f in Corpus.scan(root, selection, decode_errors).files]
    units = sorted({(r if per == "file" else Path(r.parts[0])).as_posix() for r in rel})
    if len(units) < 2:
        raise SLMError(
            f"branching needs at least two {per}s of text to split the data by, and found {len(units)}: "
            f"{'use --per file, or ' if per == 'folder' else ''}put each domain in its own {per} under {root}"
        )
    return [Branch(check_name(f"{prefix}-{re.sub(r'[^A-Za-z0-9._-]', '_', u.replace('/', '-'))}"), u) for u in units]


# --- running processes in parallel ---------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    name: str
    argv: list[str]
    log: Path  # the process's stdout and stderr, appended
    done: Path  # exists once the job has succeeded (a stopped run exits cleanly without it)


@dataclass(frozen=True)
class JobStarted:
    name: str
    pid: int
    threads: int
    gpu: str | None


@dataclass(frozen=True)
class JobEnded:
    name: str
    returncode: int
    seconds: float
    error: str | None  # None when it succeeded; otherwise the last error line it printed


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows
        return os.cpu_count() or 1


def thread_shares(threads: int, slots: int) -> list[int]:
    """`threads` split as evenly as possible over `slots` (each gets at least one)."""
    each, extra = divmod(threads, slots)
    return [max(1, each + (i < extra)) for i in range(slots)]


def gpu_ids(device: str | None) -> list[str]:
    """The GPUs to deal out to processes: none unless `device` lets CUDA be used and CUDA sees some."""
    if device not in (None, "auto", "cuda"):
        return []  # cpu, mps, or one GPU named by the user (cuda:N): every process uses it
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return visible.split(",")[:count] if visible else [str(i) for i in range(count)]


def run_parallel(
    jobs: list[Job],
    parallel: int,
    threads: int,
    gpus: list[str] | None = None,
    on_event: Callable[[Any], None] | None = None,
    on_poll: Callable[[], None] | None = None,
    poll_s: float = 0.5,
) -> list[JobEnded]:
    """Run the jobs as separate processes, at most `parallel` at once, sharing `threads` CPU threads fairly.

    A process that fails or crashes does not stop the others; every job is reported, in order. If this
    process is interrupted, each running job gets one SIGINT (a training run saves `latest` and stops).
    """
    emit = on_event or (lambda event: None)
    slots = max(1, min(parallel, len(jobs)))
    free = list(enumerate(thread_shares(threads, slots)))
    waiting, running, ended = list(jobs), {}, {}
    try:
        while waiting or running:
            while waiting and free:
                job, (slot, share) = waiting.pop(0), free.pop(0)
                gpu = gpus[slot % len(gpus)] if gpus else None
                running[job.name] = (job, _start(job, share, gpu), slot, share, time.monotonic())
                emit(JobStarted(job.name, running[job.name][1].pid, share, gpu))
            time.sleep(poll_s)
            for name, (job, process, slot, share, started) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                free.append((slot, share))
                ended[name] = _ended(job, process.returncode, time.monotonic() - started)
                emit(ended[name])
            if on_poll:
                on_poll()
    except BaseException:
        for _, process, *_ in running.values():
            process.send_signal(signal.SIGINT)
        for _, process, *_ in running.values():
            process.wait()
        raise
    return [ended[job.name] for job in jobs]


def _start(job: Job, threads: int, gpu: str | None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    job.log.parent.mkdir(parents=True, exist_ok=True)
    with open(job.log, "ab") as log:
        # a session of its own: a Ctrl-C in the terminal reaches only this process, which passes on one SIGINT
        return subprocess.Popen(
            job.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _ended(job: Job, returncode: int, seconds: float) -> JobEnded:
    if returncode == 0:
        error = None if job.done.exists() else "stopped before it finished: run it again to resume"
    elif returncode < 0:
        error = f"killed by signal {-returncode}"
    else:
        error = _last_error(job.log) or f"exit status {returncode}"
    return JobEnded(job.name, returncode, seconds, error)


def _last_error(log: Path) -> str | None:
    """The last `error: …` line of a log, or the last line of a traceback."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else None)
