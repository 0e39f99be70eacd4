"""Merge: pick checkpoints, see whether they can be merged, set weights, merge, compare on validation."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Checkbox, Footer, Header, Input, Label, Select, SelectionList, Static
from textual.worker import Worker

from core.errors import SLMError
from core.listing import label, list_checkpoints, read_meta
from core.merge.branches import Branch, JobEnded, JobStarted, Per, plan_branches
from core.merge.compare import branch_entries, common_parent, evaluate_checkpoints
from core.merge.pipeline import train_branches
from core.merge.weights import METHODS, check_compatible, load_header, merge_checkpoints, normalised, shares
from core.workspace import Workspace
from tui.cli.merge import SLM
from tui.format import clock
from tui.messages import BranchEvent, JobDone, JobFailed, JobProgress
from tui.screens.branch import BranchDialog, BranchPlan
from tui.widgets.merge.comparison import Compared, ComparisonTable
from tui.widgets.merge.picker import CheckpointPicker

HELP = (
    "Merging works for checkpoints that share a base: branch runs from one checkpoint (Train, or "
    "b with one checkpoint picked, or slm branch BASE), then merge the branches. Models trained from different starts do not average. "
    "The table compares val loss and bits per byte on the selected data (Data, 1)."
)


@dataclass(frozen=True)
class Verdict:
    """What check_compatible said about these picks (`error` set when it refused them)."""

    paths: tuple[str, ...]
    force: bool
    warnings: tuple[str, ...] = ()
    error: str | None = None


def judge(paths: tuple[str, ...], force: bool) -> Verdict:
    """Check the picks from their metadata (no weights are read)."""
    try:
        warnings = check_compatible([load_header(Path(p)) for p in paths], force)
    except SLMError as e:
        return Verdict(paths, force, error=str(e))
    return Verdict(paths, force, tuple(warnings))


def parse_weights(text: str) -> list[float] | None:
    """Comma- or space-separated numbers; blank means equal weights (None)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        return [float(p) for p in parts] or None
    except ValueError:
        raise SLMError(f"weights must be numbers separated by commas, not {text.strip()!r}") from None


def compare(
    workspace: Workspace, paths: list[str], weights: list[float] | None, merged: str | None, **split: Any
) -> list[Compared]:
    """Evaluate the inputs (with their merge weights, if any) and the merge's result on the validation split; for a
    merge of branches also the base they started from, and everyone on each branch's own data."""
    base = common_parent([Path(p) for p in paths]) if merged else None
    entries = branch_entries([Path(p) for p in paths]) if merged else []
    shown = [*([str(base)] if base else []), *paths, *([merged] if merged else [])]
    results = evaluate_checkpoints(workspace, shown, **split)
    per_entry = {e: evaluate_checkpoints(workspace, shown, **{**split, "selection": [e]}) for e in entries}
    shares = [None] * (base is not None) + list(weights or [None] * len(paths)) + [None] * (merged is not None)
    roles = ["base"] * (base is not None) + ["input"] * len(paths) + ["merge"] * (merged is not None)
    return [
        Compared(label(Path(p)), r, w, role, {e: per_entry[e][i].bpb for e in entries})  # type: ignore[arg-type]
        for i, (p, r, w, role) in enumerate(zip(shown, results, shares, roles, strict=True))
    ]


def branch_plans(workspace: Workspace, base: Path, selection: list[str]) -> dict[Per, list[Branch] | str]:
    """The branches `slm branch` would train from `base`, per folder and per file (or why there are none)."""
    plans: dict[Per, list[Branch] | str] = {}
    for per in ("folder", "file"):
        try:
            plans[per] = plan_branches(workspace, base.parent.name, per, selection or None)
        except SLMError as e:
            plans[per] = str(e)
    return plans


