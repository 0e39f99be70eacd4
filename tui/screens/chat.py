"""Placeholder: replaced by the full chat screen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

SLASH_COMMANDS: list[tuple[str, str]] = [
    ("/help", "list the slash commands"),
]


class ChatScreen(Screen):
    BINDINGS = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("chat")
        yield Footer()
