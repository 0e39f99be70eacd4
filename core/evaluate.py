"""Held-out evaluation: loss, perplexity and bits per byte.

Bits per byte divides the summed loss (in bits) by the UTF-8 bytes the target tokens stand for, so
it does not depend on the tokenizer: runs with different vocabularies compare. Special tokens carry
no bytes and are left out of it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.device import autocast
from core.errors import SLMError
from core.model import GPT
from core.tokenizer.bpe import Tokenizer


@dataclass
class EvalResult:
    loss: float  # mean nats per token
    ppl: float
    bpb: float
    tokens: int
    bytes: int = 0  # of text the scored tokens stand for
    sources: dict[str, float] = field(default_factory=dict)  # bits per byte of each source, when there are several


@torch.no_grad()
def evaluate_tokens(
    model: GPT,
    tokens: np.ndarray,
    byte_lengths: torch.Tensor,
    batch_size: int,
    max_tokens: int | None = None,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Score consecutive windows of `tokens` (each predicts `context` next tokens) from the start."""
    context = model.config.context
    n = len(tokens)
    if n < 2:
        raise SLMError("too little text to evaluate: it needs at least two tokens")
    span = min(context, n - 1)
    targets_wanted = min(max_tokens or n, n - 1)
    starts = list(range(0, n - 1, span))
    starts = [s for s in starts if s + span < n][: max(1, math.ceil(targets_wanted / span))] or [0]

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(starts), batch_size):
            rows = [np.asarray(tokens[s : s + span + 1], dtype=np.int64) for s in starts[i : i + batch_size]]
            batch = torch.from_numpy(np.stack(rows))
            yield batch[:, :-1], batch[:, 1:]

    return score_batches(model, batches(), byte_lengths, amp_dtype)


@torch.no_grad()
def score_batches(
    model: GPT,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    byte_lengths: torch.Tensor,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Loss, perplexity and bits per byte over (inputs, targets) batches; targets of -1 are not scored."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    nats, count, text_nats, text_bytes = 0.0, 0, 0.0, 0
    byte_lengths = byte_lengths.to(device)
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            with autocast(device, amp_dtype):
                _, losses = model(x, y, reduction="none")
            scored = y.reshape(-1) >= 0
            losses = losses.float().view(-1)[scored]
            weights = byte_lengths[y.reshape(-1)[scored]]
            nats += float(losses.sum())
            count += int(scored.sum())
            text_nats += float((losses * (weights > 0)).sum())
            text_bytes += int(weights.sum())
    finally:
        model.train(was_training)
    if count == 0:
        raise SLMError("nothing to evaluate: no scored tokens")
    loss = nats / count
    bpb = text_nats / math.log(2) / max(text_bytes, 1)
    return EvalResult(loss=loss, ppl=math.exp(min(loss, 50.0)), bpb=bpb, tokens=count, bytes=text_bytes)


def evaluate_sources(
    model: GPT,
    tokens: np.ndarray,
    spans: dict[str, list[tuple[int, int]]],
    byte_lengths: torch.Tensor,
    batch_size: int,
    max_tokens: int,
    amp_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Score each source's part of `tokens` (`spans`: where it lies) on an equal share of `max_tokens` (one
    window at least), and all of them pooled; with a single source, the split from its start as
    `evaluate_tokens` scores it."""
    if len(spans) <= 1:
        return evaluate_tokens(model, tokens, byte_lengths, batch_size, max_tokens, amp_dtype)
    each = max(1, max_tokens // len(spans))
    results = {}
    for name, ranges in spans.items():
        part = first_tokens(tokens, ranges, each + model.config.context + 1)
        if len(part) >= 2:
            results[name] = evaluate_tokens(model, part, byte_lengths, batch_size, each, amp_dtype)
    scored = sum(r.tokens for r in results.values())
    loss = sum(r.loss * r.tokens for r in results.values()) / scored
    text_bytes = sum(r.bytes for r in results.values())
    bpb = sum(r.bpb * r.bytes for r in results.values()) / max(text_bytes, 1)
    return EvalResult(loss, math.exp(min(loss, 50.0)), bpb, scored, text_bytes, {n: r.bpb for n, r in results.items()})


def first_tokens(tokens: np.ndarray, spans: list[tuple[int, int]], limit: int) -> np.ndarray:
    """Up to `limit` tokens from the spans of `tokens`, in order."""
    parts, left = [], limit
    for start, end in spans:
        if left <= 0:
            break
        parts.append(np.asarray(tokens[start : min(end, start + left)]))
        left -= len(parts[-1])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def evaluate_file(
    model: GPT, tokenizer: Tokenizer, path: Path, batch_size: int = 8, max_tokens: int | None = None
) -> EvalResult:
    """Evaluate a model on a UTF-8 text file (the whole file unless `max_tokens` is given)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SLMError(f"{path} does not exist") from None
    except UnicodeDecodeError:
        raise SLMError(f"{path} is not UTF-8 text") from None
    ids = tokenizer.encode(text)
    if tokenizer.eot_id is not None:
        ids = [tokenizer.eot_id, *ids]  # the start of a document, as in training
    return evaluate_tokens(
        model, np.asarray(ids, dtype=np.int64), torch.tensor(tokenizer.byte_lengths()), batch_size, max_tokens
    )
