"""Runs: every run of the workspace in one table (live ones updating), the marked runs' curves laid over each
other, the settings in which they differ, and the lineage as a tree. The Checkpoints actions work on the run
under the cursor (its best checkpoint, else final, else latest)."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static, Tree

from core.errors import SLMError
from core.listing import resolve_checkpoint
from core.runs.curves import AXES, METRIC_LABELS, METRICS, Curves
from core.runs.lineage import Node, config_diff, lineage, node_label
from core.runs.table import SORTS, RunRow, list_runs, sort_rows
from core.train.live import ask_to_stop
from tui.format import clip, clock, count
from tui.plots import PALETTE, RICH_COLOURS
from tui.screens.modals import ConfirmScreen
from tui.widgets.runs.overlay import OverlayPlot

COLUMNS = ("", "status", "run", "kind", "shape", "params", "steps", "tokens", "wall", "bits/byte", "from")
SMOOTHING = (0.0, 0.3, 0.6, 0.8, 0.9, 0.95, 0.99)
REFRESH_S = 2.0
STATUS_STYLE = {"training": "bold green", "stopped": "yellow", "finished": "", "failed": "bold red"}


class RunsScreen(Screen):
    BINDINGS = [
        Binding("space", "mark", "Mark", id="runs.mark"),
        Binding("x", "axis", "X axis", id="runs.axis"),
        Binding("m", "metric", "Metric", id="runs.metric"),
        Binding("right_square_bracket", "smooth(1)", "Smooth+", id="runs.smooth_more"),
        Binding("left_square_bracket", "smooth(-1)", "Smooth-", id="runs.smooth_less"),
        Binding("t", "side", "Diff/tree", id="runs.side"),
        Binding("o", "sort", "Sort", id="runs.sort"),
        Binding("slash", "filter", "Filter", id="runs.filter"),
        Binding("c,enter", "chat", "Chat", id="runs.chat"),
        Binding("a", "attach", "Attach", id="runs.attach"),
        Binding("s", "stop", "Stop", show=False, id="runs.stop"),
        Binding("r", "resume", "Resume", show=False, id="runs.resume"),
        Binding("f", "fine_tune", "Fine-tune", show=False, id="runs.fine_tune"),
        Binding("e", "export", "Export", show=False, id="runs.export"),
        Binding("k", "checkpoints", "Checkpoints", show=False, id="runs.checkpoints"),
        Binding("escape", "leave_filter", "Leave filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []  # all runs, as last read
        self.shown: list[RunRow] = []  # those in the table, in its order
        self.curves: dict[Path, Curves] = {}
        self.marked: list[str] = []  # run names, in the order they were marked (their colours)
        self.sort, self.smoothing, self.side = "created", 0, "diff"
        self._table_key: tuple = ()
        self._tree_key: tuple = ()  # what the lineage tree shows, so a refresh redraws it only on a change
        self.reading, self._again = False, False  # a worker reads the runs; another read was asked meanwhile

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="runs-top"):
            yield Input(placeholder="filter: part of a name, kind or status", id="runs-filter")
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="runs-body"):
            yield OverlayPlot(id="runs-plot")
            with Vertical(id="runs-side"):
                yield Static("", id="runs-side-title")
                yield Static("", id="runs-diff")
                yield Tree("runs", id="runs-lineage")
        yield Static("", id="runs-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns(*COLUMNS)
        table.focus()
        self.query_one("#runs-lineage", Tree).show_root = False
        self.set_interval(REFRESH_S, self.action_reload)
        self.action_reload()

    def on_screen_resume(self) -> None:
        self.action_reload()

    # -- reading runs (in a worker: a first read of long runs takes a while) --------------------------

    def action_reload(self) -> None:
        """Read the runs again in a worker (one at a time: a call while one reads makes it read once more)."""
        if self.reading:
            self._again = True
            return
        self.reading = True
        self._read()

    @work(thread=True, group="runs", exit_on_error=False)
    def _read(self) -> None:
        try:
            while True:
                self._again = False
                rows = list_runs(self.app.workspace, self.curves)
                self.app.call_from_thread(self.show_rows, rows)
                if not self._again:
                    return
        finally:
            self.reading = False

    def show_rows(self, rows: list[RunRow]) -> None:
        self.rows = rows
        self.fill_table()
        self.show_curves()
        self.show_side()

    # -- the table -----------------------------------------------------------------------------------

    def fill_table(self) -> None:
        text = self.query_one("#runs-filter", Input).value.strip().lower()
        shown = [r for r in self.rows if not text or text in f"{r.name} {r.kind} {r.status}".lower()]
        self.shown = sort_rows(shown, self.sort)
        key = tuple((r.name, r.status, r.steps, r.best_bpb, r.error, r.name in self.marked) for r in self.shown)
        if key == self._table_key:
            return  # nothing to redraw: the cursor and scroll stay as they are
        self._table_key = key
        table = self.query_one(DataTable)
        current = self.current()
        table.clear()
        for r in self.shown:
            table.add_row(*self._cells(r), key=r.name)
        if self.shown:
            names = [r.name for r in self.shown]
            table.move_cursor(row=names.index(current.name) if current and current.name in names else 0)
        self.show_detail()

    def _cells(self, r: RunRow) -> list:
        mark = Text("●", style=self.colour(r.name)) if r.name in self.marked else Text(" ")
        if r.error:
            return [mark, Text("?"), r.name, *["-"] * (len(COLUMNS) - 4), Text(f"unreadable: {r.error}", style="red")]
        bpb = f"{r.best_bpb:.3f}" if r.best_bpb is not None else "-"
        return [
            mark, Text(r.status, style=STATUS_STYLE[r.status]), clip(r.name, 32), r.kind, r.shape, count(r.params),
            str(r.steps or "-"), count(r.tokens) if r.tokens else "-", clock(r.seconds) if r.seconds else "-", bpb, clip(" + ".join(r.parents) or "-", 40),
        ]  # fmt: skip

    def plot_colour(self, name: str) -> str:
        """A run's colour in the plot (plotext's name): by the order it was marked."""
        return PALETTE[self.marked.index(name) % len(PALETTE)] if name in self.marked else PALETTE[0]

    def colour(self, name: str) -> str:
        return RICH_COLOURS[self.plot_colour(name)]

    def current(self) -> RunRow | None:
        row = self.query_one(DataTable).cursor_row
        return self.shown[row] if 0 <= row < len(self.shown) else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.show_detail()
        if not self.marked:  # with nothing marked, the plot follows the cursor
            self.show_curves()
            self.show_side()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.run_worker(self.action_chat())

    def show_detail(self) -> None:
        row = self.current()
        if row is None:
            text = "no runs yet: train one in section 3 (or with `slm train`)"
        elif row.error:
            text = f"{row.name} is unreadable: {row.error}"
        else:
            plotted = f"{len(self.marked)} marked" if self.marked else "space marks runs to lay over each other"
            live = " · a attaches · s stops" if row.status == "training" else ""
            text = f"{plotted} · x axis · m metric · [ ] smoothing · t diff/tree · c chat · r resume · f fine-tune · e export · k checkpoints{live}"
        self.query_one("#runs-detail", Static).update(Content(text))

    # -- the plot and the side panel ---------------------------------------------------------------

    def plotted(self) -> list[RunRow]:
        """The marked runs, else the one under the cursor."""
        by_name = {r.name: r for r in self.rows}
        if self.marked:
            return [by_name[m] for m in self.marked if m in by_name]
        row = self.current()
        return [row] if row is not None and not row.error else []

    def show_curves(self) -> None:
        plot = self.query_one(OverlayPlot)
        plot.smoothing = SMOOTHING[self.smoothing]
        runs = [r for r in self.plotted() if r.path in self.curves]
        colours = [self.plot_colour(r.name) for r in runs]
        plot.show([(r.name, self.curves[r.path]) for r in runs], colours)

    def show_side(self) -> None:
        diff, tree = self.query_one("#runs-diff", Static), self.query_one("#runs-lineage", Tree)
        diff.display, tree.display = self.side == "diff", self.side == "tree"
        self.query_one("#runs-side").set_class(self.side == "tree", "-tree")  # a tree needs more room
        title = self.query_one("#runs-side-title", Static)
        if self.side == "tree":
            title.update(Content("lineage"))
            self._fill_tree(tree)
            return
        runs = self.plotted()
        title.update(Content("settings that differ" if len(runs) > 1 else "settings"))
        diff.update(_diff_text(runs, [self.colour(r.name) if r.name in self.marked else "" for r in runs]))

    def _fill_tree(self, tree: Tree) -> None:
        roots = lineage([r for r in self.rows if not r.error])
        key = tuple(node_label(r) for r in self.rows if not r.error)
        if key == self._tree_key:
            return
        self._tree_key = key
        tree.clear()

        def add(parent, node: Node) -> None:
            style = STATUS_STYLE[node.row.status]
            if node.children:
                branch = parent.add(Text(node_label(node.row), style=style), expand=True)
                for child in node.children:
                    add(branch, child)
            else:
                parent.add_leaf(Text(node_label(node.row), style=style))

        for root in roots:
            add(tree.root, root)

    def mark(self, runs: list[str]) -> None:
        """Mark `runs`, those not written yet included (branches starting): they are plotted once they appear."""
        self.marked = list(runs)
        self._table_key = ()
        self.action_reload()

    # -- keys ------------------------------------------------------------------------------------

    def action_mark(self) -> None:
        row = self.current()
        if row is None or row.error:
            return
        if row.name in self.marked:
            self.marked.remove(row.name)
        else:
            self.marked.append(row.name)
        self._table_key = ()
        self.fill_table()
        self.show_curves()
        self.show_side()

    def action_axis(self) -> None:
        plot = self.query_one(OverlayPlot)
        plot.axis = AXES[(AXES.index(plot.axis) + 1) % len(AXES)]
        plot.refresh()

    def action_metric(self) -> None:
        plot = self.query_one(OverlayPlot)
        plot.metric = METRICS[(METRICS.index(plot.metric) - 1) % len(METRICS)]
        plot.refresh()
        self.notify(f"plotting {METRIC_LABELS[plot.metric]}", timeout=2)

    def action_smooth(self, step: int) -> None:
        self.smoothing = min(max(self.smoothing + step, 0), len(SMOOTHING) - 1)
        self.show_curves()

    def action_side(self) -> None:
        self.side = "tree" if self.side == "diff" else "diff"
        self.show_side()

    def action_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        self.fill_table()
        self.notify(f"sorted by {'best bits/byte' if self.sort == 'bpb' else self.sort}", timeout=2)

    def action_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.add_class("shown")
        field.focus()

    def action_leave_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        if field.has_focus:
            field.set_class(bool(field.value), "shown")
            self.query_one(DataTable).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.fill_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_leave_filter()

    def checkpoint(self) -> Path | None:
        """The checkpoint of the run under the cursor that chat, fine-tune and export use (else a notification)."""
        row = self.current()
        if row is None:
            self.notify("no run selected", severity="warning")
            return None
        try:
            return resolve_checkpoint(self.app.workspace, row.name)
        except SLMError as e:
            self.notify(str(e), severity="error", markup=False)
            return None

    async def action_chat(self) -> None:
        if path := self.checkpoint():
            await self.app.chat_with(path)

    async def action_fine_tune(self) -> None:
        if path := self.checkpoint():
            await self.app.fine_tune_from(path)

    def action_export(self) -> None:
        if path := self.checkpoint():
            self.app.export_checkpoint(path)

    async def action_resume(self) -> None:
        if row := self.current():
            await self.app.resume_run(row.name)

    async def action_attach(self) -> None:
        row = self.current()
        if row is None or row.status != "training":
            self.notify("the run under the cursor is not training now", severity="warning")
            return
        await self.app.attach_to(row.path)

    def action_stop(self) -> None:
        """Stop the run under the cursor after its step (it saves `latest`): this studio's own, or another process's."""
        row = self.current()
        if row is None or row.status != "training":
            self.notify("the run under the cursor is not training now", severity="warning")
            return
        bridge = self.app.bridge

        def answer(confirmed: bool | None) -> None:
            if not confirmed:
                return
            if bridge.training and bridge.history.run == row.name:
                bridge.stop()
            else:
                try:
                    ask_to_stop(row.path)
                except SLMError as e:
                    self.notify(str(e), severity="error", markup=False)
                    return
            self.notify(f"stopping {row.name} after its step (it saves latest)")

        self.app.push_screen(ConfirmScreen(f"Stop {row.name} after its step? It saves latest.", yes="Stop"), answer)

    async def action_checkpoints(self) -> None:
        screen = await self.app.open_section("checkpoints")
        if row := self.current():
            screen.show_run(row.name)


def _diff_text(runs: list[RunRow], colours: list[str]) -> Text:
    """The settings that differ between `runs` (all of one run's settings when it is alone)."""
    if not runs:
        return Text("no run to show", style="dim")
    text = Text()
    if len(runs) == 1:
        for key, value in runs[0].config.items():
            text.append(f"{key} ", style="dim").append(f"{value}\n")
        return text
    diff = config_diff(runs)
    if not diff:
        return Text("the same settings in every marked run", style="dim")
    for key, values in diff.items():
        text.append(f"{key}\n", style="bold")
        for run, colour, value in zip(runs, colours, values, strict=True):
            text.append("  ● ", style=colour or "dim").append(f"{clip(run.name, 16)} ", style="dim")
            text.append(f"{'-' if value is None else value}\n")
    return text
