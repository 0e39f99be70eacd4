"""Fast corpus encoding: the same token ids as Hugging Face `encode_batch`, several times sooner.

A byte-level BPE tokenizer splits text into pre-tokens with GPT-2's pattern and encodes each one alone. In
that pattern a space followed by a character that is not whitespace always starts a pre-token (" word",
" 42", " ,"), and so does the character after a line break that stands alone between two such characters: text
cut there gives chunks whose ids never depend on their neighbours. `WordEncoder` cuts text there, encodes each
distinct chunk once through the tokenizer itself, and looks every later one up: corpus text repeats its words,
so nearly all the work becomes a lookup per word and one numpy gather per batch. Text is cut and looked up on its
UTF-8 bytes in numpy (core/tokenizer/chunks.py), several times sooner than `encode_batch` on one core; text
that holds an added token (`<|endoftext|>`) is cut on its characters (mostly with `str.split`) and looked up
in a dictionary. Python's `\\s` holds every character the tokenizer's `\\s` does (and `\\x1c`-`\\x1f`
besides), so a cut either path makes is always one the tokenizer makes too.

A tokenizer of another kind (an imported SentencePiece one, a normaliser, added tokens that strip spaces) is
encoded by the tokenizer itself. `Encoder` runs a `WordEncoder` in each of several processes for big corpora
(plain `python -m core.tokenizer.encoder` children that read texts from a pipe and write ids back).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tokenizers import Tokenizer as HFTokenizer

from core.errors import SLMError
from core.tokenizer.chunks import SHORT, ChunkTable, cut, distinct, pack

CUT = re.compile(r" (?=\S)")  # the space that starts a pre-token; chunks after the first keep it implicitly
SPACE_THEN_SPACE = re.compile(r" \s| $")  # where a plain split on spaces would cut wrongly
HEAD = "\t"  # marks a key that is a text's first chunk or an added token (other keys never start with space)
MAX_KEYS = 2_000_000  # distinct chunks kept before the table starts afresh (bounds memory)


def splits_like_gpt2(spec: dict[str, Any]) -> bool:
    """Whether a tokenizer.json (as a dict) pre-tokenizes with GPT-2's byte-level pattern and nothing else."""
    pre = spec.get("pre_tokenizer") or {}
    model = spec.get("model") or {}
    plain_added = all(
        isinstance(t, dict) and not (t.get("lstrip") or t.get("rstrip") or t.get("single_word"))
        for t in spec.get("added_tokens") or []
    )
    return (
        spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True) is True
        and pre.get("add_prefix_space") is False
        and model.get("type") == "BPE"
        and model.get("dropout") is None
        and plain_added
    )


