"""Corpus text cut into independently encodable chunks on its UTF-8 bytes, in numpy: the encoder's fast path.

`cut` finds the chunk starts of `WordEncoder`'s text path (core/tokenizer/encoder.py): before a space that a
character other than whitespace follows, after a line break that stands alone between two such characters,
and between the two characters of such a "\\r\\n"; and one more, before whitespace that follows such a
character (no alternative of GPT-2's pattern matches one and then the other), so " word\\n" is the chunks
" word" and "\\n", and the table keeps fewer distinct chunks. A whitespace character above ASCII
(a no-break space, an ideographic space) marks all its bytes as whitespace, so the byte before or after a
character says what that character is, and a cut always falls on an ASCII byte: every chunk is whole UTF-8.

`ChunkTable` maps chunks of up to 15 bytes to rows of the encoder's id table. Such a chunk packs exactly into
two 64-bit words (its bytes, zero-padded, and its length in the last byte), so a batch's lookups are a few
vectorized probes of an open-addressing hash table instead of a dictionary lookup per word.
"""

from __future__ import annotations

import re

import numpy as np

SHORT = 15  # the longest chunk ChunkTable keeps: its bytes and its length fill 16
WHITESPACE = np.zeros(256, bool)
WHITESPACE[list(b"\t\n\v\f\r\x1c\x1d\x1e\x1f ")] = True  # the ASCII characters Python's str.isspace() accepts
SPACE = np.zeros(256, bool)
SPACE[list(b"\t\n\v\f\r ")] = True  # those the tokenizer's pattern counts as whitespace too
# the UTF-8 of every character above ASCII that str.isspace() accepts (a test checks the list)
UNICODE_SPACE = re.compile(rb"\xc2[\x85\xa0]|\xe1\x9a\x80|\xe2\x80[\x80-\x8a\xa8\xa9\xaf]|\xe2\x81\x9f|\xe3\x80\x80")
_MASKS = np.tril(np.full((SHORT + 1, 16), 0xFF, np.uint8), -1)  # row n: n bytes kept
_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F], np.uint64)


def cut(buffer: bytes, text_ends: np.ndarray) -> np.ndarray:
    """Where the chunks of the texts joined in `buffer` start (text i ends at `text_ends[i]`): sorted offsets,
    each chunk running to the next start or to the end of its text. An empty text has no chunk."""
    b = np.frombuffer(buffer, np.uint8)
    n = len(b)
    text_starts = np.concatenate([[0], text_ends]).astype(np.int64)[:-1]
    whole = text_ends > text_starts
    first = np.zeros(n + 1, bool)  # a text's first byte: the byte before it is another text's
    first[text_starts[whole]] = True
    first = first[:n]
    last = np.zeros(n, bool)
    last[text_ends[whole] - 1] = True
    word = ~WHITESPACE[b]
    if not buffer.isascii():
        for space in UNICODE_SPACE.finditer(buffer):  # every byte of a wider whitespace character
            word[space.start() : space.end()] = False
    word_after = _earlier(word, 1) & ~last
    word_before = _later(word, 1) & ~first
    word_two_before = _later(word, 2) & ~first & ~_later(first, 1)
    cr_before = _later(b == 13, 1) & ~first
    line_break = (b == 10) & word_after
    starts = first.copy()
    starts |= (b == 32) & word_after  # a space that starts a word
    starts |= SPACE[b] & word_before  # whitespace after a word (no pre-token holds both)
    starts |= line_break & cr_before & word_two_before  # the "\n" of a lone "\r\n"
    starts[1:] |= (line_break & word_before)[:-1]  # the byte after a lone line break
    return np.flatnonzero(starts)


def _later(a: np.ndarray, k: int) -> np.ndarray:
    """`a` moved k places on: element i is a[i - k] (False for the first k)."""
    return np.concatenate([np.zeros(k, bool), a[:-k]])[: len(a)]


def _earlier(a: np.ndarray, k: int) -> np.ndarray:
    """`a` moved k places back: element i is a[i + k] (False for the last k)."""
    return np.concatenate([a[k:], np.zeros(k, bool)])[: len(a)]


def pack(buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The chunks at `starts` (each at most SHORT bytes) as (n, 2) uint64: bytes zero-padded, length last."""
    padded = np.frombuffer(buffer + bytes(16), np.uint8)
    rows = np.lib.stride_tricks.sliding_window_view(padded, 16)[starts] & _MASKS[lengths]
    rows[:, 15] = lengths
    return rows.view(np.uint64)


def distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct rows of packed `keys` (a sort on both words, far sooner than `np.unique(axis=0)`)."""
    ordered = keys[np.lexsort((keys[:, 1], keys[:, 0]))]
    changed = (ordered[1:] != ordered[:-1]).any(axis=1)
    return ordered[np.concatenate([[True], changed])] if len(ordered) else ordered


class ChunkTable:
    """Packed chunks (`pack`) to rows: open addressing with linear probing, kept at most half full."""

    def __init__(self) -> None:
        self._resize(1 << 16)
        self.count = 0

    def _resize(self, slots: int) -> None:
        self.bits = slots.bit_length() - 1
        self.low, self.high = np.zeros(slots, np.uint64), np.zeros(slots, np.uint64)
        self.rows = np.full(slots, -1, np.int64)

    def _slots(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        mixed = low * _MIX[0] + high * _MIX[1]  # wraps around, as hashing wants
        return ((mixed ^ (mixed >> np.uint64(29))) >> np.uint64(64 - self.bits)).astype(np.int64)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """The row of each key, or -1 for a key not in the table."""
        low, high = np.ascontiguousarray(keys[:, 0]), np.ascontiguousarray(keys[:, 1])
        slot = self._slots(low, high)
        rows = self.rows[slot]
        hit = (self.low[slot] == low) & (self.high[slot] == high)
        found = np.where(hit, rows, -1)
        pending = np.flatnonzero((rows >= 0) & ~hit)  # an empty slot ends a search
        mask = (1 << self.bits) - 1
        while len(pending):
            at = slot[pending] = (slot[pending] + 1) & mask
            rows = self.rows[at]
            hit = (self.low[at] == low[pending]) & (self.high[at] == high[pending])
            found[pending[hit]] = rows[hit]
            pending = pending[(rows >= 0) & ~hit]
        return found

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Put distinct keys that are not in the table yet."""
        if 2 * (self.count + len(keys)) > len(self.rows):
            held = self.rows >= 0
            old = np.stack([self.low[held], self.high[held]], axis=1), self.rows[held]
            self._resize(1 << (2 * (self.count + len(keys))).bit_length())
            self.count = 0
            self.add(*old)
        low, high = keys[:, 0], keys[:, 1]
        slot, pending = self._slots(low, high), np.arange(len(keys))
        mask = (1 << self.bits) - 1
        while len(pending):
            at = slot[pending]
            free = self.rows[at] < 0
            taken, first = np.unique(at[free], return_index=True)  # one key per free slot this round
            placed = pending[free][first]
            self.low[taken], self.high[taken], self.rows[taken] = low[placed], high[placed], rows[placed]
            left = np.ones(len(pending), bool)
            left[np.flatnonzero(free)[first]] = False
            pending = pending[left]
            slot[pending] = (slot[pending] + 1) & mask
        self.count += len(keys)
