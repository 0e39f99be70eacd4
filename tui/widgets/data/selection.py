"""The training selection: files and folders relative to data/ (posix form); an empty list means all of data/."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def covers(entry: str, path: str) -> bool:
    """Whether the selection entry `entry` includes `path` (the path itself or something inside it)."""
    return path == entry or path.startswith(entry + "/")


def state(selection: list[str], path: str) -> str:
    """The mark of `path`: all (nothing chosen, so all of data/ is used), yes, some (inside a folder) or no."""
    if not selection:
        return "all"
    if any(covers(entry, path) for entry in selection):
        return "yes"
    if any(covers(path, entry) for entry in selection):
        return "some"
    return "no"


def chosen(selection: list[str], paths: Iterable[str]) -> list[str]:
    """The paths the selection includes."""
    return [p for p in paths if state(selection, p) in ("all", "yes")]


def toggle(selection: list[str], path: str, children: Callable[[str], list[str]]) -> list[str]:
    """The selection with `path` switched in or out.

    Choosing a folder replaces the entries inside it; leaving out something inside a chosen folder replaces the
    folder by everything else in it (`children(folder)` lists a folder's entries).
    """
    entries = set(selection)
    outer = next((entry for entry in entries if covers(entry, path)), None)
    if outer is None:
        entries = {entry for entry in entries if not covers(path, entry)} | {path}
    else:
        entries.discard(outer)
        entries |= _all_but(outer, path, children)
    return sorted(entries)


def _all_but(folder: str, path: str, children: Callable[[str], list[str]]) -> set[str]:
    """Everything under `folder` except `path`: the other entries of each folder on the way down to it."""
    kept: set[str] = set()
    while folder != path:
        step = next(child for child in children(folder) if covers(child, path))
        kept |= {child for child in children(folder) if child != step}
        folder = step
    return kept


def folder_index(paths: Iterable[str]) -> dict[str, list[str]]:
    """Each folder's entries ("" is data/ itself): folders first, then files, by name."""
    index: dict[str, set[str]] = {"": set()}
    for path in paths:
        parts = path.split("/")
        for depth in range(len(parts)):
            index.setdefault("/".join(parts[:depth]), set()).add("/".join(parts[: depth + 1]))
    return {folder: sorted(entries, key=lambda e: (e not in index, e.lower())) for folder, entries in index.items()}