class WordEncoder:
    """Encodes batches of texts as `HFTokenizer.encode_batch` does, each distinct chunk once."""

    def __init__(self, tokenizer_json: str) -> None:
        self.hf = HFTokenizer.from_str(tokenizer_json)
        spec = json.loads(tokenizer_json)
        self.fast = splits_like_gpt2(spec)
        added = sorted({t["content"] for t in spec.get("added_tokens") or [] if t.get("content")}, key=len)
        self.added = re.compile("(" + "|".join(re.escape(t) for t in reversed(added)) + ")") if added else None
        self.added_utf8 = [t.encode() for t in added]
        self._reset()

    def _reset(self) -> None:
        self.index: dict[str | bytes, int] = {}  # text-path keys and long chunks -> row of the table
        self.chunks = ChunkTable()  # short chunks -> row
        self.starts = np.zeros(0, np.int64)  # row -> where its ids start in `flat`
        self.lengths = np.zeros(0, np.int64)  # row -> how many
        self.flat = np.zeros(0, np.uint32)

    @property
    def size(self) -> int:
        """How many distinct chunks the table holds."""
        return len(self.lengths)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of all `texts` one after another (uint32), and how many each text gave."""
        if not self.fast:
            return _joined([e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)])
        return self.encode_utf8([t.encode() for t in texts])

    def encode_utf8(self, texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """`encode` for texts in UTF-8. Texts that hold no added token are cut on their bytes
        (core/tokenizer/chunks.py); others on their characters (`_text_rows`)."""
        if not self.fast:
            return self.encode([t.decode() for t in texts])
        if self.size > MAX_KEYS:
            self._reset()
        bytewise = [not any(a in t for a in self.added_utf8) for t in texts]
        if all(bytewise):
            rows, counts = self._chunk_rows(texts)
        elif not any(bytewise):
            rows, counts = self._text_rows([t.decode() for t in texts])
        else:
            rows, counts = self._mixed_rows(texts, bytewise)
        per_key = self.lengths[rows]
        ends = np.cumsum(per_key)
        total = int(ends[-1]) if len(ends) else 0
        offsets = np.arange(total) - np.repeat(ends - per_key, per_key) + np.repeat(self.starts[rows], per_key)
        key_ends = np.concatenate([[0], ends])
        bounds = np.cumsum(counts)
        return self.flat[offsets], key_ends[bounds] - key_ends[bounds - counts]

    def _chunk_rows(self, texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """The table rows of the texts' chunks, cut on their bytes, and how many chunks each text has."""
        buffer = b"".join(texts)
        text_ends = np.cumsum([len(t) for t in texts], dtype=np.int64)
        starts = cut(buffer, text_ends)
        lengths = np.diff(np.append(starts, len(buffer)))
        counts = np.bincount(np.searchsorted(text_ends, starts, side="right"), minlength=len(texts))
        rows = np.empty(len(starts), np.int64)
        short = lengths <= SHORT
        keys = pack(buffer, starts[short], lengths[short])
        found = self.chunks.find(keys)
        if (new := found < 0).any():
            fresh = distinct(keys[new])
            raw = fresh.view(np.uint8).reshape(-1, 16)
            self.chunks.add(fresh, self._learn([bytes(r[: r[15]]).decode() for r in raw]))
            found[new] = self.chunks.find(keys[new])
        rows[short] = found
        long = [buffer[a : a + n] for a, n in zip(starts[~short].tolist(), lengths[~short].tolist(), strict=True)]
        rows[~short] = self._rows(long)
        return rows, counts

    def _text_rows(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The table rows of the texts' chunks, cut on their characters, and how many chunks each text has."""
        keys: list[str] = []
        counts = np.zeros(len(texts), np.int64)
        for n, text in enumerate(texts):
            before = len(keys)
            for i, segment in enumerate(self.added.split(text) if self.added else [text]):
                if i % 2:  # an added token
                    keys.append(HEAD + segment)
                    continue
                for line in _lines(segment):
                    head, *rest = line.split(" ") if not SPACE_THEN_SPACE.search(line) else CUT.split(line)
                    if head:
                        keys.append(HEAD + head)
                    keys.extend(rest)
            counts[n] = len(keys) - before
        return self._rows(keys), counts

    def _mixed_rows(self, texts: list[bytes], bytewise: list[bool]) -> tuple[np.ndarray, np.ndarray]:
        """`_chunk_rows` for the bytewise texts, `_text_rows` for the others, put back in order."""
        parts = []
        for kind in (True, False):
            picked = [t for t, b in zip(texts, bytewise, strict=True) if b == kind]
            rows, counts = self._chunk_rows(picked) if kind else self._text_rows([t.decode() for t in picked])
            parts.append(iter(np.split(rows, np.cumsum(counts)[:-1])))
        per_text = [next(parts[0] if b else parts[1]) for b in bytewise]
        return np.concatenate(per_text), np.array([len(r) for r in per_text], np.int64)

    def _rows(self, keys: list[str] | list[bytes]) -> np.ndarray:
        """The rows of `index` keys, learning those it lacks: a str key is a chunk as the text path keeps it
        (HEAD, or else a space it dropped, before it), a bytes key a chunk's UTF-8."""
        new = list(set(keys).difference(self.index))
        if new:
            texts = [k.decode() if isinstance(k, bytes) else k[1:] if k[0] == HEAD else " " + k for k in new]
            self.index.update(zip(new, self._learn(texts).tolist(), strict=True))
        return np.fromiter(map(self.index.__getitem__, keys), np.int64, len(keys))

    def _learn(self, texts: list[str]) -> np.ndarray:
        """Encodes `texts` through the tokenizer into new rows of the table; their row numbers."""
        flat, lengths = _joined([e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)])
        first = self.size
        self.starts = np.concatenate([self.starts, len(self.flat) + np.cumsum(lengths) - lengths])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.flat = np.concatenate([self.flat, flat])
        return np.arange(first, self.size)


