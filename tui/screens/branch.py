"""Branching from the studio: the dialog that plans branch runs from a base checkpoint, one per folder (or file)
of the selected data, the same plan `slm branch` makes."""

from __future__ import annotations

from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.widgets import Button, Input, Label, Select, Static

from core.merge.branches import Branch, Per
from tui.screens.modals import Dialog


@dataclass(frozen=True)
class BranchPlan:
    """What the dialog answers: the branches to train and the settings each gets."""

    branches: list[Branch]
    max_steps: int
    lr: float | None  # None: what `slm branch` uses


class BranchDialog(Dialog[BranchPlan | None]):
    """Pick per folder or per file, the steps and the learning rate; shows the runs it will train."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, base: str, plans: dict[Per, list[Branch] | str], steps: int = 500) -> None:
        super().__init__()
        self.base, self.plans, self.steps = base, plans, steps  # a plan, or why there is none

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog branch"):
            yield Label(f"Branch {self.base}: one run per part of the selected data, trained in parallel "
                        "processes from these weights; then merge them here.", classes="dialog-question")  # fmt: skip
            with Horizontal(classes="merge-field"):
                yield Label("per", classes="merge-label")
                per = "folder" if isinstance(self.plans["folder"], list) else "file"
                yield Select([("folder", "folder"), ("file", "file")], value=per, allow_blank=False, compact=True,
                             id="branch-per")  # fmt: skip
            with Horizontal(classes="merge-field"):
                yield Label("steps", classes="merge-label")
                yield Input(str(self.steps), compact=True, type="integer", id="branch-steps")
            with Horizontal(classes="merge-field"):
                yield Label("lr", classes="merge-label")
                yield Input(placeholder="as slm branch", compact=True, id="branch-lr")
            yield Static("", id="branch-plan")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", variant="primary", id="start")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        super().on_mount()
        self.show_plan()
        self.query_one("#branch-steps", Input).focus()

    @property
    def per(self) -> Per:
        return "file" if self.query_one("#branch-per", Select).value == "file" else "folder"

    @on(Select.Changed, "#branch-per")
    def show_plan(self) -> None:
        plan = self.plans[self.per]
        text = plan if isinstance(plan, str) else "\n".join(f"{b.name}  ← {b.data}" for b in plan)
        self.query_one("#branch-plan", Static).update(Content(text))
        self.query_one("#start", Button).disabled = isinstance(plan, str)

    def answer(self) -> BranchPlan | None:
        """The plan, or None (with a notification) when a field is wrong."""
        plan = self.plans[self.per]
        steps, lr = self.query_one("#branch-steps", Input).value, self.query_one("#branch-lr", Input).value.strip()
        try:
            max_steps, rate = int(steps), float(lr) if lr else None
        except ValueError:
            self.notify("steps must be a whole number and lr a number (or blank)", severity="error")
            return None
        if isinstance(plan, str) or max_steps < 1 or (rate is not None and not 0 < rate < 1):
            self.notify("steps must be at least 1 and lr between 0 and 1", severity="error")
            return None
        return BranchPlan(plan, max_steps, rate)

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    def start(self) -> None:
        if (plan := self.answer()) is not None:
            self.dismiss(plan)

    @on(Button.Pressed, "#cancel")
    def cancel(self) -> None:
        self.dismiss(None)
