"""Data: the text files under data/, their stats and first lines, the training selection and the validation split."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.screen import Screen
from textual.validation import Function
from textual.widgets import Footer, Header, Input, Label, Static, Tree

from core.config import TrainConfig, preset_tokens
from core.data.corpus import Corpus, FileStats, discover, file_stats
from core.data.mixture import clean_name, epochs_text, read_mix_file, resolve_mixture, write_mix_file
from core.errors import SLMError
from tui.format import count, size
from tui.messages import JobDone, JobFailed, JobProgress
from tui.widgets.data.data_tree import DataTree
from tui.widgets.data.preview import FilePreview, counted, read_head
from tui.widgets.data.selection import chosen, toggle

PROGRESS_INTERVAL = 0.1  # seconds between progress messages while files are scanned
StatsKey = tuple[str, int, int]  # (path, mtime in ns, size): a file's stats are reused while these hold


@dataclass
class Scan:
    files: list[FileStats]
    cache: dict[StatsKey, FileStats]
    weights: dict[str, float]  # data/mix.json
    weights_error: str = ""  # why data/mix.json cannot be read


def scan_data(data_dir: Path, cache: dict[StatsKey, FileStats], report: Callable[[str, int, int], None]) -> Scan:
    """Stats of every text file under `data_dir` (none when it is missing), reusing those of unchanged files,
    and a row for each thing there that cannot be read as text."""
    problems: list[FileStats] = []
    try:
        paths = discover(data_dir, problems=problems)
    except SLMError:
        return Scan([], {}, {})
    files, fresh, reported = [], {}, 0.0
    for i, path in enumerate(paths):
        try:
            st = path.stat()
            key = (str(path), st.st_mtime_ns, st.st_size)
        except OSError:
            key = (str(path), -1, -1)
        stats = cache.get(key) or file_stats(path, data_dir)
        stats.path = Path(stats.path).as_posix()
        files.append(stats)
        fresh[key] = stats
        if time.monotonic() - reported >= PROGRESS_INTERVAL:
            report("scan", i + 1, len(paths))
            reported = time.monotonic()
    try:
        return Scan(files + problems, fresh, read_mix_file(data_dir))
    except SLMError as e:
        return Scan(files + problems, fresh, {}, str(e))


def valid_fraction(text: str) -> bool:
    try:
        return 0 < float(text) < 1
    except ValueError:
        return False


def valid_weight(text: str) -> bool:
    """A mixture weight as typed: empty (by size), or a finite number of at least 0."""
    try:
        return not text.strip() or 0 <= float(text) < float("inf")
    except ValueError:
        return False


class DataScreen(Screen):
    AUTO_FOCUS = "#data-tree"
    BINDINGS = [
        Binding("space", "toggle", "Choose", id="data.toggle"),
        Binding("a", "use_all", "Use all", id="data.use_all"),
        Binding("v", "edit_fraction", "Val fraction", id="data.val_fraction"),
        Binding("w", "edit_weight", "Weight", id="data.weight"),
        Binding("s", "add_sample", "Add sample corpus", id="data.add_sample"),
        Binding("g,ctrl+r", "rescan", "Refresh", id="data.rescan"),
        Binding("escape", "leave_input", "Leave input", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.cache: dict[StatsKey, FileStats] = {}
        self.scanned = False
        self.adding_sample = False
        self.weights: dict[str, float] = {}
        self.weights_error = ""
        self.weighing: str | None = None  # the entry whose weight is being typed

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="data-body"):
            yield DataTree(id="data-tree")
            yield FilePreview(id="data-preview")
        yield Static(id="data-empty")
        with Horizontal(id="data-bar"):
            yield Static("scanning data/…", id="data-summary")
            yield Label("val fraction", id="data-val-label")
            yield Input(
                str(self.app.val_fraction),
                id="data-val",
                validators=[Function(valid_fraction, "the validation fraction must be between 0 and 1")],
                validate_on=["changed", "submitted"],
            )
            yield Static("must be between 0 and 1", id="data-val-error")
        with Horizontal(id="data-weight-bar"):
            yield Label("weight", id="data-weight-label")
            yield Input(
                id="data-weight",
                placeholder="empty: by size",
                validators=[Function(valid_weight, "a weight is a number of at least 0")],
                validate_on=["changed", "submitted"],
            )
            yield Static("enter: save to data/mix.json · escape: back", id="data-weight-help")
        yield Static(id="data-sources")
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)

    def on_screen_resume(self) -> None:
        self.query_one("#data-val", Input).value = str(self.app.val_fraction)
        self.action_rescan()

    # -- scanning ------------------------------------------------------------------------------

    def action_rescan(self) -> None:
        data_dir, cache = self.app.workspace.data_dir, dict(self.cache)
        report = self.app.bridge.progress("data-scan")
        self.app.bridge.run_job("data-scan", lambda: scan_data(data_dir, cache, report))

    def on_job_progress(self, message: JobProgress) -> None:
        if message.job == "data-scan" and not self.scanned:
            self.query_one("#data-summary", Static).update(f"scanning data/… {message.done}/{message.total} files")

    def on_job_done(self, message: JobDone) -> None:
        if message.job == "data-scan":
            self.show_scan(message.result)
        elif message.job == "sample":
            self.adding_sample = False
            self.action_rescan()
        elif message.job == "data-preview":
            path, text = message.result
            if path == self.highlighted():
                self.query_one(FilePreview).show_text(text)

    def on_job_failed(self, message: JobFailed) -> None:
        if message.job == "data-preview":
            self.query_one(FilePreview).show_failure(message.error)
        elif message.job == "sample":
            self.adding_sample = False
            self.show_empty()
        elif message.job == "data-scan":
            self.query_one("#data-summary", Static).update(Content(f"could not scan data/: {message.error}"))

    def show_scan(self, scan: Scan) -> None:
        self.cache, self.scanned = scan.cache, True
        self.weights, self.weights_error = scan.weights, scan.weights_error
        tree = self.query_one(DataTree)
        known = {f.path for f in scan.files}
        kept = [entry for entry in self.app.selection if any(chosen([entry], known))]
        if kept != self.app.selection:
            gone = ", ".join(sorted(set(self.app.selection) - set(kept)))
            self.notify(f"no longer in data/, so no longer chosen: {gone}", severity="warning", markup=False)
            self.app.selection = kept
        tree.show_files(scan.files, self.app.selection)
        tree.show_weights(self.weights)
        self.set_class(not scan.files, "-empty")
        self.show_empty()
        self.update_summary()
        self.refresh_bindings()
        if scan.files and self.focused is None:
            tree.focus()

    def show_empty(self) -> None:
        text = Content.from_markup(
            "[b]No text files yet[/b] in $dir\n\n"
            "Press [b]s[/b] to add the sample corpus:\nPython's own documentation, about 3 MB, made offline.\n\n"
            "Or put .txt, .md or .jsonl files there\nand press [b]g[/b] to look again.",
            dir=str(self.app.workspace.data_dir),
        )
        if self.adding_sample:
            text = Content("writing the sample corpus to data/sample/…")
        self.query_one("#data-empty", Static).update(text)

    def update_summary(self) -> None:
        files = self.query_one(DataTree).stats
        selection = self.app.selection
        picked = [files[p] for p in chosen(selection, files)]
        usable = [f for f in picked if not f.error]
        parts = [
            "all of data/" if not selection else "chosen",
            counted(len(usable), "file"),
            size(sum(f.bytes for f in usable)),
            f"≈{count(sum(f.est_tokens for f in usable))} tokens",
        ]
        if len(picked) > len(usable):
            parts.append(f"{len(picked) - len(usable)} skipped")
        problems = [f for f in picked if f.error]  # so that a weight on one of them is refused, as training does
        corpus = Corpus(self.app.workspace.data_dir, sorted(usable, key=lambda f: Path(f.path).parts), problems)
        dups = corpus.duplicates
        if dups.copies:
            parts.append(f"{counted(dups.documents, 'duplicate')} ({size(dups.bytes)}) left out")
        self.query_one("#data-summary", Static).update(Content(" · ".join(parts)))
        self.query_one("#data-sources", Static).update(Content(self.sources_line(corpus)))

    def sources_line(self, corpus: Corpus) -> str:
        """Each source's share of training and the epochs of it a toy run sees, under data/mix.json."""
        if self.weights_error:
            return self.weights_error
        if not corpus.files:
            return ""
        try:
            sources, weights, _ = resolve_mixture(corpus, {})
        except SLMError as e:
            return str(e)
        run, val = preset_tokens("toy"), TrainConfig().val_fraction
        shares = " · ".join(f"{s.name} {s.share:.0%} ×{epochs_text(s.epochs(run, val))}" for s in sources)
        how = "by weight" if weights else "by size"
        return f"sources ({how}; × epochs of a toy run): {shares}" if len(sources) > 1 else ""

    # -- the highlighted entry ------------------------------------------------------------------

    def highlighted(self) -> str | None:
        node = self.query_one(DataTree).cursor_node
        return None if node is None or node.is_root else node.data

    @on(Tree.NodeHighlighted, "#data-tree")
    def preview(self) -> None:
        path, tree, preview = self.highlighted(), self.query_one(DataTree), self.query_one(FilePreview)
        self.refresh_bindings()  # `w` needs a highlighted entry
        if path is None:
            return
        if tree.is_folder(path):
            preview.show_folder(path, tree.files_under(path))
            return
        stats = tree.stats[path]
        preview.show_file(stats)
        if not stats.error:
            file = self.app.workspace.data_dir / path
            self.app.bridge.run_job("data-preview", lambda: (path, read_head(file)))

    # -- the selection and the split -----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        empty = self.has_class("-empty") or not self.scanned
        if action == "add_sample":
            return empty and self.scanned and not self.adding_sample
        if action in ("toggle", "edit_fraction"):
            return not empty
        if action == "edit_weight":
            return not empty and self.highlighted() is not None
        if action == "use_all":
            return bool(self.app.selection)
        return True

    def action_toggle(self) -> None:
        path, tree = self.highlighted(), self.query_one(DataTree)
        if path is None:
            return
        self.app.selection = toggle(self.app.selection, path, tree.entries)
        tree.show_selection(self.app.selection)
        self.update_summary()
        self.refresh_bindings()

    def action_use_all(self) -> None:
        self.app.selection = []
        self.query_one(DataTree).show_selection([])
        self.update_summary()
        self.refresh_bindings()

    def action_add_sample(self) -> None:
        self.adding_sample = True
        self.show_empty()
        self.refresh_bindings()
        self.app.add_sample_corpus()

    def action_edit_fraction(self) -> None:
        self.query_one("#data-val", Input).focus()

    def action_edit_weight(self) -> None:
        path = self.highlighted()
        if path is None:
            return
        self.weighing = path
        field = self.query_one("#data-weight", Input)
        self.query_one("#data-weight-label", Label).update(f"weight of {path}")
        field.value = f"{self.weights[path]:g}" if path in self.weights else ""
        self.add_class("-weighing")
        field.focus()

    def action_leave_input(self) -> None:
        self.remove_class("-weighing")
        self.weighing = None
        self.query_one(DataTree).focus()

    @on(Input.Submitted, "#data-weight")
    def weight_submitted(self, event: Input.Submitted) -> None:
        path = self.weighing
        if path is None or not valid_weight(event.value):
            return
        weights = {n: w for n, w in self.weights.items() if n != clean_name(path)}
        if event.value.strip():
            weights[clean_name(path)] = float(event.value)
        try:
            write_mix_file(self.app.workspace.data_dir, weights)
        except (SLMError, OSError) as e:
            self.notify(f"could not save the weight: {e}", severity="error", markup=False)
            return
        self.weights, self.weights_error = weights, ""
        self.query_one(DataTree).show_weights(weights)
        self.update_summary()
        self.action_leave_input()

    @on(Input.Changed, "#data-val")
    def fraction_changed(self, event: Input.Changed) -> None:
        valid = event.validation_result is None or event.validation_result.is_valid
        if valid:
            self.app.val_fraction = float(event.value)
        self.query_one("#data-val-error").display = not valid

    @on(Input.Submitted, "#data-val")
    def fraction_submitted(self) -> None:
        self.action_leave_input()