def _lines(text: str) -> list[str]:
    """`text` cut after each line break that stands alone between two characters that are not whitespace (it
    is a pre-token of its own, and the next character starts one), or between the two characters of such a
    "\\r\\n" (each is a pre-token), so a line's last and next line's first words are not one chunk."""
    parts = text.split("\n")
    lines, line = [], parts[0]
    for part in parts[1:]:
        starts_word = bool(part) and not part[0].isspace()
        if starts_word and line and not line[-1].isspace():
            lines.append(line + "\n")
            line = part
        elif starts_word and len(line) > 1 and line[-1] == "\r" and not line[-2].isspace():
            lines.append(line)
            line = "\n" + part
        else:
            line = f"{line}\n{part}"
    if line:
        lines.append(line)
    return lines


def _joined(encoded: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    return np.fromiter(itertools.chain.from_iterable(encoded), np.uint32, int(lengths.sum())), lengths


class _Worker:
    """One encoding process (`python -m core.tokenizer.encoder`) and the thread that feeds it jobs in order."""

    def __init__(self, tokenizer_json: str) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": root}
        command = [sys.executable, "-m", "core.tokenizer.encoder"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.jobs: queue.Queue[tuple[list[str], Future] | None] = queue.Queue()
        self.tokenizer_json = tokenizer_json
        self.thread = threading.Thread(target=self._feed, name="encoder-worker", daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        with contextlib.suppress(OSError):  # the process is gone: each job below says so
            _send(stdin, [self.tokenizer_json.encode()])
        while (job := self.jobs.get()) is not None:
            texts, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _send(stdin, [t.encode() for t in texts])
                ids, lengths = _receive(stdout)
                future.set_result((np.frombuffer(ids, np.uint32), np.frombuffer(lengths, np.int64)))
            except (OSError, ValueError) as e:
                future.set_exception(SLMError(f"an encoding process stopped ({e or 'no answer'})"))

    def stop(self, wait: bool) -> None:
        self.jobs.put(None)
        if not wait:
            self.process.kill()
        self.thread.join()
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _send(stream: BinaryIO, parts: list[bytes]) -> None:
    """One message: the count of parts, their lengths, then the parts."""
    stream.write(struct.pack("<q", len(parts)) + np.array([len(p) for p in parts], np.int64).tobytes())
    stream.write(b"".join(parts))
    stream.flush()


def _receive(stream: BinaryIO) -> list[bytes]:
    (count,) = struct.unpack("<q", _read(stream, 8))
    lengths = np.frombuffer(_read(stream, 8 * count), np.int64).tolist()
    body = _read(stream, sum(lengths))
    ends = np.cumsum([0, *lengths]).tolist()
    return [body[a:b] for a, b in itertools.pairwise(ends)]


def _read(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise ValueError("the process ended")
    return data


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The encoding process: a tokenizer.json, then batches of texts until the input ends; ids for each."""
    try:
        (tokenizer_json,) = _receive(stdin)
    except ValueError:
        return
    encoder = WordEncoder(tokenizer_json.decode())
    while True:
        try:
            texts = _receive(stdin)
        except ValueError:
            return
        ids, lengths = encoder.encode_utf8(texts)
        _send(stdout, [ids.astype(np.uint32).tobytes(), lengths.astype(np.int64).tobytes()])


class Encoder:
    """Encodes batches in `workers` processes (or in this one, for 1): `submit` returns a future of
    `WordEncoder.encode`'s result, and each process takes its jobs in turn. Use it as a context manager;
    leaving it stops the processes (at once, when an exception leaves it)."""

    def __init__(self, tokenizer_json: str, workers: int = 1) -> None:
        self.workers = max(1, workers)
        self._local = WordEncoder(tokenizer_json) if self.workers == 1 else None
        self._pool = [_Worker(tokenizer_json) for _ in range(self.workers)] if self.workers > 1 else []
        self._next = 0

    def submit(self, texts: list[str]) -> Future[tuple[np.ndarray, np.ndarray]]:
        future: Future[tuple[np.ndarray, np.ndarray]] = Future()
        if self._local is not None:
            future.set_result(self._local.encode(texts))
            return future
        self._pool[self._next % len(self._pool)].jobs.put((texts, future))
        self._next += 1
        return future

    def close(self, wait: bool = True) -> None:
        for worker in self._pool:
            worker.stop(wait)
        self._pool = []

    def __enter__(self) -> Encoder:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        self.close(wait=kind is None)


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
