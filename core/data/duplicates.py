"""Exact duplicate documents: the same text once line endings and runs of whitespace are normalised.

A document is a .txt or .md file, or one text record of a .jsonl file. In corpus order, the first copy of a
text is the original and every later one a copy: training leaves the copies out (unless told to keep them),
so a file copied twice is not trained on twice, and a text cannot sit in both training and validation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

Key = tuple[str, int]  # (file path, record index): a document
MAX_WORD = 1 << 20
# every character but " " and "\n" that Python's str.isspace() accepts (a test checks the list)
OTHER_SPACE = re.compile("[\t\v\f\r\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")
ASCII_OTHER_SPACE = "\t\v\f\r\x1c\x1d\x1e\x1f"


def has_other_space(text: str) -> bool:
    """Whether `text` holds whitespace other than spaces and line breaks (ASCII text: by substring search,
    ten times sooner than the pattern)."""
    if text.isascii():
        return any(c in text for c in ASCII_OTHER_SPACE)
    return OTHER_SPACE.search(text) is not None


class TextDigest:
    """A 64-bit digest of text fed in pieces, equal for texts that differ only in whitespace."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=8)
        self._tail = ""  # a word the last piece may have cut
        self._empty = True

    def update(self, text: str) -> None:
        text = self._tail + text
        cut = len(text) if not text or text[-1].isspace() else max(text.rfind(c) for c in " \t\n\r\f\v") + 1
        if cut == 0 and len(text) > MAX_WORD:  # no whitespace for a long way: not a word to carry over
            cut = len(text)
        self._tail = text[cut:]
        self._add(text[:cut])

    def _add(self, text: str) -> None:
        words = normalised(text)
        if words:
            self._hash.update((words if self._empty else " " + words).encode("utf-8", "surrogatepass"))
            self._empty = False

    def digest(self) -> int:
        self._add(self._tail)
        self._tail = ""
        return int.from_bytes(self._hash.digest(), "big")


def normalised(text: str) -> str:
    """`" ".join(text.split())`, several times sooner when the only whitespace is spaces and line breaks."""
    if has_other_space(text):
        return " ".join(text.split())
    text = text.replace("\n", " ")
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip(" ")


def digest_of(text: str) -> int:
    d = TextDigest()
    d.update(text)
    return d.digest()


@dataclass
class Dropped:
    """What one file loses as copies: documents, their bytes, and the file it copies when it is a copy whole."""

    documents: int = 0
    bytes: int = 0
    of: str | None = None


@dataclass
class Duplicates:
    """The copies of a corpus, and the originals they copy."""

    copies: set[Key] = field(default_factory=set)
    originals: set[Key] = field(default_factory=set)
    by_file: dict[str, Dropped] = field(default_factory=dict)

    @property
    def documents(self) -> int:
        return sum(d.documents for d in self.by_file.values())

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.by_file.values())

    def summary(self, kept: bool, limit: int = 3) -> str:
        """One line: how much is a copy, where, and what training does with the copies."""
        parts = [f"{p} (a copy of {d.of})" if d.of else f"{p} ({d.documents} records)" for p, d in self.by_file.items()]
        more = f" and {len(parts) - limit} more files" if len(parts) > limit else ""
        done = "kept, each copy in training only" if kept else "left out (--keep-duplicates keeps them)"
        return (
            f"{self.documents} duplicate documents ({self.bytes:,} bytes): "
            + ", ".join(parts[:limit])
            + more
            + f": {done}"
        )


def find_duplicates(documents: Iterable[tuple[str, int, int, int]]) -> Duplicates:
    """`documents` as (path, index, digest, bytes) in corpus order (index 0 and a whole file for .txt/.md)."""
    found = Duplicates()
    first: dict[int, Key] = {}
    for path, index, digest, size in documents:
        key = (path, index)
        original = first.setdefault(digest, key)
        if original == key:
            continue
        found.copies.add(key)
        found.originals.add(original)
        dropped = found.by_file.setdefault(path, Dropped())
        dropped.documents += 1
        dropped.bytes += size
        if not path.endswith(".jsonl"):
            dropped.of = original[0]
    return found
