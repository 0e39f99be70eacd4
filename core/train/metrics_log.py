"""A run's metrics on disk: every event appended to `checkpoints/RUN/metrics.jsonl`, and, when the optional
`tensorboard` package is installed (`pip install -e ".[tensorboard]"`), the numbers also written as TensorBoard
scalars to `checkpoints/RUN/tensorboard/` for `tensorboard --logdir checkpoints`.

The JSON lines are the record other processes follow; a failed write of them is a one-line error. TensorBoard
is a convenience: it is skipped when it cannot be imported or `SLM_TENSORBOARD=0`, and the first failure of
its writer turns it off for the rest of the run, silently, so that it never stops training.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from core import atomic
from core.train.events import EvalMetrics, PreferenceMetrics, Progress, StepMetrics, event_to_dict

FILE_NAME = "metrics.jsonl"
BOARD_DIR = "tensorboard"
OFF_VALUES = ("0", "false", "no", "off")


def scalars(event: Any) -> dict[str, float]:
    """The TensorBoard scalars of an event, by tag; none for events without numbers to plot."""
    if isinstance(event, StepMetrics):
        return {
            "train/loss": event.loss,
            "train/lr": event.lr,
            "train/grad_norm": event.grad_norm,
            "train/tokens_per_s": event.tokens_per_s,
        }
    if isinstance(event, EvalMetrics):
        by_source = {f"val/bits_per_byte/{name}": bpb for name, bpb in event.sources.items()}
        return {
            "val/loss": event.val_loss,
            "val/bits_per_byte": event.val_bpb,
            "val/perplexity": event.val_ppl,
        } | by_source
    if isinstance(event, PreferenceMetrics):
        return {"val/dpo_margin": event.margin, "val/dpo_win_rate": event.win_rate}
    return {}


def board_writer(log_dir: Path, start_step: int) -> Any | None:
    """A TensorBoard `SummaryWriter` for `log_dir`, or None when it is turned off or cannot be had. A resumed
    run's writer purges the events logged after `start_step`, as metrics.jsonl drops them."""
    if os.environ.get("SLM_TENSORBOARD", "").strip().lower() in OFF_VALUES:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        return SummaryWriter(log_dir=str(log_dir), purge_step=start_step, flush_secs=10)  # a live run shows soon
    except Exception:  # not installed, or broken: do without
        return None


class MetricsLog:
    """Appends a run's events to its metrics.jsonl (Progress events excepted) and their scalars to TensorBoard.
    Use it as a context manager, or call `close()`."""

    def __init__(self, run_dir: Path, start_step: int = 0) -> None:
        self.path = Path(run_dir) / FILE_NAME
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self._board = board_writer(Path(run_dir) / BOARD_DIR, start_step)

    def write(self, event: Any) -> None:
        """Append `event`; a failed write of its JSON line is a one-line error (`atomic.disk_error`)."""
        if isinstance(event, Progress):
            return
        try:
            self._file.write(json.dumps(event_to_dict(event)) + "\n")
            self._file.flush()
        except OSError as e:
            raise atomic.disk_error(e, str(self.path)) from None
        if self._board is not None and (values := scalars(event)):
            try:
                for tag, value in values.items():
                    self._board.add_scalar(tag, value, global_step=event.step)
            except Exception:  # TensorBoard must never stop training: drop it for the rest of the run
                self._close_board()

    def _close_board(self) -> None:
        board, self._board = self._board, None
        if board is not None:
            with contextlib.suppress(Exception):
                board.close()

    def close(self) -> None:
        self._close_board()
        self._file.close()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
