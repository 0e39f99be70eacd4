"""Validation loss and bits per byte of a merge's inputs, the base they branched from and the merge, side by side;
for branches, also each one's bits per byte on every branch's own data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from textual.widgets import DataTable

if TYPE_CHECKING:
    from core.evaluate import EvalResult

COLUMNS = ("checkpoint", "weight", "val loss", "bits/byte", "vs best input")


@dataclass(frozen=True)
class Compared:
    label: str  # RUN/KIND
    result: EvalResult  # on the selected data's validation split
    weight: float | None = None  # its share of the merge; None for a plain comparison, the base or the merge
    role: Literal["input", "base", "merge"] = "input"
    entries: dict[str, float] = field(default_factory=dict)  # bits per byte on each data entry's validation split


class ComparisonTable(DataTable):
    """One row per checkpoint; "vs best input" is the loss minus the best input's loss, then one bits/byte column
    per data entry when the inputs are branches."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.add_columns(*COLUMNS)

    def show(self, rows: list[Compared]) -> None:
        entries = list(rows[0].entries) if rows else []
        self.clear(columns=True)
        self.add_columns(*COLUMNS, *(f"{e} b/B" for e in entries))
        best = min((r.result.loss for r in rows if r.role == "input"), default=None)
        for row in rows:
            self.add_row(
                {"merge": "= ", "base": "base "}.get(row.role, "") + row.label,
                "-" if row.weight is None else f"{row.weight:.2f}",
                f"{row.result.loss:.4f}",
                f"{row.result.bpb:.4f}",
                "-" if row.role == "base" else _versus(row.result.loss, best),
                *(f"{row.entries[e]:.4f}" for e in entries),
            )


def _versus(loss: float, best: float | None) -> str:
    if best is None:
        return "-"
    difference = loss - best
    return "best" if difference == 0 else f"{difference:+.4f}"
