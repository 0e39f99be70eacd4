"""The help screen: every key of every section and every slash command, built from the bindings."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Markdown

from core.chat.session import SLASH_COMMANDS
from tui.screens.modals import Dialog
from tui.sections import SECTIONS


def _keys(binding: Binding) -> str:
    return " / ".join(f"`{k.strip()}`" for k in binding.key.split(","))


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a bare `|` (as in `/mode chat|completion`) would split the cell."""
    return text.replace("|", "\\|")


def help_markdown(app) -> str:
    lines = ["# SLM Studio: keys", "", "| key | does |", "| --- | --- |"]
    for binding in app.BINDINGS:
        lines.append(f"| {_keys(binding)} | {binding.description} |")
    lines.append("| `ctrl+p` | command palette: sections, checkpoints, themes, actions |")
    for mode, (key, label) in SECTIONS.items():
        screen_bindings = [b for b in app.MODES[mode].BINDINGS if isinstance(b, Binding) and b.description]
        if screen_bindings:
            lines += ["", f"## {key} · {label}", "", "| key | does |", "| --- | --- |"]
            lines += [f"| {_keys(b)} | {b.description} |" for b in screen_bindings]
    lines += ["", "## Chat slash commands", "", "| command | does |", "| --- | --- |"]
    lines += [f"| `{_cell(usage)}` | {_cell(text)} |" for usage, text in SLASH_COMMANDS]
    lines += [
        "",
        "Ratings (`+`, `-`, `/rate`, `/pick`) are kept in `checkpoints/feedback.sqlite`: `slm feedback` lists them,",
        "`slm dpo --from CKPT` tunes a model on them. `slm sft` makes a chat model, which the Chat section talks to",
        "in chat mode by itself.",
    ]
    lines += ["", "Press `escape` to close this screen."]
    return "\n".join(lines)


class HelpScreen(Dialog[None]):
    BINDINGS = [Binding("escape,q,f1,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog help"):
            yield Markdown(help_markdown(self.app))
