"""The corpus: text files under data/, their stats, and the train/validation split.

A corpus is a set of files under `data/` (`.txt`, `.md`, `.jsonl` with a `text` field). Documents
are text files and JSONL records. Everything streams (`core.data.files` reads and decodes a file in
pieces of bounded size), so a corpus of any size is read with bounded memory (`core.train.tokens`
encodes it). What cannot be used (a name that is not UTF-8, a pipe, a folder that cannot be read, a
binary file...) is named, never silently skipped.

The split: a document of at least `CUT_BYTES` gives its last `val_fraction` (cut after a line break,
or where a piece of a very long line ends) to validation; smaller documents go wholesale to one side,
chosen by a seeded hash, when there are at least `MIN_HASHED_DOCS` of them (otherwise they are cut
like large ones).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from core.data.duplicates import Duplicates, TextDigest, digest_of, find_duplicates
from core.data.files import (
    BAD_NAME,
    Decoder,
    TextError,
    decoded,
    line_blocks,
    path_problem,
    read_chunks,
    shown,
    text_pieces,
)
from core.errors import SLMError

SUFFIXES = (".txt", ".md", ".jsonl")
CUT_BYTES = 64 * 1024
MIN_HASHED_DOCS = 20
LINKED_FOLDER = "a link to a folder, which is not followed: link the files in it instead"

ProgressFn = Callable[[str, int, int], None]  # (stage, done, total)


# --- discovery and stats ------------------------------------------------------------------------


def discover(data_dir: Path, selection: list[str] | None = None, problems: list[FileStats] | None = None) -> list[Path]:
    """Text files under `data_dir` (or under the selected files/folders in it), sorted.

    Hidden files and folders (such as the token cache `.cache/`) are skipped. What cannot be read as text,
    judged without opening it (a name that is not UTF-8, a pipe, a device, a broken link, a folder that cannot
    be listed, a link to a folder), is left out and, when `problems` is given, added to it as a row.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise SLMError(
            f"data folder {shown(data_dir)} does not exist: create it and put .txt, .md or .jsonl files in it"
        )
    roots = [data_dir / s for s in selection] if selection else [data_dir]
    found: set[Path] = set()
    skipped: dict[str, FileStats] = {}

    def skip(path: str | Path, error: str) -> None:
        rel = shown(os.path.relpath(path, data_dir))
        skipped.setdefault(rel, FileStats(path=rel, error=error))

    def consider(path: Path) -> None:
        problem = path_problem(path, os.path.relpath(path, data_dir))
        if problem:
            skip(path, problem)
        else:
            found.add(path)

    def unlisted(e: OSError) -> None:
        skip(e.filename, f"folder cannot be read ({e.strerror or e})")

    for root in roots:
        if not root.exists():
            raise SLMError(f"{shown(root)} does not exist")
        if not root.is_dir():
            if root.suffix.lower() not in SUFFIXES:
                raise SLMError(f"{shown(root)} is not a .txt, .md or .jsonl file")
            consider(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=unlisted):
            folders = sorted(d for d in dirnames if not d.startswith("."))
            dirnames[:] = []
            for d in folders:
                sub = os.path.join(dirpath, d)
                if os.path.islink(sub):
                    skip(sub, LINKED_FOLDER)
                elif shown(d) != d:
                    skip(sub, BAD_NAME)
                else:
                    dirnames.append(d)
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in SUFFIXES:
                    consider(Path(dirpath) / name)
    if problems is not None:
        problems.extend(sorted(skipped.values(), key=_order))
    return sorted(found)


def _order(stats: FileStats) -> tuple[str, ...]:
    return Path(stats.path).parts


@dataclass
class FileStats:
    """What a corpus file holds. `error` says why it cannot be used as it is (e.g. not UTF-8)."""

    path: str  # relative to the data folder
    bytes: int = 0
    lines: int = 0
    chars: int = 0  # of the decoded text, like `lines` and `documents`
    documents: int = 0
    est_tokens: int = 0
    sha: str = ""  # of the file's bytes
    error: str | None = None
    skipped_records: int = 0  # JSONL lines without a usable `text` field
    chat_records: int = 0  # JSONL lines with a `messages` field (kept for supervised fine-tuning)
    digests: list[tuple[int, int]] = field(default_factory=list, repr=False)  # (text digest, bytes) per document


