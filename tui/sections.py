"""The studio's sections: mode name -> (key, label). A leaf: the app, the palette and help read it."""

from __future__ import annotations

SECTIONS: dict[str, tuple[str, str]] = {
    "data": ("1", "Data"),
    "tokenizer": ("2", "Tokenizer"),
    "train": ("3", "Train"),
    "merge": ("4", "Merge"),
    "chat": ("5", "Chat"),
    "checkpoints": ("6", "Checkpoints"),
    "runs": ("7", "Runs"),
}
