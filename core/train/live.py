"""Which runs are training now: a training process marks its run folder live, and anyone can read the mark.

While it trains, a process keeps `checkpoints/RUN/live.json` (its pid, host, start time and a heartbeat
rewritten every HEARTBEAT_S seconds) and removes it when it ends. A mark whose process is gone (same host)
or whose heartbeat is older than STALE_S reads as stopped: the process was killed or crashed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core import atomic
from core.errors import SLMError

FILE_NAME = "live.json"
HEARTBEAT_S = 5.0
STALE_S = 4 * HEARTBEAT_S

Liveness = Literal["live", "stopped", "none"]  # none: no mark (the run ended, or never marked itself)


@dataclass(frozen=True)
class LiveMark:
    pid: int
    host: str
    started: float
    heartbeat: float


DEAD = LiveMark(0, "", 0.0, 0.0)  # what a damaged mark reads as


def read_mark(run_dir: Path) -> LiveMark | None:
    """The run's mark; None when there is none."""
    try:
        data = json.loads((Path(run_dir) / FILE_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError):
        return DEAD
    if not isinstance(data, dict):
        return DEAD
    pid, host, started, heartbeat = (data.get(key) for key in ("pid", "host", "started", "heartbeat"))
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (pid, started, heartbeat))
    if not (numbers and isinstance(host, str)):
        return DEAD
    return LiveMark(int(pid), host, float(started), float(heartbeat))


def process_exists(pid: int) -> bool:
    """Whether a process `pid` runs on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def liveness(run_dir: Path, now: float | None = None) -> Liveness:
    """live: a process trains the run now; stopped: its mark outlived it; none: no mark."""
    mark = read_mark(run_dir)
    if mark is None:
        return "none"
    fresh = (now if now is not None else time.time()) - mark.heartbeat < STALE_S
    here = mark.host == socket.gethostname()
    return "live" if fresh and (not here or process_exists(mark.pid)) else "stopped"


def ask_to_stop(run_dir: Path) -> int:
    """Ask the process training `run_dir` to stop, as Ctrl-C does: it saves `latest` after its step and ends.
    Returns its pid; SLMError when no process of this machine trains the run now."""
    mark = read_mark(run_dir)
    if mark is None or liveness(run_dir) != "live":
        raise SLMError(f"{Path(run_dir).name} is not training now")
    if mark.host != socket.gethostname():
        raise SLMError(f"{Path(run_dir).name} trains on {mark.host}: stop it there")
    try:
        os.kill(mark.pid, signal.SIGINT)
    except OSError as e:
        raise SLMError(f"cannot stop {Path(run_dir).name} (process {mark.pid}): {e.strerror or e}") from None
    return mark.pid


class Heartbeat:
    """Marks `run_dir` live while in the `with` block: writes the mark, refreshes it from a daemon thread,
    and removes it on the way out (a killed process leaves it behind, and it goes stale)."""

    def __init__(self, run_dir: Path, interval: float = HEARTBEAT_S) -> None:
        self.path = Path(run_dir) / FILE_NAME
        self.interval = interval
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="slm-heartbeat", daemon=True)

    def _write(self) -> None:
        mark = {"pid": os.getpid(), "host": socket.gethostname(), "started": self.started, "heartbeat": time.time()}
        atomic.write_json(self.path, mark)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a full disk must not stop training: the mark goes stale
                self._write()

    def __enter__(self) -> Heartbeat:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.path.unlink(missing_ok=True)
