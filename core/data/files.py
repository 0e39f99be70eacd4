"""Reading one corpus file: whether it can be read at all, its bytes as text, and the pieces text streams in.

Only regular files are read (a pipe or a device never ends); that is decided from `os.stat`, without opening
the file, so a link to a regular file is fine. Text is UTF-8, or UTF-16 or UTF-32 when the file starts with
their byte-order mark (any mark is dropped); a NUL character marks a binary file. Text streams in pieces of
about `CHUNK_BYTES` that end just after a line break or, inside a longer line, just before a space that
follows a word: byte-level BPE attaches a space to the word after it, so the pieces encode to the same
tokens as the uncut text. JSONL is read in whole lines; a line over `RECORD_CHARS` is skipped unread.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

from core.errors import SLMError

CHUNK_BYTES = 1 << 20
RECORD_CHARS = 16 << 20  # a JSONL line longer than this is skipped like a line without text
NOT_REGULAR = "not a regular file (a pipe, device or broken link)"
BAD_NAME = "its name is not valid UTF-8: rename it"
BINARY = "binary file (contains NUL bytes)"
BOMS = (  # UTF-32's before UTF-16's: the little-endian marks start alike
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_SPACE_AFTER_WORD = re.compile(r"(?s:.*)\S( )")  # the last space that follows a non-space


class TextError(SLMError):
    """A file's bytes are not text: a NUL character, or (when decoding strictly) bytes that do not decode."""


def shown(path: str | os.PathLike) -> str:
    """A path as it can be printed: bytes of it that are not UTF-8 become U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def path_problem(path: Path, rel: str) -> str | None:
    """Why the file at `path` (`rel` under the data folder) cannot be read as text, judged without opening it."""
    if shown(rel) != rel:  # bytes that are not UTF-8 were decoded as lone surrogates
        return BAD_NAME
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return NOT_REGULAR  # a broken link
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None if stat.S_ISREG(mode) else NOT_REGULAR


def read_chunks(path: Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The file's bytes in blocks of `chunk_bytes`."""
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            yield block


class Decoder:
    """Bytes to text, block by block (a character may span two blocks); `decode(b"", final=True)` ends it."""

    def __init__(self, errors: str = "strict") -> None:
        self.errors, self.encoding, self.offset = errors, "", 0  # offset: bytes decoded so far
        self._head = b""  # the first bytes, until there are enough to tell the byte-order mark
        self._decoder: codecs.IncrementalDecoder | None = None

    def decode(self, raw: bytes, final: bool = False) -> str:
        if self._decoder is None:
            self._head += raw
            if len(self._head) < 4 and not final:
                return ""
            raw, self._head = self._head, b""
            bom, self.encoding = next(((b, e) for b, e in BOMS if raw.startswith(b)), (b"", "utf-8"))
            self._decoder = codecs.getincrementaldecoder(self.encoding)(self.errors)
            raw, self.offset = raw[len(bom) :], len(bom)
        if self.encoding == "utf-8" and b"\0" in raw:
            raise TextError(BINARY)
        held = len(self._decoder.getstate()[0])  # bytes of a character begun in the previous block
        try:
            text = self._decoder.decode(raw, final)
        except UnicodeDecodeError as e:
            at = self.offset - held + e.start
            name = self.encoding[:6].upper()  # UTF-8, UTF-16 or UTF-32
            raise TextError(f"not {name} text (bad byte at offset {at})") from None
        self.offset += len(raw)
        if "\0" in text:
            raise TextError(BINARY)
        return text


def decoded(path: Path, errors: str = "strict", chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The file's text, block by block (see `Decoder`; raises `TextError`)."""
    decoder = Decoder(errors)
    for raw in chain(read_chunks(path, chunk_bytes), [b""]):
        yield decoder.decode(raw, final=not raw)


def space_cut(text: str, start: int, end: int) -> int:
    """The last place in text[start:end] just before a space that follows a non-space; -1 if there is none."""
    found = _SPACE_AFTER_WORD.match(text, start, end)
    return found.start(1) if found else -1


def text_pieces(texts: Iterable[str], size: int = CHUNK_BYTES) -> Iterator[str]:
    """Text re-cut into pieces that end just after a line break; a line longer than `size` characters is cut
    into pieces of at most `size`, each just before a space that follows a word (or, with none, anywhere)."""
    rest = ""
    for text in texts:
        rest += text
        end = rest.rfind("\n") + 1
        if end:
            yield rest[:end]
            rest = rest[end:]
        while len(rest) >= size:  # a long line
            cut = space_cut(rest, 0, size)
            end = cut if cut > 0 else size
            yield rest[:end]
            rest = rest[end:]
    if rest:
        yield rest


def line_blocks(texts: Iterable[str], limit: int = RECORD_CHARS) -> Iterator[str | None]:
    """Text re-cut into blocks of whole lines; a line still unfinished after `limit` characters (and a text
    given) is dropped as it is read, and stands as None."""
    rest, dropping = "", False
    for text in texts:
        if dropping:
            line_end = text.find("\n")
            if line_end < 0:
                continue
            text, dropping = text[line_end + 1 :], False
        rest += text
        end = rest.rfind("\n") + 1
        if end:
            yield rest[:end]
            rest = rest[end:]
        if len(rest) > limit:
            yield None
            rest, dropping = "", True
    if rest:
        yield rest
