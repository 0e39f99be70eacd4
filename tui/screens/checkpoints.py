"""Checkpoints: every run's checkpoints in a table, with chat, resume, fine-tune, export and delete."""

from __future__ import annotations

import shutil

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from core.checkpoint import CheckpointEntry, list_checkpoints
from tui.messages import JobDone, TrainingFinished
from tui.screens.modals import ConfirmScreen

COLUMNS = ("checkpoint", "step", "val loss", "bits/byte", "params", "created", "from")


class CheckpointsScreen(Screen):
    BINDINGS = [
        Binding("c,enter", "chat", "Chat", id="checkpoints.chat"),
        Binding("r", "resume", "Resume", id="checkpoints.resume"),
        Binding("f", "fine_tune", "Fine-tune", id="checkpoints.fine_tune"),
        Binding("e", "export", "Export", id="checkpoints.export"),
        Binding("delete,d", "delete", "Delete", id="checkpoints.delete"),
        Binding("g", "reload", "Refresh", id="checkpoints.reload"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[CheckpointEntry] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="checkpoints", cursor_type="row", zebra_stripes=True)
        yield Static("", id="checkpoints-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)
        self.query_one(DataTable).add_columns(*COLUMNS)
        self.action_reload()

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)

    def on_screen_resume(self) -> None:
        self.action_reload()

    def on_training_finished(self, message: TrainingFinished) -> None:
        self.action_reload()

    def on_job_done(self, message: JobDone) -> None:
        if message.job in ("merge", "delete"):
            self.action_reload()

    def action_reload(self) -> None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        self.entries = list_checkpoints(self.app.workspace)
        for e in self.entries:
            table.add_row(
                f"{e.run}/{e.kind}",
                str(e.step),
                f"{e.val_loss:.4f}" if e.val_loss is not None else "-",
                f"{e.val_bpb:.3f}" if e.val_bpb is not None else "-",
                f"{e.params / 1e6:.2f}M",
                e.created[:16].replace("T", " "),
                _short_parent(e.parent),
            )
        if self.entries:
            table.move_cursor(row=min(row, len(self.entries) - 1))
        detail = self.query_one("#checkpoints-detail", Static)
        detail.update(
            "c chat · r resume · f fine-tune · e export · d delete"
            if self.entries
            else "no checkpoints yet: train a run in section 3 (or with `slm train`)"
        )

    def selected(self) -> CheckpointEntry | None:
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row < 0:
            self.notify("no checkpoint selected", severity="warning")
            return None
        return self.entries[min(table.cursor_row, len(self.entries) - 1)]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_chat()

    async def action_chat(self) -> None:
        if entry := self.selected():
            await self.app.chat_with(entry.path)

    async def action_resume(self) -> None:
        if entry := self.selected():
            await self.app.resume_run(entry.run)

    async def action_fine_tune(self) -> None:
        if entry := self.selected():
            await self.app.fine_tune_from(entry.path)

    def action_export(self) -> None:
        if entry := self.selected():
            self.app.export_checkpoint(entry.path)

    def action_delete(self) -> None:
        entry = self.selected()
        if entry is None:
            return
        bridge = self.app.bridge
        if bridge.training and bridge.history.run == entry.run:
            self.notify(f"{entry.run} is training: stop it before deleting its checkpoints", severity="error")
            return

        def answer(confirmed: bool | None) -> None:
            if confirmed:
                shutil.rmtree(entry.path, ignore_errors=True)
                self.notify(f"deleted {entry.run}/{entry.kind}")
                self.action_reload()

        self.app.push_screen(
            ConfirmScreen(
                f"Delete checkpoint {entry.run}/{entry.kind} (step {entry.step})? This cannot be undone.", yes="Delete"
            ),
            answer,
        )


def _short_parent(parent: str | None) -> str:
    if not parent:
        return "-"
    if " of " in parent:  # a merge: already short
        return parent
    parts = parent.replace("\\", "/").rstrip("/").split("/")
    return "/".join(parts[-2:])
