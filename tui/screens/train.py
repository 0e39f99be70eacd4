"""Train: pick a preset, edit the model and training fields, start/pause/stop, watch the run live."""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import get_args

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, ProgressBar, RichLog, Select, Static

from core.config import PRESETS, ModelConfig, TrainConfig, count_params, estimate_memory, field_types
from core.errors import SLMError
from core.train.monitor import RunHistory
from core.workspace import default_run_name
from tui.format import PreparationLine, clock, count
from tui.messages import JobDone, JobFailed, JobProgress, TrainingFinished, TrainingUpdated
from tui.screens.modals import PickScreen
from tui.widgets.train.loss_plot import LossPlot

# (field, label, kind) for the form; kind "model" or "train" says which config the field belongs to
FIELDS: list[tuple[str, str, str]] = [
    ("n_layer", "layers", "model"),
    ("n_head", "heads", "model"),
    ("n_kv_head", "kv heads", "model"),
    ("n_embd", "width", "model"),
    ("context", "context", "model"),
    ("vocab_size", "vocab", "model"),
    ("batch_size", "batch", "train"),
    ("grad_accum", "accum", "train"),
    ("lr", "lr", "train"),
    ("max_steps", "steps", "train"),
    ("max_minutes", "minutes", "train"),
    ("eval_interval", "eval every", "train"),
]
# While a run streams steps, the plot is redrawn every PLOT_INTERVAL seconds at most, and less often when
# a redraw is slow (a big terminal), to keep its share of a core near PLOT_BUDGET: the UI thread's CPU
# time is taken from training's, on a small machine.
PLOT_INTERVAL = 2.0
PLOT_BUDGET = 0.01
AUTO = "auto"  # the planner's preset: the form shows its plan for the minutes field
PLAN_DELAY = 0.5  # seconds of quiet in the minutes field before the plan is made again
CONFIG_FIELDS = {"model": {f.name: f for f in fields(ModelConfig)}, "train": {f.name: f for f in fields(TrainConfig)}}
DECIMALS = {
    name
    for cls in (ModelConfig, TrainConfig)
    for name, hint in field_types(cls).items()
    if float in (hint, *get_args(hint))
}


