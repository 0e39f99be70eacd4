"""Validation loss and bits per byte of a merge's inputs and its result, side by side."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.widgets import DataTable

if TYPE_CHECKING:
    from core.evaluate import EvalResult

COLUMNS = ("checkpoint", "weight", "val loss", "bits/byte", "vs best input")


@dataclass(frozen=True)
class Compared:
    label: str  # RUN/KIND
    result: EvalResult
    weight: float | None = None  # its share of the merge; None for a plain comparison or the merge itself
    merged: bool = False  # the merge's result rather than one of its inputs


class ComparisonTable(DataTable):
    """One row per checkpoint; the last column is the loss minus the best input's loss."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, rows: list[Compared]) -> None:
        self.clear()
        inputs = [r.result.loss for r in rows if not r.merged]
        best = min(inputs, default=None)
        for row in rows:
            self.add_row(
                f"= {row.label}" if row.merged else row.label,
                "-" if row.weight is None else f"{row.weight:.2f}",
                f"{row.result.loss:.4f}",
                f"{row.result.bpb:.4f}",
                _versus(row.result.loss, best),
            )


def _versus(loss: float, best: float | None) -> str:
    if best is None:
        return "-"
    difference = loss - best
    return "best" if difference == 0 else f"{difference:+.4f}"
