"""The studio: modes (one per section), key bindings, the command palette, themes and quitting.

Wiring only: screens live in `tui/screens/`, engine work runs through `tui.bridge.Bridge`.
"""

from __future__ import annotations

from pathlib import Path

from textual import events
from textual.app import App
from textual.binding import Binding
from textual.worker import Worker, WorkerState

from core.workspace import Workspace, config_dir, load_settings, save_settings
from themes import BUILT_IN, DEFAULT_THEME, STYLESHEETS, load_user_themes
from tui.bridge import Bridge, one_line
from tui.commands import CheckpointCommands, Palette, StudioCommands
from tui.screens.chat import ChatScreen
from tui.screens.checkpoints import CheckpointsScreen
from tui.screens.data import DataScreen
from tui.screens.help import HelpScreen
from tui.screens.merge import MergeScreen
from tui.screens.modals import ConfirmScreen, Dialog, PickScreen
from tui.screens.runs import RunsScreen
from tui.screens.tokenizer import TokenizerScreen
from tui.screens.train import TrainScreen
from tui.sections import SECTIONS

EXPORT_FORMATS = [
    ("hf", "Hugging Face folder (transformers, Llama architecture)"),
    ("gguf-f16", "GGUF, f16 (llama.cpp)"),
    ("gguf-q8_0", "GGUF, q8_0: smaller (llama.cpp)"),
    ("gguf-q4_0", "GGUF, q4_0: smallest (llama.cpp), a little less exact"),
]


