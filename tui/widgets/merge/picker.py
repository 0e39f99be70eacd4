"""The checkpoints a merge combines, picked with space, in the order they were picked."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import SelectionList
from textual.widgets.selection_list import Selection

from core.listing import CheckpointEntry


class CheckpointPicker(SelectionList[str]):
    """One row per checkpoint (name and val loss), valued by its folder; `selected` keeps the order of picking.
    An unreadable checkpoint shows why, and cannot be picked."""

    listed: tuple[tuple[str, str | None], ...] = ()  # the rows shown: (folder, error)

    @property
    def listed_paths(self) -> set[str]:
        return {path for path, error in self.listed if error is None}

    def show(self, entries: list[CheckpointEntry]) -> None:
        """Replace the rows, keeping the picks (in their order) that still exist and can be read."""
        picked, present = self.selected, {str(e.path) for e in entries if not e.error}
        self.clear_options()
        width = max((len(f"{e.run}/{e.kind}") for e in entries), default=0)
        self.add_options(Selection(_prompt(e, width), str(e.path), disabled=bool(e.error)) for e in entries)
        self.listed = tuple((str(e.path), e.error) for e in entries)
        for value in picked:
            if value in present:
                self.select(value)


def _prompt(entry: CheckpointEntry, width: int) -> Text:
    text = Text(f"{entry.run}/{entry.kind}".ljust(width))
    if entry.error:
        text.append(f"  unreadable: {entry.error}", style="dim")
    elif entry.meta.get("merge"):
        text.append("  merged", style="dim")
    elif entry.val_loss is not None:
        text.append(f"  {entry.val_loss:.3f}", style="dim")
    return text
