"""Modal dialogs: typed ModalScreens closed with dismiss(value), safe against bursts of keys.

A `Dialog` answers once (a second Enter or Escape of a burst is ignored, instead of dismissing the screen
below it), and the app drops the keys typed before it was on screen (`typed_before_shown`): type-ahead
meant for the screen below never answers a question the user has not seen.
"""

from __future__ import annotations

import math
import time
from typing import TypeVar

from textual import events
from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList
from textual.widgets.option_list import Option

T = TypeVar("T")


class AnswersOnce:
    """A screen mixin: the first `dismiss` closes it, later ones (the rest of a burst of keys) do nothing."""

    answered = False

    def dismiss(self, result: object = None) -> AwaitComplete:
        if self.answered:
            return AwaitComplete()
        self.answered = True
        return super().dismiss(result)


class Dialog(AnswersOnce, ModalScreen[T]):
    """A modal screen that answers once, and only to keys pressed after it was shown."""

    def __init__(self) -> None:
        super().__init__()
        self.shown_at = math.inf  # when it was first painted (Textual's event clock: time.monotonic)

    def on_mount(self) -> None:
        self.call_after_refresh(self._painted)

    def _painted(self) -> None:
        self.shown_at = time.monotonic()

    def typed_before_shown(self, event: events.Event) -> bool:
        """Whether a key was typed before this dialog could be seen (the app drops such keys)."""
        return isinstance(event, events.Key) and event.time < self.shown_at


class ConfirmScreen(Dialog[bool]):
    """Ask a yes/no question; dismisses with True for yes."""

    BINDINGS = [Binding("escape", "dismiss(False)", "Cancel"), Binding("y", "dismiss(True)", "Yes", show=False)]

    def __init__(self, question: str, yes: str = "Yes", no: str = "Cancel") -> None:
        super().__init__()
        self.question, self.yes, self.no = question, yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.question, classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.yes, variant="error", id="yes")
                yield Button(self.no, id="no")

    def on_mount(self) -> None:
        super().on_mount()
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class PickScreen(Dialog[str | None]):
    """Pick one item from a list; dismisses with its id, or None on Escape."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, title: str, items: list[tuple[str, str]]) -> None:
        super().__init__()
        self.title_text, self.items = title, items

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-question")
            yield OptionList(*(Option(label, id=item_id) for item_id, label in self.items), id="pick")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