def file_stats(path: Path, data_dir: Path, errors: str = "strict") -> FileStats:
    """Scan a file once: size, lines, characters, documents, content hash and decoding problems."""
    rel = os.path.relpath(path, data_dir)
    stats = FileStats(path=shown(rel), error=path_problem(path, rel))
    if stats.error:
        return stats
    digest = hashlib.blake2b(digest_size=16)
    decoder = Decoder(errors)
    jsonl = path.suffix.lower() == ".jsonl"
    wide_bytes = 0  # UTF-16/32 text: its size in UTF-8, for the token estimate
    record_chars = 0  # JSONL: characters on lines with a `text` field, the only ones pretraining reads
    whole = TextDigest()  # a .txt or .md file is one document

    def texts() -> Iterator[str]:
        nonlocal wide_bytes
        for raw in chain(read_chunks(path), [b""]):
            digest.update(raw)
            stats.bytes += len(raw)
            if not stats.error:
                try:
                    text = decoder.decode(raw, final=not raw)
                except TextError as e:
                    stats.error = str(e)
                else:
                    stats.chars += len(text)
                    stats.lines += text.count("\n")
                    wide_bytes += len(text.encode()) if decoder.encoding != "utf-8" else 0
                    if not jsonl:
                        whole.update(text)
                    yield text
                    continue
            stats.lines += raw.count(b"\n")  # an unusable file: its lines as bytes

    try:
        if jsonl:
            record_chars = sum(_count_records(block, stats) for block in line_blocks(texts()))
        else:
            for _ in texts():  # they count as they are read
                pass
    except OSError as e:
        stats.error = f"cannot be read ({e.strerror or e})"
    if not jsonl and not stats.error:
        stats.documents = 1 if stats.chars else 0
        stats.digests = [(whole.digest(), stats.bytes)] if stats.chars else []
    text_bytes = stats.bytes if decoder.encoding == "utf-8" else wide_bytes
    stats.est_tokens = (record_chars if jsonl else text_bytes) // 4
    stats.sha = digest.hexdigest()
    return stats


def _count_records(block: str | None, stats: FileStats) -> int:
    """Count a block of JSONL lines (None: one line too long to read) into `stats`; returns its text records' size."""
    if block is None:
        stats.skipped_records += 1
        return 0
    chars = 0
    for line in block.splitlines():
        kind, record = _record_kind(line)
        if kind == "text":
            stats.documents += 1
            chars += len(line)
            if record["text"]:  # the records pretraining reads (an empty one is no document to it)
                stats.digests.append((digest_of(record["text"]), len(record["text"].encode("utf-8", "replace"))))
        stats.chat_records += kind == "chat"
        stats.skipped_records += kind == "bad"
    return chars


def _record(line: str) -> dict | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _record_kind(line: str) -> tuple[str, dict]:
    """What a JSONL line is (blank, bad, text or chat), and its record."""
    record = _record(line) if line.strip() else None
    if record is None:
        return ("blank" if not line.strip() else "bad"), {}
    if isinstance(record.get("text"), str):
        return "text", record
    if isinstance(record.get("messages"), list):
        return "chat", record
    return "bad", record


# --- the corpus and its split -------------------------------------------------------------------


