"""Tokenizers trained on a corpus, and the workspace's named tokenizers (checkpoints/tokenizers/NAME/).

Shared by `slm tokenize`, the Trainer (when a run trains its own) and the studio's Tokenizer section.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

from core import atomic
from core.data.corpus import Corpus, ProgressFn
from core.data.mixture import Source, resolve_mixture
from core.tokenizer.bpe import Tokenizer, train_tokenizer
from core.workspace import Workspace, check_name

TRAIN_CHARS = 200 << 20  # a tokenizer learns from at most this much of the training split, shared by the sources
MEASURE_CHARS = 2 << 20  # validation text measured for bytes per token
PROGRESS_INTERVAL = 0.1  # seconds between progress reports while text is read


def take(texts: Iterable[str], limit: int) -> Iterator[str]:
    """The first pieces of a text stream, up to about `limit` characters."""
    total = 0
    for text in texts:
        if total >= limit:
            return
        total += len(text)
        yield text


def _reporting(texts: Iterable[str], total: int, on_progress: ProgressFn | None) -> Iterator[str]:
    """Pass `texts` through, reporting ("read", chars, total) a few times a second, then ("merge", 0, 0)."""
    done, last = 0, 0.0
    for text in texts:
        done += len(text)
        if on_progress and time.monotonic() - last >= PROGRESS_INTERVAL:
            on_progress("read", min(done, total), total)
            last = time.monotonic()
        yield text
    if on_progress:
        on_progress("merge", 0, 0)


def train_on_corpus(
    corpus: Corpus,
    vocab_size: int,
    min_frequency: int,
    val_fraction: float,
    seed: int = 0,
    on_progress: ProgressFn | None = None,
    cancelled: Callable[[], bool] | None = None,
    sources: list[Source] | None = None,
) -> Tokenizer:
    """Train on the corpus's training split only: from each source (default: those of data/mix.json, else by
    size) the start of its text, up to its share of TRAIN_CHARS characters, so that a big source does not
    crowd out the others and a big folder trains its tokenizer in bounded time."""
    sources = sources if sources is not None else resolve_mixture(corpus, {})[0]
    chars = {f.path: f.chars for f in corpus.files}
    quotas = [(set(s.files), int(TRAIN_CHARS * s.share)) for s in sources]
    total = sum(min(q, int(sum(chars[p] for p in files) * (1 - val_fraction))) for files, q in quotas)
    texts = chain.from_iterable(take(corpus.texts("train", val_fraction, seed, files), q) for files, q in quotas if q)
    return train_tokenizer(_reporting(texts, total, on_progress), vocab_size, min_frequency, cancelled=cancelled)


def measure(tokenizer: Tokenizer, corpus: Corpus, val_fraction: float, seed: int = 0) -> float:
    """Bytes per token on (the start of) the validation split."""
    return tokenizer.bytes_per_token(take(corpus.texts("val", val_fraction, seed), MEASURE_CHARS))


def save_named(workspace: Workspace, name: str, tokenizer: Tokenizer, info: dict[str, Any]) -> Path:
    """Save as checkpoints/tokenizers/NAME/tokenizer.json with an info.json beside it; returns the path."""
    out = workspace.tokenizers_dir / check_name(name, "tokenizer")
    tokenizer.save(out / "tokenizer.json")
    atomic.write_json(out / "info.json", {"name": name, "vocab_size": tokenizer.vocab_size, **info})
    return out / "tokenizer.json"


def read_info(path: Path) -> dict[str, Any]:
    """The info.json next to a named tokenizer ({} when missing or unreadable)."""
    try:
        info = json.loads((Path(path).parent / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
