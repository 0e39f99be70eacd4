"""Following a run: fold its events into plottable series, live or by tailing its metrics.jsonl.

`RunHistory` is what a monitor shows (loss curves, latest figures, samples, log lines); it takes the
same events whether they come from a Trainer in this process or from the metrics file of a run
started elsewhere (`slm train` in another terminal, or torchrun). `MetricsTail` reads only the
lines appended since its last call, so a monitor can poll a file cheaply.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.train.events import (
    CheckpointSaved,
    EvalMetrics,
    Notice,
    PreferenceMetrics,
    RunEnded,
    RunStarted,
    SampleText,
    StateChanged,
    StepMetrics,
    event_from_dict,
)

MAX_LOG = 500


@dataclass
class RunHistory:
    """Series and latest figures of one run. Thread-safe: a worker applies, the UI reads snapshots."""

    run: str = ""
    max_steps: int = 0
    params: int = 0
    device: str = ""
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_bpb: list[float] = field(default_factory=list)
    last_step: StepMetrics | None = None
    last_eval: EvalMetrics | None = None
    best_val_loss: float | None = None
    sample: SampleText | None = None
    state: str = "idle"  # idle | preparing | running | paused | ended
    end: RunEnded | None = None
    log: list[str] = field(default_factory=list)
    version: int = 0  # bumped on every change, so a UI can skip redraws when nothing changed

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    def apply(self, event: Any) -> None:
        with self._lock:
            self._apply(event)
            self.version += 1

    def _apply(self, event: Any) -> None:
        if isinstance(event, RunStarted):
            self.run, self.max_steps, self.params, self.device = event.run, event.max_steps, event.params, event.device
            self.state = "running"
            self._trim_after(event.start_step)
            self._log(f"run {event.run} started on {event.device}: {event.params / 1e6:.2f}M parameters")
        elif isinstance(event, StepMetrics):
            if self.steps and event.step <= self.steps[-1]:
                self._trim_after(event.step - 1)
            self.steps.append(event.step)
            self.losses.append(event.loss)
            self.last_step = event
        elif isinstance(event, EvalMetrics):
            self.val_steps.append(event.step)
            self.val_losses.append(event.val_loss)
            self.val_bpb.append(event.val_bpb)
            self.last_eval = event
            self.best_val_loss = event.best_val_loss
            by_source = f" ({event.by_source()})" if event.sources else ""
            self._log(f"step {event.step}: val loss {event.val_loss:.4f}, {event.val_bpb:.3f} bits/byte{by_source}")
        elif isinstance(event, SampleText):
            self.sample = event
        elif isinstance(event, CheckpointSaved):
            self._log(f"step {event.step}: saved {event.kind}")
        elif isinstance(event, StateChanged):
            self.state = event.state
            self._log(f"step {event.step}: {event.state}")
        elif isinstance(event, Notice):
            self._log(("warning: " if event.level == "warning" else "") + event.message)
        elif isinstance(event, PreferenceMetrics):
            self._log(f"step {event.step}: held-out margin {event.margin:+.3f}, win rate {event.win_rate:.0%}")
        elif isinstance(event, RunEnded):
            self.state = "ended"
            self.end = event
            self._log(f"step {event.step}: {event.reason}" + (f" ({event.message})" if event.message else ""))

    def _trim_after(self, step: int) -> None:
        """Forget points after `step` (a resumed run logs them again)."""
        keep = sum(1 for s in self.steps if s <= step)
        del self.steps[keep:], self.losses[keep:]
        keep = sum(1 for s in self.val_steps if s <= step)
        del self.val_steps[keep:], self.val_losses[keep:], self.val_bpb[keep:]

    def _log(self, line: str) -> None:
        self.log.append(line)
        del self.log[:-MAX_LOG]

    def snapshot(self) -> RunHistory:
        """A consistent copy for the UI thread to render."""
        with self._lock:
            copy = RunHistory(
                **{
                    k: (list(v) if isinstance(v, list) else v)
                    for k, v in self.__dict__.items()
                    if not k.startswith("_")
                }
            )
        return copy


def downsample(xs: list[int], ys: list[float], limit: int) -> tuple[list[int], list[float]]:
    """At most `limit` points: bucket means, keeping the last point exact."""
    n = len(xs)
    if n <= limit or limit < 2:
        return list(xs), list(ys)
    size = n / (limit - 1)
    out_x, out_y = [], []
    for i in range(limit - 1):
        lo, hi = int(i * size), max(int((i + 1) * size), int(i * size) + 1)
        out_x.append(xs[min(hi, n) - 1])
        chunk = ys[lo:hi]
        out_y.append(sum(chunk) / len(chunk))
    out_x.append(xs[-1])
    out_y.append(ys[-1])
    return out_x, out_y


class MetricsTail:
    """Reads the events appended to a metrics.jsonl since the previous call."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self.restarted = False  # whether the last read started over (the file was rewritten)

    def read(self) -> list[Any]:
        self.restarted = False
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < self.offset:  # the file was rewritten (a resume trims it): start over
                    self.offset, self._partial, self.restarted = 0, b"", True
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the rest
        events = []
        for line in lines:
            try:
                event = event_from_dict(json.loads(line))
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                continue
            if event is not None:
                events.append(event)
        return events