class TrainScreen(Screen):
    BINDINGS = [
        Binding("s", "start", "Start", id="train.start"),
        Binding("p", "pause", "Pause/resume", id="train.pause"),
        Binding("x", "stop", "Stop", id="train.stop"),
        Binding("l", "log_scale", "Log scale", id="train.log_scale"),
        Binding("b", "bits", "Val bits/byte", id="train.bits"),
        Binding("a", "attach", "Attach", id="train.attach"),
        Binding("escape", "leave_form", "Leave form", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self._version = -1
        self._plotted = (0.0, 0, "")  # when the plot was last redrawn, with how many evals, in what state
        self._log_lines = 0
        self.preparation = PreparationLine()
        self.init_from: str | None = None
        self.resume_name: str | None = None
        self.plan = None  # the planner's Plan for the minutes in the form (preset auto)
        self._plan_timer = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="train-body"):
            with VerticalScroll(id="train-form"):
                yield Label("preset")
                presets = [(f"{AUTO}: plan for the minutes", AUTO), *((p, p) for p in PRESETS)]
                yield Select(presets, value="toy", allow_blank=False, compact=True, id="preset")
                yield Static("", id="size")  # size and plan first: what a glance at 80x24 should see
                yield Label("run name")
                yield Input(placeholder="preset-date-time", compact=True, id="name")
                with Vertical(id="fields"):
                    for name, label, kind in FIELDS:
                        tip = CONFIG_FIELDS[kind][name].metadata.get("help")  # the help of the flag --NAME
                        with Horizontal(classes="field"):
                            yield Label(label, classes="field-label")
                            yield Input(compact=True, id=f"f-{name}", classes="field-input", tooltip=tip)
                yield Label("optimizer")
                yield Select(
                    (("adamw", "adamw"), ("muon", "muon")),
                    value="adamw",
                    allow_blank=False,
                    compact=True,
                    id="optimizer",
                )
            with Vertical(id="monitor"):
                yield Static("no run yet: press s to start one with these settings, a to attach", id="status")
                yield ProgressBar(total=100, show_eta=False, id="progress")
                yield LossPlot(id="plot")
                with Horizontal(id="train-bottom"):
                    yield Static("", id="sample")
                    yield RichLog(id="log", max_lines=500, wrap=True, markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)
        self.apply_preset("toy")
        self.refresh_monitor()

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)

    # -- the form ------------------------------------------------------------------------------

    @property
    def preset(self) -> str:
        return str(self.query_one("#preset", Select).value)

    def apply_preset(self, name: str) -> None:
        if name == AUTO:
            minutes = self.query_one("#f-max_minutes", Input)
            minutes.value = minutes.value or "3"
            self.request_plan()
            return
        chosen = PRESETS[name]
        self.fill_form(ModelConfig(**chosen.model), TrainConfig(**chosen.train))

    def fill_form(self, model: ModelConfig, train: TrainConfig, keep: tuple[str, ...] = ()) -> None:
        for field_name, _, kind in FIELDS:
            value = getattr(model if kind == "model" else train, field_name)
            if field_name not in keep:
                self.query_one(f"#f-{field_name}", Input).value = "" if value is None else str(value)
        self.update_size()

    @on(Select.Changed, "#preset")
    def preset_changed(self, event: Select.Changed) -> None:
        self.apply_preset(str(event.value))

    @on(Input.Changed, ".field-input")
    def field_changed(self, event: Input.Changed) -> None:
        if self.preset == AUTO and event.input.id == "f-max_minutes":
            self.request_plan()
        self.update_size()

    # -- the plan (preset auto) ----------------------------------------------------------------

    def request_plan(self) -> None:
        """Plan again once the minutes field has been quiet for PLAN_DELAY (no start until then)."""
        self.plan = None
        if self._plan_timer is not None:
            self._plan_timer.stop()
        self._plan_timer = self.set_timer(PLAN_DELAY, self.start_plan)

    def start_plan(self) -> None:
        size = self.query_one("#size", Static)
        text = self.query_one("#f-max_minutes", Input).value.strip()
        try:
            minutes = float(text)
        except ValueError:
            size.update(f"[b]![/b] minutes must be a number to plan for, not {text!r}")
            return
        if self.app.bridge.training:
            size.update("the plan waits for the run to end: its probe would slow the run and measure wrong")
            return
        app = self.app
        settings = {"max_minutes": minutes, "data": list(getattr(app, "selection", []) or [])}
        settings["val_fraction"] = getattr(app, "val_fraction", 0.1)
        size.update(f"planning {minutes:g} minutes (the first plan on a machine measures it: a few seconds)…")
        self.make_plan(settings)

    def make_plan(self, settings: dict) -> None:
        from core.plan.planner import plan_for

        self.app.bridge.run_job("plan", lambda: plan_for(self.app.workspace, settings), shown=True)  # in #size

    def on_job_done(self, message: JobDone) -> None:
        if message.job == "plan":
            self.show_plan(message.result)

    def on_job_failed(self, message: JobFailed) -> None:
        if message.job == "plan":
            self.query_one("#size", Static).update(Content(f"⚠ {message.error}"))

    def show_plan(self, plan) -> None:
        if self.preset != AUTO:
            return
        self.plan = plan
        self.fill_form(plan.model, TrainConfig(**plan.train), keep=("max_minutes",))

    def plan_summary(self) -> str:
        p = self.plan
        done = time.strftime("%H:%M", time.localtime(time.time() + p.train["max_minutes"] * 60))
        return (
            f"plan: depth {p.model.n_layer}, {count(p.tokens)} tokens ({p.epochs:.1f} epochs), "
            f"{count(p.tokens_per_s)} tok/s measured, done ≈ {done}"
        )

    def read_form(self) -> tuple[ModelConfig, TrainConfig, str]:
        """The configs the form describes; raises SLMError naming a bad field."""
        if self.preset == AUTO:
            if self.plan is None:
                raise SLMError("the plan is not ready yet: wait for it, or pick a preset")
            model, train, prefix = asdict(self.plan.model), dict(self.plan.train), AUTO
            del model["mlp_hidden"]  # the default rule, the plan's too: a width typed in gets its own
        else:
            chosen = PRESETS[self.preset]
            model, train, prefix = dict(chosen.model), dict(chosen.train), chosen.name
        for name, label, kind in FIELDS:
            text = self.query_one(f"#f-{name}", Input).value.strip()
            target = model if kind == "model" else train
            config_field = CONFIG_FIELDS[kind][name]
            if not text:
                if config_field.default is None:
                    target[name] = None
                continue
            try:
                target[name] = float(text) if name in DECIMALS else int(text)
            except ValueError:
                raise SLMError(f"{label} must be a number, not {text!r}") from None
        train["optimizer"] = str(self.query_one("#optimizer", Select).value)
        app = self.app
        train["data"] = list(getattr(app, "selection", []) or [])
        train["val_fraction"] = getattr(app, "val_fraction", train.get("val_fraction", 0.1))
        if getattr(app, "tokenizer_path", None):
            train["tokenizer"] = str(app.tokenizer_path)
        if self.init_from:
            train["init_from"] = self.init_from
        name = self.query_one("#name", Input).value.strip()
        if not name:
            name = default_run_name("finetune" if self.init_from else prefix)
        return ModelConfig(**model), TrainConfig(**train), name

    def update_size(self) -> None:
        size = self.query_one("#size", Static)
        try:
            model, train, _ = self.read_form()
        except SLMError as e:
            size.update(f"[b]![/b] {e}")
            return
        memory = estimate_memory(model, train).total
        source = f"\nfrom {self.init_from}" if self.init_from else ""
        plan = f"\n{self.plan_summary()}" if self.preset == AUTO and self.plan else ""
        size.update(f"{count_params(model) / 1e6:.2f}M parameters\n≈ {memory / 2**20:,.0f} MB to train{source}{plan}")

    def action_leave_form(self) -> None:
        """Escape leaves the form, so single-letter keys act on the run again."""
        self.set_focus(None)

    # -- actions -------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        bridge = self.app.bridge
        if action == "start":
            return not bridge.training
        if action in ("pause", "stop"):
            return bridge.training
        return True

    def action_start(self) -> None:
        from core.train.objectives import resume_run
        from core.train.trainer import Trainer

        bridge, workspace = self.app.bridge, self.app.workspace
        try:
            if self.resume_name:
                run = self.resume_name
                bridge.start_training(lambda on_event, control: resume_run(workspace, run, {}, on_event, control))
                self.notify(f"resuming {run}")
            else:
                model, train, name = self.read_form()
                bridge.start_training(
                    lambda on_event, control: Trainer(workspace, name, model, train, on_event, control)
                )
                self.notify(f"starting {name}")
        except SLMError as e:
            self.notify(str(e), severity="error")
            return
        self.resume_name = None
        self.refresh_bindings()
        self.refresh_monitor()

    def action_pause(self) -> None:
        bridge = self.app.bridge
        if bridge.control is None:
            return
        if bridge.control.paused:
            bridge.resume()
        else:
            bridge.pause()

    def action_stop(self) -> None:
        self.app.bridge.stop()
        self.notify("stopping after this step; saving the latest checkpoint")

    def action_log_scale(self) -> None:
        plot = self.query_one(LossPlot)
        plot.log_scale = not plot.log_scale
        plot.replot()

    def action_bits(self) -> None:
        plot = self.query_one(LossPlot)
        plot.show_bpb = not plot.show_bpb
        plot.replot()

    def action_attach(self) -> None:
        """Follow a run started elsewhere: the one training now, a pick of those training, else of every run."""
        from core.listing import run_dirs
        from core.train.live import liveness

        runs = [p for p in run_dirs(self.app.workspace) if (p / "metrics.jsonl").exists()]
        live = [p for p in runs if liveness(p) == "live"]
        if len(live) == 1:
            self.attach_to(live[0])
            return
        if not runs:
            self.notify("no runs with metrics in this workspace yet", severity="warning")
            return
        choices = [(str(p), f"{p.name} (training now)") for p in live] or [(str(p), p.name) for p in runs]
        question = "Attach to which run training now?" if live else "No run is training now. Follow which one?"
        self.app.push_screen(PickScreen(question, choices), lambda run_dir: run_dir and self.attach_to(Path(run_dir)))

    def attach_to(self, run_dir: Path) -> None:
        try:
            self.app.bridge.attach(Path(run_dir))
        except SLMError as e:
            self.notify(str(e), severity="error")
            return
        self.notify(f"following {Path(run_dir).name}")

    def prepare_resume(self, run: str) -> None:
        self.resume_name, self.init_from = run, None
        self.query_one("#status", Static).update(f"ready to resume {run}: press s")

    def prepare_fine_tune(self, checkpoint: str) -> None:
        self.init_from, self.resume_name = checkpoint, None
        self.update_size()
        self.query_one("#status", Static).update(f"ready to fine-tune from {checkpoint}: press s")

    # -- the monitor ---------------------------------------------------------------------------

    def on_training_updated(self, message: TrainingUpdated) -> None:
        if self.is_current:  # a hidden monitor costs nothing; it catches up when shown
            self.refresh_monitor()

    def on_screen_resume(self) -> None:
        self.refresh_monitor()

    def on_training_finished(self, message: TrainingFinished) -> None:
        self.refresh_bindings()
        self.refresh_monitor()
        if message.error:
            self.notify(message.error, title="training stopped", severity="error", timeout=8)
        elif message.end is not None:
            self.notify(f"run {message.end.reason} at step {message.end.step}")

    def on_job_progress(self, message: JobProgress) -> None:
        if message.job == "train":
            line = self.preparation(message.stage, message.done, message.total)
            self.query_one("#status", Static).update(f"preparing: {line}")

    def refresh_monitor(self) -> None:
        history = self.app.bridge.history
        if history.version == self._version:
            return
        snapshot = history.snapshot()
        self._version = snapshot.version
        self.update_plot(snapshot)
        # both boxes have fixed sizes: repaint them without laying the screen out again (a big cost per update)
        self.query_one("#status", Static).update(self.status_line(snapshot), layout=False)
        step = snapshot.last_step
        percent = int(100 * step.progress) if step else 0
        bar = self.query_one(ProgressBar)
        if bar.progress != percent:
            bar.update(progress=percent)
        if snapshot.sample:
            sample = Content.from_markup(
                "[b]sample at step $step[/b]\n$text", step=snapshot.sample.step, text=snapshot.sample.text
            )
            self.query_one("#sample", Static).update(sample, layout=False)
        log = self.query_one(RichLog)
        if len(snapshot.log) < self._log_lines:
            log.clear()
            self._log_lines = 0
        for line in snapshot.log[self._log_lines :]:
            log.write(line)
        self._log_lines = len(snapshot.log)

    def update_plot(self, snapshot: RunHistory, force: bool = False) -> None:
        """Redraw the plot now and then while steps stream in (see PLOT_BUDGET), at once for evals and ends."""
        plot = self.query_one(LossPlot)
        when, evals, state = self._plotted
        changed = len(snapshot.val_steps) != evals or snapshot.state != state
        interval = max(PLOT_INTERVAL, plot.build_seconds / PLOT_BUDGET)
        if force or changed or time.monotonic() - when >= interval:
            self._plotted = (time.monotonic(), len(snapshot.val_steps), snapshot.state)
            plot.show(snapshot)

    def status_line(self, h: RunHistory) -> str:
        if h.state == "idle" and not h.steps:
            return "no run yet: press s to start one with these settings, a to attach"
        if h.state == "preparing":
            return "preparing the data and the model…"
        ended = h.end.reason if h.state == "ended" and h.end else None
        parts = [f"[b]{h.run}[/b] {ended or h.state}"]
        if h.last_step:
            s = h.last_step
            parts.append(f"step {s.step}/{h.max_steps}")
            parts.append(f"loss {s.loss:.3f}")
            parts.append(f"lr {s.lr:.1e}")
            parts.append(f"{count(s.tokens_per_s)} tok/s")
            parts.append(clock(s.elapsed_s) if ended else f"{clock(s.elapsed_s)} · ETA {clock(s.eta_s)}")
        if h.last_eval:
            parts.append(f"val {h.last_eval.val_loss:.3f} ({h.last_eval.val_bpb:.3f} bpb)")
        if h.best_val_loss is not None:
            parts.append(f"best {h.best_val_loss:.3f}")
        return " · ".join(parts)