@dataclass
class Corpus:
    """The usable files of a selection, with their stats; files that cannot be used are listed apart."""

    data_dir: Path
    files: list[FileStats]
    problems: list[FileStats] = field(default_factory=list)
    errors: str = "strict"
    keep_duplicates: bool = False  # train on every copy of a text (each goes wholly to training, none to validation)
    duplicates: Duplicates = field(default_factory=Duplicates)

    def __post_init__(self) -> None:
        self.duplicates = find_duplicates(
            (f.path, i, digest, size) for f in self.files for i, (digest, size) in enumerate(f.digests)
        )

    @classmethod
    def scan(
        cls,
        data_dir: Path,
        selection: list[str] | None = None,
        decode_errors: str = "skip",
        on_progress: ProgressFn | None = None,
        keep_duplicates: bool = False,
    ) -> Corpus:
        """Scan the selection; `decode_errors` is "skip" (leave bad files out) or "replace" (use U+FFFD); exact
        duplicate documents are left out of the split unless `keep_duplicates`."""
        errors = "replace" if decode_errors == "replace" else "strict"
        problems: list[FileStats] = []
        paths = discover(data_dir, selection, problems)
        files = []
        for i, path in enumerate(paths):
            stats = file_stats(path, data_dir, errors)
            (problems if stats.error else files).append(stats)
            if on_progress:
                on_progress("scan", i + 1, len(paths))
        corpus = cls(Path(data_dir), files, sorted(problems, key=_order), errors, keep_duplicates)
        where = shown(data_dir)
        if not paths and not problems:
            raise SLMError(f"no .txt, .md or .jsonl files in {where}: add some, or run `slm data --add-sample`")
        if not corpus.files:
            names = ", ".join(f"{p.path} ({p.error})" for p in corpus.problems[:3])
            damaged = any(p.error.startswith("not UTF") for p in problems)
            hint = "; try --decode-errors replace for damaged text" if damaged else ""
            raise SLMError(f"no usable text in {where}: {names}{hint}")
        if not any(f.documents for f in corpus.files):
            raise SLMError(f"the text files in {where} are empty")
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

    def documents(self, only: set[str] | None = None) -> Iterator[tuple[str, int, Iterator[str]]]:
        """(file path, record index, text pieces) for every document (of the files `only` names), in a fixed
        order; the other files are not read."""
        for stats in self.files:
            if only is not None and stats.path not in only:
                continue
            path = self.data_dir / stats.path
            texts = decoded(path, self.errors)
            if path.suffix.lower() == ".jsonl":
                index = 0
                for block in line_blocks(texts):
                    for line in (block or "").splitlines():
                        record = _record(line) if line.strip() else None
                        if record is not None and isinstance(record.get("text"), str) and record["text"]:
                            yield stats.path, index, iter([record["text"]])
                            index += 1
            else:
                yield stats.path, 0, text_pieces(texts)

    def split(self, val_fraction: float, seed: int) -> Iterator[tuple[str, str | None]]:
        """("train" | "val", text) pieces in corpus order; (side, None) marks the end of a document."""
        return ((side, text) for _, side, text in self.split_by_file(val_fraction, seed))

    def split_by_file(
        self, val_fraction: float, seed: int, only: set[str] | None = None
    ) -> Iterator[tuple[str, str, str | None]]:
        """The split's pieces with the path of the file each comes from: (path, side, text); `only`: of these
        files alone (each piece on the side it has in the whole split)."""
        hashed, copies, originals = self.hash_small_docs(), self.duplicates.copies, self.duplicates.originals
        for path, index, chunks in self.documents(only):
            if (path, index) in copies or (self.keep_duplicates and (path, index) in originals):
                if self.keep_duplicates:  # every copy trains, none validates: no text on both sides
                    yield from ((path, "train", piece) for piece in chunks)
                    yield path, "train", None
                continue
            first = next(chunks, "")
            second = next(chunks, None)
            if second is None and len(first.encode("utf-8")) < CUT_BYTES and hashed:
                side = "val" if _unit_hash(seed, path, index) < val_fraction else "train"
                yield path, side, first
                yield path, side, None
                continue
            yield from ((path, side, text) for side, text in _cut_tail(path, first, second, chunks, val_fraction, self))
            yield path, "train", None
            yield path, "val", None

    def texts(self, side: str, val_fraction: float, seed: int, only: set[str] | None = None) -> Iterator[str]:
        """The text pieces of one side of the split (of the files `only` names), for tokenizer training."""
        return (text for _, s, text in self.split_by_file(val_fraction, seed, only) if s == side and text)


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