class StudioApp(App):
    TITLE = "SLM Studio"
    CSS_PATH = STYLESHEETS
    MODES = {
        "data": DataScreen,
        "tokenizer": TokenizerScreen,
        "train": TrainScreen,
        "merge": MergeScreen,
        "chat": ChatScreen,
        "checkpoints": CheckpointsScreen,
        "runs": RunsScreen,
    }
    DEFAULT_MODE = "data"
    BINDINGS = [
        *(
            Binding(key, f"switch_mode('{mode}')", label, id=f"section.{mode}")
            for mode, (key, label) in SECTIONS.items()
        ),
        Binding("f1,question_mark", "help", "Help", id="help"),
        Binding("ctrl+q", "quit", "Quit", id="quit", priority=True),
    ]
    COMMANDS = App.COMMANDS | {StudioCommands, CheckpointCommands}

    def __init__(self, workspace: Workspace | None = None) -> None:
        super().__init__()
        self.workspace = workspace or Workspace.resolve()
        self.bridge = Bridge(self, self.workspace)
        self.settings = load_settings()
        # shared by the sections: what the Data section selected, and the Tokenizer section's result
        self.selection: list[str] = []  # files/folders relative to data/; empty means all of data/
        self.val_fraction: float = 0.1
        self.tokenizer_path: Path | None = None  # None: each run trains its own tokenizer

    def on_mount(self) -> None:
        user_themes, problems = load_user_themes(config_dir() / "themes")
        for theme in [*BUILT_IN, *user_themes]:
            self.register_theme(theme)
        chosen = self.settings.get("theme", DEFAULT_THEME)
        self.theme = chosen if chosen in self.available_themes else DEFAULT_THEME
        self.theme_changed_signal.subscribe(self, lambda theme: self._remember(theme=theme.name))
        for problem in problems:
            self.notify(problem, severity="warning")
        self.sub_title = str(self.workspace.root)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key):
            if not self.screen_stack:  # a section is being built (a key right after its number): deliver it after
                self.call_after_refresh(self.post_message, _again(event))
                return
            top = self.screen_stack[-1]
            if isinstance(top, Dialog) and top.typed_before_shown(event):
                return  # type-ahead meant for the screen below: it does not answer the dialog
        await super().on_event(event)

    def _remember(self, **changes) -> None:
        try:
            self.settings = save_settings(**changes)
        except Exception as e:  # settings are a convenience: never let them break the app
            self.notify(f"could not save settings: {e}", severity="warning")

    # -- actions -------------------------------------------------------------------------------

    def action_command_palette(self) -> None:
        if self.use_command_palette and not Palette.is_open(self):
            self.push_screen(Palette(id="--command-palette"))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    async def open_section(self, mode: str):
        """Switch to a section and return its screen."""
        await self.switch_mode(mode)
        return self.screen

    async def start_training(self) -> None:
        (await self.open_section("train")).action_start()

    async def toggle_pause(self) -> None:
        (await self.open_section("train")).action_pause()

    async def stop_training(self) -> None:
        (await self.open_section("train")).action_stop()

    async def pick_run_to_attach(self) -> None:
        (await self.open_section("train")).action_attach()

    async def watch_runs(self, runs: list[str]) -> None:
        """Open the Runs section with `runs` marked (their curves overlaid as they appear and train)."""
        (await self.open_section("runs")).mark(runs)

    async def attach_to(self, run_dir: Path) -> None:
        (await self.open_section("train")).attach_to(run_dir)

    async def resume_run(self, run: str) -> None:
        (await self.open_section("train")).prepare_resume(run)

    async def fine_tune_from(self, path) -> None:
        (await self.open_section("train")).prepare_fine_tune(str(path))

    async def chat_with(self, path) -> None:
        await self.open_section("chat")
        self.bridge.load_model(path)
        self._remember(last_model=str(path))

    def export_checkpoint(self, path) -> None:
        """Ask for a format, then export the checkpoint to exports/ in a worker; the Checkpoints section says where."""

        def chosen(choice: str | None) -> None:
            if choice is None:
                return
            from core.export.formats import export_checkpoint

            fmt, _, dtype = choice.partition("-")
            source = Path(path)
            name = f"{source.parent.name}-{source.name}" + (f"-{dtype}.gguf" if fmt == "gguf" else "-hf")
            out = self.workspace.root / "exports" / name
            self.notify(f"exporting {source.parent.name}/{source.name} to exports/{name}…")
            self.bridge.run_job("export", lambda: export_checkpoint(source, fmt, out, dtype or "f32"))

        self.push_screen(PickScreen("Export to which format?", EXPORT_FORMATS), chosen)

    def add_sample_corpus(self) -> None:
        from core.data.sample import write_sample_corpus

        self.notify("writing the sample corpus to data/sample/…")
        self.bridge.run_job("sample", lambda: write_sample_corpus(self.workspace.data_dir))

    async def action_quit(self) -> None:
        if not self.bridge.training:
            self.exit()
            return

        def answer(confirmed: bool | None) -> None:
            if confirmed:
                self.notify("stopping the run and saving a checkpoint…")
                self.bridge.stop()
                self.run_worker(self._exit_after_training, thread=True, exit_on_error=False)

        self.push_screen(
            ConfirmScreen(
                "The studio is training (a run, or branches in processes). Stop it, save checkpoints and quit?",
                yes="Stop and quit",
            ),
            answer,
        )

    def _exit_after_training(self) -> None:
        self.bridge.wait_for_training()
        self.call_from_thread(self.exit)

    # -- workers -------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Any worker that fails shows its error; the studio stays usable."""
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            message = one_line(event.worker.error)
            self.notify(message, title=f"{event.worker.name} failed", severity="error", timeout=8, markup=False)
        elif event.state == WorkerState.SUCCESS and event.worker.name == "export":
            self.notify(f"exported to {event.worker.result}", title="export done", markup=False)


def _again(key: events.Key) -> events.Key:
    """The same key press, to deliver again (keeping the time it was typed)."""
    copy = events.Key(key.key, key.character)
    copy.time = key.time
    return copy


def run_studio(workspace: Workspace) -> None:
    """Run the studio; however it ends (a crash included), a run it was training stops and saves `latest`."""
    app = StudioApp(workspace)
    try:
        app.run()
    finally:
        if app.bridge.training:
            print("the studio closed while training: stopping after this step (saving latest)…")
            app.bridge.stop_and_wait()
