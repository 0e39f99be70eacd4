"""A run's curves read from its metrics.jsonl: train loss and validation loss and bits per byte, each against
step, tokens seen and wall time, kept up to date by reading only what the file gained since the last call.
Also the smoothing people know from TensorBoard, for laying noisy curves over each other.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from core.train.events import EvalMetrics, RunEnded, RunStarted, StepMetrics
from core.train.monitor import MetricsTail

Axis = Literal["step", "tokens", "time"]
AXES: tuple[Axis, ...] = ("step", "tokens", "time")
AXIS_LABELS = {"step": "step", "tokens": "tokens seen", "time": "wall time (min)"}
Metric = Literal["loss", "val_loss", "val_bpb"]
METRICS: tuple[Metric, ...] = ("loss", "val_loss", "val_bpb")
METRIC_LABELS = {"loss": "train loss", "val_loss": "val loss", "val_bpb": "val bits/byte"}


@dataclass
class Series:
    """Points of one metric, each with its step, tokens seen and wall seconds."""

    steps: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def add(self, step: int, tokens: int, seconds: float, value: float) -> None:
        if self.steps and step <= self.steps[-1]:  # a resumed run logs these steps again
            self.trim_after(step - 1)
        self.steps.append(step)
        self.tokens.append(tokens)
        self.seconds.append(seconds)
        self.values.append(value)

    def trim_after(self, step: int) -> None:
        keep = bisect.bisect_right(self.steps, step)
        del self.steps[keep:], self.tokens[keep:], self.seconds[keep:], self.values[keep:]

    def xs(self, axis: Axis) -> list[float]:
        if axis == "step":
            return list(self.steps)
        if axis == "tokens":
            return list(self.tokens)
        return [s / 60 for s in self.seconds]

    def __len__(self) -> int:
        return len(self.steps)


@dataclass
class Curves:
    """Everything a comparison draws of one run; `update()` reads the lines its metrics.jsonl gained. A worker
    may update while the UI thread reads `points()`."""

    path: Path
    series: dict[Metric, Series] = field(default_factory=lambda: {m: Series() for m in METRICS})
    tokens_per_step: int = 0
    ended: RunEnded | None = None
    version: int = 0  # bumped when anything changed, so a view redraws only then

    def __post_init__(self) -> None:
        self._tail = MetricsTail(self.path)
        self._lock = threading.Lock()

    def update(self) -> bool:
        """Fold in the events appended since the last call; True when anything changed."""
        events = self._tail.read()  # parsed outside the lock: a first read of a long run takes a while
        if not events and not self._tail.restarted:
            return False
        with self._lock:
            if self._tail.restarted:  # the file was rewritten (a resume trims it)
                self.series = {m: Series() for m in METRICS}
                self.ended = None
            for event in events:
                self._apply(event)
            self.version += 1
        return True

    def points(self, metric: Metric, axis: Axis) -> tuple[list[float], list[float]]:
        """A consistent copy of one curve: x values on `axis`, and the metric's values."""
        with self._lock:
            series = self.series[metric]
            return series.xs(axis), list(series.values)

    def _apply(self, event: object) -> None:
        train = self.series["loss"]
        if isinstance(event, RunStarted):
            self.tokens_per_step = event.tokens_per_step
            for s in self.series.values():
                s.trim_after(event.start_step)
            self.ended = None
        elif isinstance(event, StepMetrics):
            train.add(event.step, event.tokens_seen, event.elapsed_s, event.loss)
        elif isinstance(event, EvalMetrics):
            tokens = event.step * self.tokens_per_step if self.tokens_per_step else _tokens_at(train, event.step)
            self.series["val_loss"].add(event.step, tokens, event.elapsed_s, event.val_loss)
            self.series["val_bpb"].add(event.step, tokens, event.elapsed_s, event.val_bpb)
        elif isinstance(event, RunEnded):
            self.ended = event

    # -- what a summary reads --------------------------------------------------------------------

    @property
    def last_step(self) -> int:
        train = self.series["loss"]
        return train.steps[-1] if train else 0

    @property
    def tokens_seen(self) -> int:
        train = self.series["loss"]
        return train.tokens[-1] if train else 0

    @property
    def seconds(self) -> float:
        ends = [s.seconds[-1] for s in self.series.values() if s]
        return max(ends, default=0.0)

    @property
    def best_bpb(self) -> float | None:
        values = self.series["val_bpb"].values
        return min(values) if values else None

    @property
    def last(self) -> dict[Metric, float | None]:
        return {m: (s.values[-1] if s else None) for m, s in self.series.items()}


def _tokens_at(train: Series, step: int) -> int:
    """Tokens seen at `step`, from the nearest train point at or before it."""
    i = bisect.bisect_right(train.steps, step) - 1
    return train.tokens[i] if i >= 0 else 0


def smooth(values: list[float], weight: float) -> list[float]:
    """TensorBoard's smoothing: an exponential moving average with its start-up bias corrected, so the first
    points are not dragged towards zero. `weight` 0 leaves the values as they are; it must be below 1."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing weight must be in [0, 1), not {weight}")
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out
