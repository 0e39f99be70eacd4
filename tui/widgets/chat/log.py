"""The conversation pane: user messages, streamed replies and notes, anchored to the bottom."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream


class Reply(Vertical):
    """A model reply: Markdown streamed piece by piece, then re-rendered once whole, and its stats."""

    def __init__(self) -> None:
        super().__init__(classes="reply")
        self.parts: list[str] = []
        self._stream: MarkdownStream | None = None

    def compose(self) -> ComposeResult:
        yield Markdown(classes="reply-text")
        yield Static("generating…", classes="reply-stats")

    @property
    def text(self) -> str:
        return "".join(self.parts)

    async def append(self, text: str) -> None:
        self.parts.append(text)
        if self._stream is None:
            self._stream = Markdown.get_stream(self.query_one(Markdown))
        await self._stream.write(text)

    async def show(self, text: str) -> None:
        """Show `text` in place of what was generated (a reply the user preferred); the stats line stays."""
        self.parts = [text]
        await self.query_one(Markdown).update(text)

    async def finish(self, stats: str) -> None:
        """Stop streaming and render the full text once (streamed fences can go stale: textual #6518)."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        await self.query_one(Markdown).update(self.text)
        self.query_one(".reply-stats", Static).update(stats)


class ChatLog(VerticalScroll):
    """The scrolling conversation; it follows new text unless the user scrolls up."""

    def on_mount(self) -> None:
        self.anchor()

    def add_user(self, text: str) -> Static:
        message = Static(text, markup=False, classes="user")
        self.mount(message)
        self.anchor()
        return message

    def add_reply(self) -> Reply:
        reply = Reply()
        self.mount(reply)
        return reply

    def add_note(self, text: str, error: bool = False) -> Static | Markdown:
        """A line from the studio itself, not part of the conversation: Markdown, or plain text for an error
        (whose message may quote paths and names that Markdown would mangle)."""
        note = Static(text, markup=False, classes="note error") if error else Markdown(text, classes="note")
        self.mount(note)
        return note

    async def clear(self) -> None:
        await self.remove_children()
