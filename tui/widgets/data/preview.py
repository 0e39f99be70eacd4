"""The right-hand pane: what the highlighted file or folder holds, its decoding problem if any, its first lines."""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Static, TextArea

from core.data.corpus import FileStats
from core.data.files import Decoder
from tui.format import count, size

PREVIEW_BYTES = 64 * 1024
PREVIEW_LINES = 40


def read_head(path: Path) -> str:
    """The first lines of a file (at most PREVIEW_LINES lines and PREVIEW_BYTES bytes), decoded leniently
    as the corpus decodes it (UTF-8, or UTF-16/32 after their byte-order mark)."""
    with open(path, "rb") as f:
        raw = f.read(PREVIEW_BYTES)
    text = Decoder("replace").decode(raw, final=len(raw) < PREVIEW_BYTES)
    return "".join(text.splitlines(keepends=True)[:PREVIEW_LINES])


def counted(n: int, word: str) -> str:
    """`n` and the word for it: 1 file, 12 files, 1.2k files."""
    return f"{count(n)} {word}{'s' * (n != 1)}"


def describe(stats: FileStats) -> str:
    """Lines, documents, JSONL records and the token estimate, as one line."""
    parts = [counted(stats.lines, "line")]
    if not stats.error:
        parts.append(counted(stats.documents, "document"))
    if stats.chat_records:
        parts.append(f"{count(stats.chat_records)} chat records")
    if stats.skipped_records:
        parts.append(f"{count(stats.skipped_records)} unusable records")
    parts.append(f"≈ {count(stats.est_tokens)} tokens")
    return " · ".join(parts)


class FilePreview(Vertical):
    """Stats of the highlighted entry, a prominent problem banner, and a read-only view of a file's head."""

    def compose(self) -> ComposeResult:
        yield Static(id="data-info")
        yield Static(id="data-problem")
        yield TextArea(read_only=True, soft_wrap=True, show_line_numbers=True, id="data-text")

    def show_file(self, stats: FileStats) -> None:
        """Stats now; the text follows with `show_text` unless the file cannot be decoded."""
        self._info(stats.path, size(stats.bytes), describe(stats))
        convert = " Convert it to UTF-8 text." if stats.error and stats.error.startswith(("not UTF", "binary")) else ""
        self._problem(f"⚠ Training leaves this out: {stats.error}.{convert}" if stats.error else None)
        self.show_text("" if stats.error else None)

    def show_folder(self, path: str, files: list[FileStats]) -> None:
        usable = [f for f in files if not f.error]
        tokens = sum(f.est_tokens for f in usable)
        numbers = f"{counted(len(files), 'file')} · ≈ {count(tokens)} tokens · space chooses the whole folder"
        self._info(f"{path}/", size(sum(f.bytes for f in files)), numbers)
        bad = [f"{f.path} ({f.error})" for f in files if f.error]
        self._problem(f"⚠ {len(bad)} unusable: {', '.join(bad[:3])}{' …' * (len(bad) > 3)}" if bad else None)
        self.show_text("")

    def show_text(self, text: str | None) -> None:
        """The file's first lines; None while they are being read, "" to show none."""
        area = self.query_one(TextArea)
        area.display = text != ""
        area.load_text(text or "")

    def show_failure(self, error: str) -> None:
        self._problem(f"⚠ cannot read this file: {error}")
        self.show_text("")

    def _info(self, path: str, total: str, numbers: str) -> None:
        info = Content.from_markup("[b]$path[/b]  $total\n$numbers", path=path, total=total, numbers=numbers)
        self.query_one("#data-info", Static).update(info)

    def _problem(self, problem: str | None) -> None:
        banner = self.query_one("#data-problem", Static)
        banner.display = bool(problem)
        banner.update(Content(problem or ""))
