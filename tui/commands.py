"""The command palette: providers of sections, actions and themes, one entry per checkpoint action, and the
palette itself, closed once however many keys a burst sends it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

from textual import work
from textual.command import CommandPalette, DiscoveryHit, Hit, Hits, Provider
from textual.css.query import NoMatches

from core.listing import list_checkpoints
from tui.screens.modals import AnswersOnce
from tui.sections import SECTIONS

Entry = tuple[str, Callable[[], object], str]


class Palette(AnswersOnce, CommandPalette):
    """Textual's command palette, dismissed once (a second Enter or Escape of a burst does not pop the screen
    below); neither paging its list while results arrive nor closing it while a search runs crashes."""

    @work(exclusive=True, group=CommandPalette._GATHER_COMMANDS_GROUP)
    async def _gather_commands(self, search_value: str) -> None:
        try:
            await CommandPalette._gather_commands.__wrapped__(self, search_value)
        except (NoMatches, KeyError):  # textual 8: a search still running as a burst of keys closes the palette
            if self.is_attached and self.app.screen is self:
                raise

    def _action_command_list(self, action: str) -> None:
        try:
            super()._action_command_list(action)
        except KeyError:  # textual 8.2: paging a list whose new options are not laid out yet; the next key works
            if action not in ("page_up", "page_down"):
                raise


class _ListProvider(Provider):
    """A provider over a fixed list of (title, callback, help) built by `entries()`."""

    async def entries(self) -> list[Entry]:
        raise NotImplementedError

    async def discover(self) -> Hits:
        for title, callback, help_text in await self.entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, callback, help_text in await self.entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)


class StudioCommands(_ListProvider):
    """Every section, the main actions, and every theme."""

    async def entries(self) -> list[Entry]:
        app = self.app
        items: list[Entry] = [
            (f"Go to {label}", partial(app.switch_mode, mode), f"section {key}")
            for mode, (key, label) in SECTIONS.items()
        ]
        items += [
            ("Start training", app.start_training, "with the settings of the Train section"),
            ("Pause or resume training", app.toggle_pause, "the run keeps its place"),
            ("Stop training", app.stop_training, "saves the latest checkpoint first"),
            ("Attach to a run", app.pick_run_to_attach, "follow a run started by `slm train` elsewhere"),
            ("Add the sample corpus", app.add_sample_corpus, "Python's own documentation, written to data/sample/"),
            ("Help", app.action_help, "keys and slash commands"),
        ]
        items += [
            (f"Theme: {name}", partial(setattr, app, "theme", name), "switch the look (remembered)")
            for name in sorted(app.available_themes)
        ]
        return items


class CheckpointCommands(_ListProvider):
    """Chat with, resume, fine-tune from or export every checkpoint in the workspace."""

    async def entries(self) -> list[Entry]:
        app = self.app
        checkpoints = await asyncio.to_thread(list_checkpoints, app.workspace)
        items: list[Entry] = []
        for entry in checkpoints:
            name = f"{entry.run}/{entry.kind}"
            detail = f"step {entry.step}" + (f", val {entry.val_loss:.3f}" if entry.val_loss is not None else "")
            items.append((f"Chat with {name}", partial(app.chat_with, entry.path), detail))
            items.append((f"Fine-tune from {name}", partial(app.fine_tune_from, entry.path), detail))
            items.append((f"Export {name}", partial(app.export_checkpoint, entry.path), detail))
            if entry.kind == "latest":
                items.append((f"Resume {entry.run}", partial(app.resume_run, entry.run), detail))
        return items
