"""Token files and the batches drawn from them.

`core.train.token_cache.encode_corpus` writes a corpus's split as flat `uint16`/`uint32` token files; `Batches`
draws random training windows from them through `numpy.memmap`, reproducibly: its generator is the data
position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.config import TrainConfig
from core.data.mixture import Source
from core.errors import SLMError
from core.train.distributed import Dist


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


@dataclass
class TokenFile:
    """A flat file of token ids; documents are separated by the end-of-text token."""

    path: Path
    dtype: str
    tokens: int

    def array(self) -> np.memmap:
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", shape=(self.tokens,))


Span = tuple[int, int]  # [start, end) in a token file


@dataclass
class TokenData:
    """The encoded train and validation splits of a corpus, as written in the token cache."""

    train: TokenFile
    val: TokenFile
    corpus: str  # corpus fingerprint
    tokenizer: str  # tokenizer hash
    files: list[tuple[str, int, int]]  # (path, train tokens, val tokens) of each file, in the files' order

    def describe(self) -> dict:
        return {"train_tokens": self.train.tokens, "val_tokens": self.val.tokens, "corpus": self.corpus}

    def spans(self, side: str, sources: list[Source]) -> dict[str, list[Span]]:
        """Where each source's tokens lie in one side's file, in order; neighbouring files of one source make
        one span."""
        source_of = {path: s.name for s in sources for path in s.files}
        found: dict[str, list[Span]] = {}
        at = 0
        for path, train, val in self.files:
            n = train if side == "train" else val
            if n:
                spans = found.setdefault(source_of[path], [])
                if spans and spans[-1][1] == at:
                    spans[-1] = (spans[-1][0], at + n)
                else:
                    spans.append((at, at + n))
            at += n
        return found


# --- batches ------------------------------------------------------------------------------------


class Batches:
    """Random training windows, reproducible: the generator's state is the data position."""

    def __init__(self, tokens: TokenFile, batch_size: int, context: int, seed: int, device: torch.device) -> None:
        if tokens.tokens < context + 1:
            raise SLMError(
                f"the training split has only {tokens.tokens} tokens, fewer than the context ({context}) + 1: "
                "add text or lower --context"
            )
        self.tokens, self.batch_size, self.context, self.device = tokens, batch_size, context, device
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.tokens.array()  # a fresh memmap each batch keeps memory flat (as nanoGPT does)
        starts = self.starts(len(data) - self.context)
        rows = np.stack([data[s : s + self.context + 1] for s in starts]).astype(np.int64)
        batch = torch.from_numpy(rows)
        if self.device.type == "cuda":
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        else:
            batch = batch.to(self.device)
        return batch[:, :-1], batch[:, 1:]

    def starts(self, limit: int) -> np.ndarray:
        """The rows' first tokens, each below `limit`."""
        return torch.randint(limit, (self.batch_size,), generator=self.generator).numpy()


class MixedBatches(Batches):
    """Random training windows drawn from sources in given shares: each row picks a source by its share, then a
    start uniformly among that source's tokens. A window that starts near a source's end runs on into the next
    file, as windows have always run across documents."""

    def __init__(
        self,
        tokens: TokenFile,
        spans: dict[str, list[Span]],
        shares: dict[str, float],
        batch_size: int,
        context: int,
        seed: int,
        device: torch.device,
    ) -> None:
        super().__init__(tokens, batch_size, context, seed, device)
        for name, share in shares.items():
            if share > 0 and not spans.get(name):
                raise SLMError(
                    f"source {name} has no training tokens (its text all went to validation): add text to it, "
                    "give it weight 0 or lower --val-fraction"
                )
        self.names = [name for name, share in shares.items() if share > 0]
        self.shares = torch.tensor([shares[n] for n in self.names], dtype=torch.float64)
        self.spans = [np.asarray(spans[n], dtype=np.int64).reshape(-1, 2) for n in self.names]
        self.ends = [np.cumsum(s[:, 1] - s[:, 0]) for s in self.spans]  # tokens of the source up to each span's end

    def starts(self, limit: int) -> np.ndarray:
        picks = torch.multinomial(self.shares, self.batch_size, replacement=True, generator=self.generator).tolist()
        offsets = torch.rand(self.batch_size, generator=self.generator, dtype=torch.float64).tolist()
        starts = []
        for source, u in zip(picks, offsets, strict=True):
            ends, spans = self.ends[source], self.spans[source]
            at = min(int(u * ends[-1]), int(ends[-1]) - 1)  # the source's token number `at`
            span = int(np.searchsorted(ends, at, side="right"))
            starts.append(spans[span, 0] + at - (ends[span] - (spans[span, 1] - spans[span, 0])))
        return np.minimum(np.asarray(starts, dtype=np.int64), limit - 1)


def training_batches(
    tokens: TokenFile, spans: dict[str, list[Span]], sources: list[Source], cfg: TrainConfig, context: int,
    device: torch.device,
) -> Batches:  # fmt: skip
    """Windows drawn uniformly (without `cfg.mix`: each source in proportion to its size), or from the sources
    (`spans`: where each lies) in their shares."""
    if not cfg.mix:
        return Batches(tokens, cfg.batch_size, context, cfg.seed + 1, device)
    shares = {s.name: s.share for s in sources}
    return MixedBatches(tokens, spans, shares, cfg.batch_size, context, cfg.seed + 1, device)


class RankSlice:
    """This rank's rows of each global batch. Every rank draws the same global batch (one shared data
    position) and keeps its own slice, so N ranks train on what one process with N times the batch would."""

    def __init__(self, batches: Any, dist: Dist) -> None:
        self.batches, self.dist = batches, dist
        self.rows = batches.batch_size
        batches.batch_size *= dist.world

    def __getattr__(self, name: str) -> Any:
        return getattr(self.batches, name)

    def next(self) -> tuple[torch.Tensor, ...]:
        start = self.dist.rank * self.rows
        return tuple(t[start : start + self.rows] for t in self.batches.next())
