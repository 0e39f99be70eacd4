"""Where things live: the workspace (data/, checkpoints/) and the user's settings (platformdirs).

A workspace is any folder holding `data/` (corpora, any depth of subfolders) and `checkpoints/`
(one folder per run, plus named tokenizers in `checkpoints/tokenizers/`). It is the current folder
unless `--workspace PATH` or `SLM_WORKSPACE` says otherwise. User settings (theme, last model) live
in the platformdirs config folder (override with `SLM_CONFIG_DIR`), never in a workspace; measurements
kept between runs in its cache folder (`SLM_CACHE_DIR`).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import atomic
from core.errors import SLMError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RESERVED_NAMES = {"tokenizers"}


def check_name(name: str, what: str = "run") -> str:
    """Refuse names that would escape their folder or confuse a shell."""
    if not NAME_RE.match(name) or name in RESERVED_NAMES:
        raise SLMError(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_' or '-' (not starting with one of "
            f"the last three), at most 100 characters{', and not ' + repr(name) if name in RESERVED_NAMES else ''}"
        )
    return name


def default_run_name(prefix: str) -> str:
    """PREFIX-DATE-TIME: the name a run gets when the user gives none."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: str | os.PathLike | None = None) -> Workspace:
        chosen = path or os.environ.get("SLM_WORKSPACE") or os.getcwd()
        root = Path(chosen).expanduser().resolve()
        if root.exists() and not root.is_dir():
            raise SLMError(f"workspace {root} is not a folder")
        return cls(root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def cache_dir(self) -> Path:
        """Token files encoded from the corpora; safe to delete at any time."""
        return self.data_dir / ".cache" / "tokens"

    @property
    def tokenizers_dir(self) -> Path:
        return self.checkpoints_dir / "tokenizers"

    def run_dir(self, name: str) -> Path:
        return self.checkpoints_dir / check_name(name)

    def tokenizer_path(self, name_or_path: str) -> Path:
        """A tokenizer by workspace name (checkpoints/tokenizers/NAME) or by path."""
        path = Path(name_or_path).expanduser()
        if path.suffix == ".json" or path.exists():
            return path if path.suffix == ".json" or not path.is_dir() else path / "tokenizer.json"
        candidate = self.tokenizers_dir / check_name(name_or_path, "tokenizer") / "tokenizer.json"
        if not candidate.exists():
            known = sorted(p.parent.name for p in self.tokenizers_dir.glob("*/tokenizer.json"))
            hint = f" (known: {', '.join(known)})" if known else " (none trained yet: run `slm tokenize`)"
            raise SLMError(f"no tokenizer named {name_or_path!r}{hint}")
        return candidate

    def ensure(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.checkpoints_dir.mkdir(parents=True, exist_ok=True)


# --- user settings ------------------------------------------------------------------------------


def config_dir() -> Path:
    override = os.environ.get("SLM_CONFIG_DIR")
    if override:
        return Path(override)
    from platformdirs import user_config_dir

    return Path(user_config_dir("slm-studio", appauthor=False))


def cache_dir() -> Path:
    """Where measurements worth keeping between runs live (the planner's speed probes); SLM_CACHE_DIR overrides."""
    override = os.environ.get("SLM_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("slm-studio", appauthor=False))


def load_settings() -> dict[str, Any]:
    path = config_dir() / "settings.json"
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def save_settings(**changes: Any) -> dict[str, Any]:
    settings = {**load_settings(), **changes}
    atomic.write_json(config_dir() / "settings.json", settings)
    return settings
