"""Events that long-running engine work reports, and the control object that steers it.

Events are plain dataclasses. The trainer also appends them to the run's `metrics.jsonl`, one JSON
object per line with an `event` field naming the class, so another process (the studio attaching to
a headless run) can tail the file and rebuild the same events with `event_from_dict`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from core.config import field_types, type_problem


@dataclass
class Progress:
    """Preparation work: stage is "scan", "tokenizer" or "encode"; total 0 means unknown."""

    stage: str
    done: int
    total: int


@dataclass
class Notice:
    """Something the user should read (a fallback taken, a file skipped)."""

    message: str
    level: str = "info"  # info | warning


@dataclass
class RunStarted:
    run: str
    run_dir: str
    params: int
    device: str
    precision: str
    max_steps: int
    train_tokens: int
    val_tokens: int
    tokens_per_step: int
    start_step: int = 0
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepMetrics:
    step: int
    loss: float
    lr: float
    tokens_seen: int
    tokens_per_s: float
    elapsed_s: float
    progress: float  # 0..1 towards the nearest limit (steps, tokens or minutes)
    eta_s: float
    grad_norm: float = 0.0


@dataclass
class EvalMetrics:
    step: int
    val_loss: float
    val_ppl: float
    val_bpb: float
    best_val_loss: float
    elapsed_s: float = 0.0
    sources: dict[str, float] = field(default_factory=dict)  # val bits per byte of each source, when several

    def by_source(self) -> str:
        """Each source's val bits per byte, as the logs show them ("" with one source)."""
        return " · ".join(f"{name} {bpb:.3f}" for name, bpb in self.sources.items())


@dataclass
class SampleText:
    step: int
    text: str


@dataclass
class CheckpointSaved:
    step: int
    kind: str  # latest | best | final
    path: str


@dataclass
class PreferenceMetrics:
    """Preference tuning (DPO) on held-out pairs: the mean chosen-minus-rejected log-probability of the answers
    and the share of pairs whose chosen answer is the likelier one."""

    step: int
    margin: float
    win_rate: float
    pairs: int


@dataclass
class StateChanged:
    """The run was paused or resumed."""

    step: int
    state: str  # paused | running


@dataclass
class RunEnded:
    step: int
    reason: str  # finished | stopped | early_stop | nan | error; killed: its process vanished (seen by a monitor)
    best_val_loss: float | None = None
    message: str = ""


EVENT_TYPES = {
    cls.__name__: cls
    for cls in (
        Progress,
        Notice,
        RunStarted,
        StepMetrics,
        EvalMetrics,
        SampleText,
        CheckpointSaved,
        PreferenceMetrics,
        StateChanged,
        RunEnded,
    )
}


def event_to_dict(event: Any) -> dict[str, Any]:
    return {"event": type(event).__name__, "time": round(time.time(), 3), **asdict(event)}


def event_from_dict(data: Any) -> Any | None:
    """Rebuild an event from its JSON form; None for anything else: an unknown event (a newer writer), a line that
    is not an object, a missing field, or a field of the wrong type (a damaged file)."""
    if not isinstance(data, dict):
        return None
    cls = EVENT_TYPES.get(str(data.get("event")))
    if cls is None:
        return None
    hints = field_types(cls)
    values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
    if any(type_problem(value, hints[name]) for name, value in values.items()):
        return None
    try:
        return cls(**values)
    except TypeError:  # a field without a default is missing
        return None


class Control:
    """Thread-safe requests to a running job: pause, resume and stop (a cancel token)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()  # wake a paused job so it can stop

    def pause(self) -> None:
        if not self._stop.is_set():
            self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def wait_while_paused(self, timeout: float | None = None) -> None:
        self._running.wait(timeout)
