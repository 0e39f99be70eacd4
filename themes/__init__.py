"""The studio's looks: built-in Textual themes, user themes from data files, and the stylesheet.

User themes are JSON files in `<config dir>/themes/*.json` holding the fields of `textual.theme.Theme`
(`name`, `primary`, and optionally `secondary`, `accent`, `background`, `surface`, `panel`,
`foreground`, `warning`, `error`, `success`, `dark`, `variables`). A file that does not load is
skipped with a reason, never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path

from textual.theme import Theme

STYLESHEETS = sorted(str(p) for p in Path(__file__).parent.glob("*.tcss"))  # studio.tcss + one per section

BUILT_IN = [
    Theme(
        name="slm-night",
        primary="#5fafff",
        secondary="#8787d7",
        accent="#ffaf5f",
        foreground="#d0d0d0",
        background="#121212",
        surface="#1c1c1c",
        panel="#262626",
        success="#87d787",
        warning="#ffd75f",
        error="#ff5f5f",
        dark=True,
    ),
    Theme(
        name="slm-paper",
        primary="#005f87",
        secondary="#5f5f87",
        accent="#af5f00",
        foreground="#262626",
        background="#f5f3ee",
        surface="#ebe8e0",
        panel="#dedad0",
        success="#2e7d32",
        warning="#a66a00",
        error="#b00020",
        dark=False,
    ),
    Theme(
        name="gothic",
        primary="#a4161a",
        secondary="#6d597a",
        accent="#c9a227",
        foreground="#e0d6c3",
        background="#0b090a",
        surface="#161213",
        panel="#231a1c",
        success="#6a994e",
        warning="#c9a227",
        error="#e5383b",
        dark=True,
        variables={"footer-key-foreground": "#c9a227", "block-cursor-background": "#a4161a"},
    ),
]

DEFAULT_THEME = "slm-night"


def load_user_themes(folder: Path) -> tuple[list[Theme], list[str]]:
    """Themes from `folder/*.json`, and one line per file that could not be loaded."""
    themes, problems = [], []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            themes.append(Theme(**data))
        except (OSError, ValueError, TypeError) as e:
            problems.append(f"theme {path.name} skipped: {e}")
    return themes, problems
