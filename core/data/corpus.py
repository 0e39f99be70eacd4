"""The corpus: text files under data/, their stats, and the train/validation split.

A corpus is a set of files under `data/` (`.txt`, `.md`, `.jsonl` with a `text` field). Documents
are text files and JSONL records. Everything streams: files are read in chunks that end at a line
break, so a corpus of any size is read with bounded memory (`core.train.tokens` encodes it).

The split: a document of at least `CUT_BYTES` gives its last `val_fraction` (cut after a line break)
to validation; smaller documents go wholesale to one side, chosen by a seeded hash, when there are at
least `MIN_HASHED_DOCS` of them (otherwise they are cut like large ones).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import SLMError

SUFFIXES = (".txt", ".md", ".jsonl")
CHUNK_BYTES = 1 << 20
CUT_BYTES = 64 * 1024
MIN_HASHED_DOCS = 20

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


# --- discovery and stats ------------------------------------------------------------------------


def discover(data_dir: Path, selection: list[str] | None = None) -> list[Path]:
    """Text files under `data_dir` (or under the selected files/folders in it), sorted.

    Hidden files and folders (such as the token cache `.cache/`) are skipped.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SLMError(f"data folder {data_dir} does not exist: create it and put .txt, .md or .jsonl files in it")
    roots = [data_dir / s for s in selection] if selection else [data_dir]
    found: set[Path] = set()
    for root in roots:
        if not root.exists():
            raise SLMError(f"{root} does not exist")
        if root.is_file():
            if root.suffix.lower() not in SUFFIXES:
                raise SLMError(f"{root} is not a .txt, .md or .jsonl file")
            found.add(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                    found.add(Path(dirpath) / name)
    return sorted(found)


@dataclass
class FileStats:
    """What a corpus file holds. `error` says why it cannot be used as it is (e.g. not UTF-8)."""

    path: str  # relative to the data folder
    bytes: int = 0
    lines: int = 0
    chars: int = 0
    documents: int = 0
    est_tokens: int = 0
    sha: str = ""
    error: str | None = None
    skipped_records: int = 0  # JSONL lines without a usable `text` field
    chat_records: int = 0  # JSONL lines with a `messages` field (kept for supervised fine-tuning)


def read_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """Raw chunks of about `chunk_bytes`, each ending just after a line break (or at end of file)."""
    with open(path, "rb") as f:
        rest = b""
        while True:
            block = f.read(chunk_bytes)
            if not block:
                if rest:
                    yield rest
                return
            block = rest + block
            cut = block.rfind(b"\n")
            if cut < 0:
                rest = block
                continue
            rest = block[cut + 1 :]
            yield block[: cut + 1]


def _decode(raw: bytes, errors: str, first: bool) -> str:
    text = raw.decode("utf-8", errors=errors)
    return text.removeprefix("\ufeff") if first else text


def file_stats(path: Path, data_dir: Path, errors: str = "strict") -> FileStats:
    """Scan a file once: size, lines, characters, documents, content hash and decoding problems."""
    stats = FileStats(path=str(Path(path).relative_to(data_dir)))
    digest = hashlib.blake2b(digest_size=16)
    jsonl = path.suffix.lower() == ".jsonl"
    record_chars = 0  # JSONL: characters on lines with a `text` field, the only ones pretraining reads
    try:
        for i, raw in enumerate(read_chunks(path)):
            digest.update(raw)
            stats.bytes += len(raw)
            stats.lines += raw.count(b"\n")
            if stats.error:
                continue
            if b"\x00" in raw:
                stats.error = "binary file (contains NUL bytes)"
                continue
            try:
                text = _decode(raw, errors, first=i == 0)
            except UnicodeDecodeError as e:
                stats.error = f"not UTF-8 text (bad byte at offset {stats.bytes - len(raw) + e.start})"
                continue
            stats.chars += len(text)
            if jsonl:
                for line in text.splitlines():
                    kind = _record_kind(line)
                    if kind == "text":
                        stats.documents += 1
                        record_chars += len(line)
                    stats.chat_records += kind == "chat"
                    stats.skipped_records += kind == "bad"
    except OSError as e:
        stats.error = f"cannot be read ({e.strerror or e})"
    if not jsonl and not stats.error:
        stats.documents = 1 if stats.chars else 0
    stats.est_tokens = (record_chars if jsonl else stats.bytes) // 4
    stats.sha = digest.hexdigest()
    return stats


def _record(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _record_kind(line: str) -> str:
    if not line.strip():
        return "blank"
    record = _record(line)
    if record is None:
        return "bad"
    if isinstance(record.get("text"), str):
        return "text"
    if isinstance(record.get("messages"), list):
        return "chat"
    return "bad"


# --- the corpus and its split -------------------------------------------------------------------


@dataclass
class Corpus:
    """The usable files of a selection, with their stats; files that cannot be used are listed apart."""

    data_dir: Path
    files: list[FileStats]
    problems: list[FileStats] = field(default_factory=list)
    errors: str = "strict"

    @classmethod
    def scan(
        cls,
        data_dir: Path,
        selection: list[str] | None = None,
        decode_errors: str = "skip",
        on_progress: ProgressFn | None = None,
    ) -> Corpus:
        """Scan the selection; `decode_errors` is "skip" (leave bad files out) or "replace" (use U+FFFD)."""
        errors = "replace" if decode_errors == "replace" else "strict"
        paths = discover(data_dir, selection)
        files, problems = [], []
        for i, path in enumerate(paths):
            stats = file_stats(path, data_dir, errors)
            (problems if stats.error else files).append(stats)
            if on_progress:
                on_progress("scan", i + 1, len(paths))
        corpus = cls(Path(data_dir), files, problems, errors)
        if not paths:
            raise SLMError(f"no .txt, .md or .jsonl files in {data_dir}: add some, or run `slm data --add-sample`")
        if not corpus.files:
            names = ", ".join(f"{p.path} ({p.error})" for p in problems[:3])
            raise SLMError(f"no usable text in {data_dir}: {names}; try --decode-errors replace for damaged text")
        if not any(f.documents for f in corpus.files):
            raise SLMError(f"the text files in {data_dir} are empty")
        return corpus

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        for f in self.files:
            h.update(f"{f.path}\0{f.sha}\0".encode())
        return h.hexdigest()

    def hash_small_docs(self) -> bool:
        """Whether small documents are split wholesale by hash (there are enough of them)."""
        small = 0
        for f in self.files:
            if f.path.endswith(".jsonl"):
                small += f.documents  # counted as small; large records are cut anyway
            elif f.bytes < CUT_BYTES:
                small += 1
        return small >= MIN_HASHED_DOCS

    def documents(self) -> Iterator[tuple[str, int, Iterator[str]]]:
        """(file path, record index, text chunks) for every document, in a fixed order."""
        for stats in self.files:
            path = self.data_dir / stats.path
            if path.suffix.lower() == ".jsonl":
                index = 0
                for i, raw in enumerate(read_chunks(path)):
                    for line in _decode(raw, self.errors, first=i == 0).splitlines():
                        record = _record(line) if line.strip() else None
                        if record is not None and isinstance(record.get("text"), str) and record["text"]:
                            yield stats.path, index, iter([record["text"]])
                            index += 1
            else:
                yield stats.path, 0, (_decode(raw, self.errors, i == 0) for i, raw in enumerate(read_chunks(path)))

    def split(self, val_fraction: float, seed: int) -> Iterator[tuple[str, str | None]]:
        """("train" | "val", text) pieces in corpus order; (side, None) marks the end of a document."""
        hashed = self.hash_small_docs()
        for path, index, chunks in self.documents():
            first = next(chunks, "")
            second = next(chunks, None)
            if second is None and len(first.encode("utf-8")) < CUT_BYTES and hashed:
                side = "val" if _unit_hash(seed, path, index) < val_fraction else "train"
                yield side, first
                yield side, None
                continue
            yield from _cut_tail(path, first, second, chunks, val_fraction, self)
            yield "train", None
            yield "val", None

    def texts(self, side: str, val_fraction: float, seed: int) -> Iterator[str]:
        """The text pieces of one side of the split (for tokenizer training)."""
        return (text for s, text in self.split(val_fraction, seed) if s == side and text)


def _unit_hash(seed: int, path: str, index: int) -> float:
    digest = hashlib.blake2b(f"{seed}\0{path}\0{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _cut_tail(
    path: str, first: str, second: str | None, chunks: Iterator[str], val_fraction: float, corpus: Corpus
) -> Iterator[tuple[str, str]]:
    """Give the document's last `val_fraction` of characters (cut after a line break) to validation."""
    if second is None:  # a single piece: a JSONL record or a small file
        cut = _cut_point(first, val_fraction)
        yield "train", first[:cut]
        yield "val", first[cut:]
        return
    stats = next(f for f in corpus.files if f.path == path)
    cut_at = int(stats.chars * (1.0 - val_fraction))
    seen = 0
    for piece in _chain(first, second, chunks):
        if seen + len(piece) <= cut_at:
            yield "train", piece
        elif seen >= cut_at:
            yield "val", piece
        else:
            line_end = piece.find("\n", cut_at - seen)
            split = len(piece) if line_end < 0 else line_end + 1
            yield "train", piece[:split]
            yield "val", piece[split:]
        seen += len(piece)


def _chain(first: str, second: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield second
    yield from rest


def _cut_point(text: str, val_fraction: float) -> int:
    cut = int(len(text) * (1.0 - val_fraction))
    line_end = text.find("\n", cut)
    return cut if line_end < 0 or line_end + 1 >= len(text) else line_end + 1
