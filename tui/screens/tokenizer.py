"""Tokenizer: train a named byte-level BPE tokenizer on the chosen data for Train to use, and try it on typed text."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Label, ProgressBar, Static

from core.data.corpus import Corpus
from core.errors import Cancelled, SLMError
from core.tokenizer.bpe import SPECIAL_TOKENS, Tokenizer, min_vocab_size
from core.tokenizer.named import measure, read_info, save_named, train_on_corpus
from core.workspace import Workspace, check_name
from tui.format import count, size
from tui.messages import JobDone, JobFailed, JobProgress
from tui.screens.modals import ConfirmScreen, PickScreen
from tui.widgets.tokenizer.token_view import TokenView

TRY_TEXT = "Once upon a time, a small model read 1,234 lines of text."
STAGES = {"scan": "scanning files", "read": "reading text", "merge": "learning merges", "measure": "measuring"}

Report = Callable[[str, int, int], None]


@dataclass
class TokenizerInfo:
    """A tokenizer the Train section can use, and what is known about it."""

    tokenizer: Tokenizer
    path: Path
    name: str
    bytes_per_token: float | None
    data: list[str] | None  # what it was trained on (["."] is all of data/; None when not recorded)
    text_bytes: int = 0  # how much text it was trained on, when trained here
    skipped: list[str] | None = None  # files left out, with the reason


def describe_data(data: list[str] | None) -> str:
    if data is None:
        return "data not recorded"
    if not data or data == ["."]:
        return "all of data/"
    return ", ".join(data[:3]) + (f" and {len(data) - 3} more" if len(data) > 3 else "")


def train_named(
    workspace: Workspace,
    name: str,
    vocab_size: int,
    min_frequency: int,
    selection: list[str],
    val_fraction: float,
    report: Report,
    cancelled: Callable[[], bool],
) -> TokenizerInfo | None:
    """Train on the training split of the selection and save it as a named tokenizer; None when cancelled."""
    corpus = Corpus.scan(workspace.data_dir, selection or None, on_progress=report)
    try:
        tokenizer = train_on_corpus(corpus, vocab_size, min_frequency, val_fraction, 0, report, cancelled)
    except Cancelled:
        return None
    if cancelled():  # asked while the merges were learned (they cannot be interrupted): keep nothing
        return None
    report("measure", 0, 0)
    bytes_per_token = measure(tokenizer, corpus, val_fraction)
    data = selection or ["."]
    path = save_named(workspace, name, tokenizer, {"bytes_per_token": round(bytes_per_token, 4), "data": data})
    skipped = [f"{p.path} ({p.error})" for p in corpus.problems]
    return TokenizerInfo(tokenizer, path, name, bytes_per_token, data, corpus.total_bytes, skipped)


def load_named(path: Path) -> TokenizerInfo:
    info = read_info(path)
    bytes_per_token = info.get("bytes_per_token")
    data = info.get("data")
    return TokenizerInfo(
        Tokenizer.load(path),
        path,
        path.parent.name,
        bytes_per_token if isinstance(bytes_per_token, (int, float)) else None,
        data if isinstance(data, list) else None,
    )


class TokenizerScreen(Screen):
    AUTO_FOCUS = ""  # keys act on the screen until an input is chosen (tab, or i for try-it)
    BINDINGS = [
        Binding("t", "train", "Train", id="tokenizer.train"),
        Binding("x", "cancel", "Cancel", id="tokenizer.cancel"),
        Binding("l", "load", "Load", id="tokenizer.load"),
        Binding("c", "clear", "Unset", id="tokenizer.clear"),
        Binding("i", "try", "Try it", id="tokenizer.try"),
        Binding("escape", "leave_input", "Leave input", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.current: TokenizerInfo | None = None  # the tokenizer shown and tried here
        self.training = False
        self.cancel_event = threading.Event()

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="tok-body"):
            with VerticalScroll(id="tok-form"):
                yield from _field("name", Input("studio", id="tok-name"))
                yield from _field("vocab size", Input("2048", type="integer", id="tok-vocab"))
                yield from _field("min frequency", Input("2", type="integer", id="tok-min-frequency"))
                yield Label("special tokens", classes="tok-heading")
                yield Static(Content("  ".join(SPECIAL_TOKENS)), id="tok-special")
                yield Label("data", classes="tok-heading")
                yield Static(id="tok-source")
            with Vertical(id="tok-main"):
                yield Static(id="tok-using")
                yield ProgressBar(total=None, show_eta=False, id="tok-progress")
                yield Static(id="tok-result")
                yield Label("try it", classes="tok-heading")
                yield Input(TRY_TEXT, placeholder="type to see the tokens", id="tok-try")
                with VerticalScroll(id="tok-tokens"):
                    yield TokenView(id="tok-view")
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)

    def on_screen_resume(self) -> None:
        """The Data section may have changed the selection, and another section the tokenizer in use."""
        app = self.app
        selection = describe_data(app.selection)
        self.query_one("#tok-source", Static).update(
            Content(f"{selection}, training split ({1 - app.val_fraction:.0%})\nchosen in section 1 (Data)")
        )
        if app.tokenizer_path is not None and (self.current is None or self.current.path != app.tokenizer_path):
            self.load(app.tokenizer_path)
        self.show_current()

    # -- what is in use ------------------------------------------------------------------------

    def show_current(self) -> None:
        path = self.app.tokenizer_path
        using = self.query_one("#tok-using", Static)
        if path is None:
            using.update(Content.from_markup("Train: [b]each run trains its own tokenizer[/b] (t trains one here)"))
        else:
            shown = path.relative_to(self.app.workspace.root) if path.is_relative_to(self.app.workspace.root) else path
            using.update(Content.from_markup("Train uses [b]$path[/b]", path=str(shown)))
        if not self.training:
            self.query_one("#tok-result", Static).update(self.result_text())
        self.show_tokens()

    def result_text(self) -> Content:
        info = self.current
        if info is None:
            return Content("no tokenizer yet: t trains one on the chosen data, l loads a saved one")
        lines = [f"[b]$name[/b]: {count(info.tokenizer.vocab_size)} tokens"]
        if info.bytes_per_token is not None:
            lines[0] += f" · {info.bytes_per_token:.2f} bytes per token on the validation split"
        trained = f"{size(info.text_bytes)} of " if info.text_bytes else ""
        lines.append(f"trained on {trained}$data")
        if info.skipped:
            lines.append(f"[$error]skipped {len(info.skipped)}: $skipped[/]")
        return Content.from_markup(
            "\n".join(lines), name=info.name, data=describe_data(info.data), skipped=", ".join(info.skipped or [])
        )

    def show_tokens(self) -> None:
        text = self.query_one("#tok-try", Input).value
        if self.current is None:
            self.query_one(TokenView).show(None, text, "train (t) or load (l) a tokenizer to see how it splits text")
        else:
            self.query_one(TokenView).show(self.current.tokenizer, text, "type something to see its tokens")

    @on(Input.Changed, "#tok-try")
    def try_changed(self) -> None:
        self.show_tokens()

    # -- training ------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("train", "load"):
            return None if self.training else True
        if action == "cancel":
            return self.training
        if action == "clear":
            return self.app.tokenizer_path is not None
        return True

    def read_form(self) -> tuple[str, int, int]:
        """(name, vocab size, min frequency) from the form; raises SLMError naming a bad field."""
        name = check_name(self.query_one("#tok-name", Input).value.strip(), "tokenizer")
        vocab = _number(self.query_one("#tok-vocab", Input).value, "vocab size", min_vocab_size())
        min_frequency = _number(self.query_one("#tok-min-frequency", Input).value, "min frequency", 1)
        return name, vocab, min_frequency

    @on(Input.Submitted, "#tok-form Input")
    def form_submitted(self) -> None:
        self.action_train()

    def action_train(self) -> None:
        if self.training:
            return
        try:
            name, vocab, min_frequency = self.read_form()
        except SLMError as e:
            self.notify(str(e), severity="error", markup=False)
            return
        if not (self.app.workspace.tokenizers_dir / name / "tokenizer.json").exists():
            self.start(name, vocab, min_frequency)
            return

        def answer(replace: bool | None) -> None:
            if replace:
                self.start(name, vocab, min_frequency)

        self.app.push_screen(ConfirmScreen(f"A tokenizer named {name!r} exists. Replace it?", yes="Replace"), answer)

    def start(self, name: str, vocab: int, min_frequency: int) -> None:
        app = self.app
        workspace, selection, val_fraction = app.workspace, list(app.selection), app.val_fraction
        self.cancel_event = threading.Event()
        cancelled, report = self.cancel_event.is_set, app.bridge.progress("tokenizer")
        app.bridge.run_job(
            "tokenizer",
            lambda: train_named(workspace, name, vocab, min_frequency, selection, val_fraction, report, cancelled),
        )
        self.set_training(True)
        self.show_stage("scan", 0, 0)

    def action_cancel(self) -> None:
        self.cancel_event.set()
        self.query_one("#tok-result", Static).update("cancelling… (learning merges cannot be interrupted)")

    def set_training(self, training: bool) -> None:
        self.training = training
        self.set_class(training, "-training")
        self.refresh_bindings()

    def show_stage(self, stage: str, done: int, total: int) -> None:
        self.query_one(ProgressBar).update(total=total or None, progress=done)
        share = f" {100 * done / total:.0f}%" if total else ""
        self.query_one("#tok-result", Static).update(f"training: {STAGES.get(stage, stage)}{share}…")

    def on_job_progress(self, message: JobProgress) -> None:
        if message.job == "tokenizer" and self.training:
            self.show_stage(message.stage, message.done, message.total)

    def on_job_done(self, message: JobDone) -> None:
        if message.job not in ("tokenizer", "tokenizer-load"):
            return
        if message.job == "tokenizer":
            self.set_training(False)
        info: TokenizerInfo | None = message.result
        if info is None:
            self.query_one("#tok-result", Static).update("training cancelled; nothing was saved")
            return
        self.current = info
        self.app.tokenizer_path = info.path
        verb = "saved" if message.job == "tokenizer" else "loaded"
        self.notify(f"{verb} tokenizer {info.name}: Train will use it")
        self.refresh_bindings()
        self.show_current()

    def on_job_failed(self, message: JobFailed) -> None:
        if message.job == "tokenizer":
            self.set_training(False)
        if message.job in ("tokenizer", "tokenizer-load"):
            self.query_one("#tok-result", Static).update(Content(f"⚠ {message.error}"))

    # -- saved tokenizers ----------------------------------------------------------------------

    def action_load(self) -> None:
        paths = sorted(self.app.workspace.tokenizers_dir.glob("*/tokenizer.json"))
        if not paths:
            self.notify("no saved tokenizers yet: t trains one", severity="warning")
            return
        items = [(str(p), _choice(p)) for p in paths]
        self.app.push_screen(PickScreen("Train with which tokenizer?", items), self.load)

    def load(self, path: str | Path | None) -> None:
        if path:
            self.app.bridge.run_job("tokenizer-load", lambda: load_named(Path(path)))

    def action_clear(self) -> None:
        self.app.tokenizer_path = None
        self.notify("each training run will train its own tokenizer")
        self.refresh_bindings()
        self.show_current()

    def action_try(self) -> None:
        self.query_one("#tok-try", Input).focus()

    def action_leave_input(self) -> None:
        self.set_focus(None)


def _field(label: str, field: Input) -> ComposeResult:
    with Horizontal(classes="tok-field"):
        yield Label(label, classes="tok-label")
        yield field


def _number(text: str, what: str, minimum: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise SLMError(f"{what} must be a whole number, not {text!r}") from None
    if value < minimum:
        raise SLMError(f"{what} must be at least {minimum}")
    return value


def _choice(path: Path) -> str:
    """A saved tokenizer as a line of the pick list: its name, size and data."""
    info = read_info(path)
    details = [describe_data(info.get("data") if isinstance(info.get("data"), list) else None)]
    if isinstance(info.get("bytes_per_token"), (int, float)):
        details.insert(0, f"{info['bytes_per_token']:.2f} bytes/token")
    if "vocab_size" in info:
        details.insert(0, f"{info['vocab_size']} tokens")
    return escape(f"{path.parent.name}  ({' · '.join(details)})")
