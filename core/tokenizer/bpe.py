"""Byte-level BPE tokenizers (Hugging Face `tokenizers`): training, loading, and UTF-8-safe decoding.

Every byte is in the vocabulary and there is no normalisation, so decoding an encoding gives back
the exact input text, whatever Unicode it holds.
"""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from core import atomic
from core.errors import Cancelled, SLMError

EOT = "<|endoftext|>"
CHAT_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
SPECIAL_TOKENS = [EOT, *CHAT_TOKENS]
# special tokens that end a generation, ours and those of common imported models (as llama.cpp's list)
END_OF_TEXT = [EOT, "</s>", "<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<eos>"]
BYTE_TOKENS = 256


def _byte_decoder() -> dict[str, int]:
    """The GPT-2 byte-level alphabet: each of the 256 bytes is shown as one printable character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


_BYTES_OF_CHAR = _byte_decoder()


class Tokenizer:
    """A trained byte-level BPE tokenizer plus what the engine needs to know about it."""

    def __init__(self, hf: HFTokenizer, path: Path | None = None) -> None:
        self.hf = hf
        self.path = path
        self.vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self.special_ids = {t: i for t in SPECIAL_TOKENS if (i := hf.token_to_id(t)) is not None}
        self.eot_id = self.special_ids.get(EOT)
        self.stop_ids = {i for i, t in hf.get_added_tokens_decoder().items() if t.special and t.content in END_OF_TEXT}
        self._token_bytes = [self._bytes_of(i) for i in range(self.vocab_size)]
        self._plain: HFTokenizer | None = None  # a copy that reads special-token text as plain text

    # -- loading and saving --------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | str) -> Tokenizer:
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise SLMError(f"tokenizer {path} does not exist")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:
            raise SLMError(f"{path} is not a valid tokenizer.json ({str(e).splitlines()[0]})") from None
        return cls(hf, path)

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        return cls(HFTokenizer.from_str(text))

    def to_json(self) -> str:
        return self.hf.to_str()

    def save(self, path: Path) -> None:
        atomic.write_text(path, self.to_json())
        self.path = path

    @property
    def hash(self) -> str:
        """A short content hash that names this exact vocabulary and merge list."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()[:16]

    # -- encoding and decoding -----------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_text(self, text: str) -> list[int]:
        """Ids of `text` as plain text: a special token's text in it (say "<|end|>") is spelled in ordinary
        tokens, never turned into the special token, so message content cannot imitate the chat template."""
        if self._plain is None:
            plain = HFTokenizer.from_str(self.to_json())
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (a special token: its text in UTF-8)."""
        return self._token_bytes[token_id]

    def _bytes_of(self, token_id: int) -> bytes:
        token = self.hf.id_to_token(token_id) or ""
        if token in self.special_ids or not all(c in _BYTES_OF_CHAR for c in token):
            return token.encode("utf-8")
        return bytes(_BYTES_OF_CHAR[c] for c in token)

    def byte_lengths(self) -> list[int]:
        """Bytes per token id; special tokens count 0 so that bits-per-byte measures text only."""
        special = set(self.special_ids.values())
        return [0 if i in special else len(b) for i, b in enumerate(self._token_bytes)]

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def bytes_per_token(self, texts: Iterable[str]) -> float:
        """Average UTF-8 bytes per token over `texts`: how much text each token carries."""
        n_bytes = n_tokens = 0
        for text in texts:
            n_bytes += len(text.encode("utf-8"))
            n_tokens += len(self.encode(text))
        return n_bytes / max(n_tokens, 1)


class StreamDecoder:
    """Turns token ids into text pieces one at a time, never splitting a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def min_vocab_size() -> int:
    return BYTE_TOKENS + len(SPECIAL_TOKENS) + 1


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    special_tokens: list[str] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> Tokenizer:
    """Learn a byte-level BPE vocabulary of `vocab_size` tokens (bytes and special tokens included)."""
    special_tokens = SPECIAL_TOKENS if special_tokens is None else special_tokens
    if vocab_size < min_vocab_size():
        raise SLMError(
            f"vocab size {vocab_size} is too small: it needs at least {min_vocab_size()} "
            f"(256 byte tokens, {len(special_tokens)} special tokens and one merge)"
        )
    if vocab_size > 2**32 - 1:
        raise SLMError(f"vocab size {vocab_size} is too large")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )

    def checked(items: Iterable[str]) -> Iterator[str]:
        for i, text in enumerate(items):
            if cancelled is not None and i % 64 == 0 and cancelled():
                raise Cancelled("tokenizer training cancelled")
            yield text

    seen = False

    def non_empty(items: Iterable[str]) -> Iterator[str]:
        nonlocal seen
        for text in items:
            seen = seen or bool(text)
            yield text

    hf.train_from_iterator(non_empty(checked(texts)), trainer=trainer)
    if not seen:
        raise SLMError("cannot train a tokenizer on no text: the selected data is empty")
    return Tokenizer(hf)
