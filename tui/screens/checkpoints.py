"""Checkpoints: every run's checkpoints in a table, with chat, resume, fine-tune, export and delete."""

from __future__ import annotations

import shutil

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from core.listing import CheckpointEntry, list_checkpoints
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
        self.entries = list_checkpoints(self.app.workspace, unreadable=True)
        for e in self.entries:
            if e.error:  # its row says why; the others stay usable
                table.add_row(f"{e.run}/{e.kind}", *["-"] * (len(COLUMNS) - 2), Text(f"unreadable: {e.error}"))
                continue
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
        self.show_detail()

    def show_run(self, run: str) -> None:
        """Put the cursor on the first checkpoint of `run`."""
        rows = [i for i, e in enumerate(self.entries) if e.run == run]
        if rows:
            self.query_one(DataTable).move_cursor(row=rows[0])

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        """The keys, or the whole reason an unreadable checkpoint under the cursor cannot be read."""
        row = self.query_one(DataTable).cursor_row
        entry = self.entries[row] if 0 <= row < len(self.entries) else None
        if entry is not None and entry.error:
            text = f"{entry.run}/{entry.kind} is unreadable: {entry.error} · d deletes it"
        elif self.entries:
            text = "c chat · r resume · f fine-tune · e export · d delete"
        else:
            text = "no checkpoints yet: train a run in section 3 (or with `slm train`)"
        self.query_one("#checkpoints-detail", Static).update(Content(text))

    def selected(self, readable: bool = True) -> CheckpointEntry | None:
        """The checkpoint under the cursor; with `readable`, only one that can be loaded (else a notification)."""
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row < 0:
            self.notify("no checkpoint selected", severity="warning")
            return None
        entry = self.entries[min(table.cursor_row, len(self.entries) - 1)]
        if readable and entry.error:
            self.notify(f"{entry.run}/{entry.kind} is unreadable: {entry.error}", severity="error", markup=False)
            return None
        return entry

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_chat()

    async def action_chat(self) -> None:
        if entry := self.selected():
            await self.app.chat_with(entry.path)

    async def action_resume(self) -> None:
        if entry := self.selected(readable=False):  # resuming reads the run's `latest`, which may be fine
            await self.app.resume_run(entry.run)

    async def action_fine_tune(self) -> None:
        if entry := self.selected():
            await self.app.fine_tune_from(entry.path)

    def action_export(self) -> None:
        if entry := self.selected():
            self.app.export_checkpoint(entry.path)

    def action_delete(self) -> None:
        entry = self.selected(readable=False)
        if entry is None:
            return
        bridge = self.app.bridge
        if bridge.training and bridge.history.run == entry.run:
            self.notify(f"{entry.run} is training: stop it before deleting its checkpoints", severity="error")
            return

        def answer(confirmed: bool | None) -> None:
            if confirmed:
                shutil.rmtree(entry.path, ignore_errors=True)
                shutil.rmtree(entry.path.with_name(f".{entry.path.name}.old"), ignore_errors=True)  # a crash's copy
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
