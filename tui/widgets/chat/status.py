"""The status line under the conversation: model, mode, sampling settings and context used."""

from __future__ import annotations

from rich.markup import escape
from textual.widgets import Static

from core.chat.sampling import SamplingSettings
from tui.format import count


class ChatStatus(Static):
    """Shows what the next reply will be generated with."""

    def show(self, model: str, params: int, mode: str, settings: SamplingSettings, used: int, context: int) -> None:
        items = [
            f"[b]{escape(model)}[/b] {count(params)} params",
            mode,
            f"temp {settings.temperature:g}",
            f"top-k {settings.top_k}",
            f"top-p {settings.top_p:g}",
            f"max {settings.max_tokens}",
            f"ctx {min(used, context)}/{context}" + (" [b]full[/b]" if used >= context else ""),
        ]
        # no-break spaces inside an item: a narrow terminal wraps between items, never inside one
        self.update(" · ".join(item.replace(" ", "\u00a0") for item in items))
