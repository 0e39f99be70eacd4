"""The prompt line: an Input that recalls earlier entries with up and down."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class PromptInput(Input):
    """Enter sends (Input.Submitted); up and down walk through what was sent before."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous input", show=False),
        Binding("down", "history(1)", "Next input", show=False),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history: list[str] = []
        self._position = 0  # len(history) means "the line being written"
        self._draft = ""

    def remember(self, text: str) -> None:
        """Add a sent line to the history (not twice in a row) and go back to a fresh line."""
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self._position, self._draft = len(self.history), ""

    def action_history(self, step: int) -> None:
        position = self._position + step
        if not 0 <= position <= len(self.history):
            return
        if self._position == len(self.history):
            self._draft = self.value
        self._position = position
        self.value = self.history[position] if position < len(self.history) else self._draft
        self.cursor_position = len(self.value)