class MergeScreen(Screen):
    BINDINGS = [
        Binding("b", "branch", "Branch", id="merge.branch"),
        Binding("m", "merge", "Merge", id="merge.run"),
        Binding("f", "force", "Force", id="merge.force"),
        Binding("e", "compare", "Compare", id="merge.compare"),
        Binding("g", "reload", "Refresh", id="merge.reload"),
        Binding("escape", "leave_form", "Leave form", show=False),
    ]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (36, "-tall")]  # the help text shows only when it fits

    def __init__(self) -> None:
        super().__init__()
        self.verdict: Verdict | None = None
        self.asked: tuple[tuple[str, ...], bool] | None = None  # the picks and force of the latest check
        self.merge_worker: Worker | None = None
        self.branch_base: Path | None = None  # the checkpoint the studio's branches started from
        self.branches_ended: list[str] = []
        self.compare_worker: Worker | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="merge-top"):
            yield CheckpointPicker(id="merge-inputs")
            with Vertical(id="merge-form"):
                with Horizontal(classes="merge-field"):
                    yield Label("method", classes="merge-label")
                    methods = ((m.name, m.name) for m in METHODS.values())
                    yield Select(methods, value="linear", allow_blank=False, compact=True, id="merge-method")
                with Horizontal(classes="merge-field", id="merge-base-field"):
                    yield Label("base", classes="merge-label")
                    yield Select([], prompt="shared ancestor", compact=True, id="merge-base")
                with Horizontal(classes="merge-field"):
                    yield Label("weights", classes="merge-label")
                    yield Input(placeholder="equal", compact=True, id="merge-weights")
                with Horizontal(classes="merge-field"):
                    yield Label("name", classes="merge-label")
                    yield Input(placeholder="merge-DATE-TIME", compact=True, id="merge-name")
                yield Checkbox("force unrelated", compact=True, id="merge-force")
                yield Static("", id="merge-method-about")
                yield Static(HELP, id="merge-help")
        yield Static("", id="merge-verdict")
        yield Static("", id="merge-plan")
        yield ComparisonTable(id="merge-results", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)
        self.query_one(CheckpointPicker).border_title = "checkpoints (val loss) · space picks"
        self.query_one("#merge-form").border_title = "merge"
        self.query_one("#merge-results").border_title = "validation · e compares the picks"
        self.describe_method()
        self.action_reload()

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)

    def on_screen_resume(self) -> None:
        self.action_reload()

    # -- the picks and the form ----------------------------------------------------------------

    @property
    def picks(self) -> tuple[str, ...]:
        return tuple(self.query_one(CheckpointPicker).selected)

    @property
    def force(self) -> bool:
        return self.query_one("#merge-force", Checkbox).value

    @property
    def ready(self) -> bool:
        """The current picks were checked and may be merged."""
        v = self.verdict
        return v is not None and v.error is None and v.paths == self.picks and v.force == self.force

    @on(SelectionList.SelectedChanged)
    @on(Checkbox.Changed, "#merge-force")
    def start_check(self) -> None:
        paths, force = self.picks, self.force
        if (paths, force) == self.asked:
            return  # a reload re-picked the same checkpoints
        self.asked, self.verdict = (paths, force), None
        self.refresh_bindings()
        self.show_plan()
        if len(paths) < 2:
            self.show_verdict("pick two or more checkpoints with space", "muted")
            return
        self.show_verdict("checking…", "muted")
        self.app.bridge.run_job("merge-check", lambda: judge(paths, force))

    @on(Input.Changed, "#merge-weights")
    def weights_changed(self) -> None:
        self.show_plan()

    @on(Select.Changed, "#merge-method")
    def describe_method(self) -> None:
        self.query_one("#merge-method-about", Static).update(METHODS[self.method].description)
        self.query_one("#merge-base-field").display = METHODS[self.method].needs_base

    @on(Input.Submitted)
    def submitted(self) -> None:
        self.action_merge()

    @property
    def method(self) -> str:
        return str(self.query_one("#merge-method", Select).value)

    def weights(self) -> list[float]:
        """The normalised weights of the picks, in the order they were picked (SLMError when invalid)."""
        given = parse_weights(self.query_one("#merge-weights", Input).value)
        return normalised(given or [1.0] * len(self.picks), len(self.picks))

    @property
    def base(self) -> Path | None:
        """The base picked for a method that needs one; None leaves it to the picks' nearest shared ancestor."""
        select = self.query_one("#merge-base", Select)
        return None if select.is_blank() else Path(str(select.value))

    def output_name(self) -> str:
        return self.query_one("#merge-name", Input).value.strip() or f"merge-{time.strftime('%Y%m%d-%H%M%S')}"

    def show_verdict(self, text: str, kind: str) -> None:
        verdict = self.query_one("#merge-verdict", Static)
        verdict.set_classes(kind)
        verdict.update(Content(text))  # engine messages may hold brackets: never parse them as markup

    def show_plan(self) -> None:
        plan = self.query_one("#merge-plan", Static)
        if len(self.picks) < 2:
            plan.update("")
            return
        try:
            weights = self.weights()
        except SLMError as e:
            plan.update(Content(f"! {e}"))
            return
        plan.update(shares(list(self.picks), weights))

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "merge":
            if len(self.picks) < 2:
                return False
            return None if _running(self.merge_worker) or not self.ready else True
        if action == "compare":
            return None if _running(self.compare_worker) else bool(self.picks)
        return True

    def action_reload(self) -> None:
        entries = list_checkpoints(self.app.workspace, unreadable=True)  # an unreadable one shows why
        picker = self.query_one(CheckpointPicker)
        if tuple((str(e.path), e.error) for e in entries) != picker.listed:
            picker.show(entries)
            readable = [str(e.path) for e in entries if not e.error]
            base = self.query_one("#merge-base", Select)
            chosen = base.value
            base.set_options((label(Path(p)), p) for p in readable)
            if chosen in readable:
                base.value = chosen
        if not entries:
            self.show_verdict("no checkpoints yet: train a run in section 3, then branch it with `--from`", "muted")

    def action_force(self) -> None:
        checkbox = self.query_one("#merge-force", Checkbox)
        checkbox.value = not checkbox.value

    def action_leave_form(self) -> None:
        self.query_one(CheckpointPicker).focus()

    def action_merge(self) -> None:
        if not self.ready or _running(self.merge_worker):
            self.notify("these checkpoints cannot be merged yet", severity="warning")
            return
        paths, force, method, base = list(self.picks), self.force, self.method, self.base
        try:
            weights = self.weights()
            out = self.app.workspace.run_dir(self.output_name())
        except SLMError as e:
            self.notify(str(e), severity="error")
            return
        progress = self.app.bridge.progress("merge")
        self.merge_worker = self.app.bridge.run_job(
            "merge",
            lambda: merge_checkpoints(paths, weights, method, out=out, base=base, force=force, on_progress=progress),
        )
        self.show_verdict(f"merging into {out.name}…", "muted")
        self.refresh_bindings()

    def action_branch(self) -> None:
        """Plan branches from the one picked checkpoint (in a worker: it reads the data), then ask how."""
        if len(self.picks) != 1:
            self.notify("pick one checkpoint (space) to branch from", severity="warning")
            return
        if self.app.bridge.training:
            self.notify("a run is training: stop it before starting branches", severity="warning")
            return
        base, ws, selection = Path(self.picks[0]), self.app.workspace, list(self.app.selection)
        self.app.bridge.run_job("branch-plan", lambda: (base, branch_plans(ws, base, selection)))

    def ask_branches(self, base: Path, plans: dict[Per, list[Branch] | str]) -> None:
        def answer(plan: BranchPlan | None) -> None:
            if plan is not None:
                self.start_branches(base, plan)

        self.app.push_screen(BranchDialog(label(base), plans), answer)

    def start_branches(self, base: Path, plan: BranchPlan) -> None:
        """Train the branches in processes (the same as `slm branch`), and show their curves in the Runs section."""
        ws, steps = self.app.workspace, plan.max_steps
        settings = {"max_steps": steps, "lr": plan.lr, "eval_interval": max(10, steps // 10)}  # curves to watch
        try:
            self.app.bridge.start_branches(
                lambda on_event, on_poll: train_branches(
                    ws, base, plan.branches, settings, SLM, on_event=on_event, on_poll=on_poll
                )
            )
        except SLMError as e:
            self.notify(str(e), severity="error")
            return
        self.branch_base, self.branches_ended = base, []
        self.show_verdict(f"training {len(plan.branches)} branches of {label(base)}: follow them in Runs (7)", "muted")
        self.run_worker(self.app.watch_runs([b.name for b in plan.branches]))

    def on_branch_event(self, message: BranchEvent) -> None:
        event = message.event
        if isinstance(event, JobStarted):
            self.show_verdict(f"{event.name} started (process {event.pid}, {event.threads} CPU threads)", "muted")
        elif isinstance(event, JobEnded):
            self.branches_ended.append(event.name)
            ended = f"failed: {event.error}" if event.error else f"finished in {clock(event.seconds)}"
            self.show_verdict(f"{event.name} {ended}", "error" if event.error else "muted")

    def branched(self, finals: list[Path]) -> None:
        """Pick the trained branches and their base, ready to merge."""
        self.action_reload()
        picker = self.query_one(CheckpointPicker)
        picker.deselect_all()
        for path in finals:
            picker.select(str(path))
        base = self.query_one("#merge-base", Select)
        if self.branch_base is not None and str(self.branch_base) in self.query_one(CheckpointPicker).listed_paths:
            base.value = str(self.branch_base)
        self.notify(f"{len(finals)} branches trained and picked: choose a method, m merges them")

    def action_compare(self) -> None:
        """Evaluate the picks on the validation split of the selected data."""
        self.start_compare(list(self.picks))

    def start_compare(self, paths: list[str], weights: list[float] | None = None, merged: str | None = None) -> None:
        app = self.app
        split = dict(
            selection=app.selection, val_fraction=app.val_fraction, on_progress=app.bridge.progress("merge-eval")
        )
        self.compare_worker = app.bridge.run_job(
            "merge-eval", lambda: compare(app.workspace, paths, weights, merged, **split)
        )
        self.query_one(ComparisonTable).border_title = "validation · evaluating…"
        self.refresh_bindings()

    # -- job results ---------------------------------------------------------------------------

    def on_job_done(self, message: JobDone) -> None:
        if message.job == "merge-check":
            self.checked(message.result)
        elif message.job == "branch-plan":
            self.ask_branches(*message.result)
        elif message.job == "branch":
            self.branched(message.result)
        elif message.job == "merge":
            self.merged(message.result)
        elif message.job == "merge-eval":
            table = self.query_one(ComparisonTable)
            table.show(message.result)
            tokens = message.result[0].result.tokens if message.result else 0
            table.border_title = f"validation · {tokens:,} tokens of the selected data's val split"
        self.refresh_bindings()

    def on_job_failed(self, message: JobFailed) -> None:
        if message.job in ("merge-check", "merge", "branch", "branch-plan"):
            self.show_verdict(f"✗ {message.error}", "error")
        elif message.job == "merge-eval":
            self.query_one(ComparisonTable).border_title = Content(f"validation · failed: {message.error}")
        self.refresh_bindings()

    def on_job_progress(self, message: JobProgress) -> None:
        share = f" {message.done}/{message.total}" if message.total else ""
        if message.job == "merge":
            self.show_verdict(f"merging: {message.stage}{share}…", "muted")
        elif message.job == "merge-eval":
            self.query_one(ComparisonTable).border_title = f"validation · evaluating{share}…"

    def checked(self, verdict: Verdict) -> None:
        if verdict.paths != self.picks or verdict.force != self.force:
            return  # the picks changed while this check ran
        self.verdict = verdict
        if verdict.error:
            hint = " · f forces it" if "share no ancestor" in verdict.error else ""
            self.show_verdict(f"✗ {verdict.error}{hint}", "error")
        elif verdict.warnings:
            self.show_verdict("! " + " ".join(verdict.warnings) + " · m merges anyway", "warning")
        else:
            self.show_verdict("✓ compatible: same shape and tokenizer, a shared ancestor · m merges", "ok")

    def merged(self, path: Path) -> None:
        """Show the new checkpoint and compare it with its parents."""
        self.query_one("#merge-name", Input).value = ""
        self.show_verdict(f"✓ merged into {label(path)}: chat with it or fine-tune it from Checkpoints (6)", "ok")
        self.action_reload()
        self.action_leave_form()  # the footer shows the section's keys again
        record = read_meta(path)["merge"]
        self.start_compare(record["parents"], record["weights"], str(path))


def _running(worker: Worker | None) -> bool:
    return worker is not None and worker.is_running
