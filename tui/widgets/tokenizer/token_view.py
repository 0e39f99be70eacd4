"""The try-it view: typed text split into its tokens, in alternating colours, with their ids."""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from core.tokenizer.bpe import Tokenizer

VISIBLE = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})


@dataclass(frozen=True)
class Piece:
    text: str  # what the token stands for, with whitespace made visible
    id: int
    special: bool


def pieces(tokenizer: Tokenizer, text: str) -> list[Piece]:
    special = set(tokenizer.special_ids.values())
    return [Piece(_visible(tokenizer.token_bytes(i)), i, i in special) for i in tokenizer.encode(text)]


def _visible(raw: bytes) -> str:
    """A token's bytes as text; a token holding part of a multi-byte character shows its bytes in hex."""
    try:
        return raw.decode("utf-8").translate(VISIBLE)
    except UnicodeDecodeError:
        return "".join(f"\\x{b:02x}" for b in raw)


class TokenView(Widget):
    """A count, then the text cut into coloured tokens, then their ids in the same colours."""

    COMPONENT_CLASSES = {"token-view--even", "token-view--odd", "token-view--special", "token-view--muted"}
    DEFAULT_CSS = "TokenView { height: auto; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pieces: list[Piece] = []
        self.text_bytes = 0
        self.empty = ""

    def show(self, tokenizer: Tokenizer | None, text: str, empty: str = "") -> None:
        """The tokens of `text`; with no tokenizer (or no text) the `empty` line instead."""
        self.pieces = pieces(tokenizer, text) if tokenizer is not None else []
        self.text_bytes = len(text.encode("utf-8"))
        self.empty = empty
        self.refresh(layout=True)

    def _style(self, n: int, piece: Piece) -> Style:
        name = "token-view--special" if piece.special else ("token-view--odd" if n % 2 else "token-view--even")
        return self.get_component_rich_style(name)

    def render(self) -> Text:
        muted = self.get_component_rich_style("token-view--muted")
        if not self.pieces:
            return Text(self.empty, muted)
        tokens, ids = Text(), Text()
        for n, piece in enumerate(self.pieces):
            tokens.append(piece.text, self._style(n, piece))
            ids.append(f" {piece.id} ", self._style(n, piece))
            ids.append(" ")
        n = len(self.pieces)
        summary = f"{n} token{'s' * (n != 1)} · {self.text_bytes} bytes · {self.text_bytes / n:.2f} bytes per token"
        return Text("\n").join([Text(summary, muted), tokens, Text(""), ids])
