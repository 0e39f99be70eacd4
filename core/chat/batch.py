"""Many generations at once: continuous batching over a fixed number of rows.

A `Batch` holds up to `rows` sequences that decode together, one batched forward per step (see
`core.model.BatchDecoder`); a sequence joins at the next step once its prompt is in the cache and
leaves the step it ends. Prompts are prefilled `chunk` tokens at a time between decode steps, so a long
prompt delays the others by one chunk per step, never by its whole length. Each sequence keeps its own
sampling settings, seed, stop strings and text stream; what it writes goes to its `on_text` callback.
`Generator.samples` drives a Batch directly; the server's scheduler drives one from a thread.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from core.chat.generate import Generator, TextStream, fit_prompt, sample_next, sample_rows
from core.chat.sampling import SamplingSettings
from core.model import BatchDecoder, Decoder, KVCache


@dataclass(eq=False)
class Sequence:
    """One generation in a batch: its request, what it has made so far, and how it ended."""

    prompt: list[int]
    settings: SamplingSettings
    on_text: Callable[[Sequence, str], None] = lambda seq, piece: None  # called on the batch's thread
    on_done: Callable[[Sequence], None] = lambda seq: None
    cancelled: Callable[[], bool] = lambda: False
    ids: list[int] = field(default_factory=list)  # the context: prompt, then the tokens made
    text: TextStream | None = None
    rng: torch.Generator = field(default_factory=torch.Generator)  # seeded when the batch takes it
    sampled: int = 0  # tokens picked, end-of-text included
    prompt_tokens: int = 0
    truncated: int = 0  # prompt tokens dropped from the left to fit the context
    error: str = ""
    output: str = ""  # the text so far
    submitted: float = field(default_factory=time.perf_counter)
    first_token: float = 0.0  # perf_counter when the first token was picked

    @property
    def finish_reason(self) -> str:
        return self.text.finish_reason if self.text is not None else ""

    @property
    def new_tokens(self) -> int:
        return self.text.new_tokens if self.text is not None else 0


class Batch:
    """Up to `rows` sequences decoding together on one Generator's model (see the module docstring)."""

    def __init__(
        self, generator: Generator, rows: int, chunk: int = 64, on_finish: Callable[[Sequence], None] | None = None
    ) -> None:
        self.generator, self.rows, self.chunk = generator, rows, chunk
        self.on_finish = on_finish  # called for every sequence that ends, before its own on_done
        config, device = generator.config, generator.device
        dtype = next(generator.model.parameters()).dtype
        self.cache = KVCache(config, rows, config.context, device, dtype)
        self.staging = KVCache(config, 1, config.context, device, dtype)  # the prompt being prefilled
        self.decoder = BatchDecoder(generator.model, self.cache)
        self.alone = Decoder(generator.model, self.cache)  # one row active: the single-sequence step, fewer calls
        self.active: list[Sequence] = []  # row r holds active[r]
        self.positions: list[int] = []  # tokens in the cache per row
        self.prefill: deque[tuple[Sequence, list[int]]] = deque()  # waiting for the cache, with their ids
        self.done = 0  # tokens of the staged prompt already in the staging cache

    def __len__(self) -> int:
        """Sequences in the batch: decoding or waiting for their prompt to be read."""
        return len(self.active) + len(self.prefill)

    def has_room(self) -> bool:
        return len(self) < self.rows

    def add(self, seq: Sequence) -> None:
        """Take `seq` (see `has_room`): its prompt is read in the coming steps, then it decodes."""
        gen = self.generator
        seq.ids, seq.truncated = fit_prompt(list(seq.prompt) or [gen.tokenizer.eot_id or 0], gen.config.context)
        seq.prompt_tokens = len(seq.ids) if seq.prompt else 0
        seq.text = TextStream(gen.tokenizer, gen.stop_ids, seq.settings.stop)
        seed = seq.settings.seed
        seq.rng.manual_seed(seed if seed is not None else torch.seed() % 2**63)
        if seq.settings.max_tokens == 0:
            self._finish(seq, "length")
        else:
            self.prefill.append((seq, seq.ids))

    @torch.inference_mode()
    def step(self) -> None:
        """One round: a chunk of the next waiting prompt, then one token for every decoding sequence."""
        for r in reversed(range(len(self.active))):  # a client gone frees its row before the step
            if self.active[r].cancelled():
                self._finish(self._leave(r), "cancelled")
        if self.prefill:
            self._prefill_chunk()
        if self.active:
            logits = self._decode()
            for r in range(len(self.active)):
                self.positions[r] += 1
            self._pick_all(logits)

    def fail(self, message: str) -> None:
        """End every sequence with `message` as its error (the model step raised)."""
        for seq in [*self.active, *(seq for seq, _ in self.prefill)]:
            seq.error = message
            self._finish(seq, "error")
        self.active, self.positions, self.done = [], [], 0
        self.prefill.clear()

    # -- inside a step -------------------------------------------------------------------------

    def _decode(self) -> torch.Tensor:
        """The next-token logits (rows, vocab) of every decoding sequence, their last tokens fed."""
        if len(self.active) == 1:
            self.cache.pos = self.positions[0]
            return self.alone.step(self.active[0].ids[-1])[None].cpu()
        device = self.generator.device
        tokens = torch.tensor([seq.ids[-1] for seq in self.active], device=device)
        return self.decoder.step(tokens, torch.tensor(self.positions, device=device)).cpu()

    def _prefill_chunk(self) -> None:
        seq, ids = self.prefill[0]
        if seq.cancelled():
            self.prefill.popleft()
            self.done = 0
            self._finish(seq, "cancelled")
            return
        staging, model = self.staging, self.generator.model
        staging.pos = self.done
        piece = ids[self.done : self.done + self.chunk]
        logits, _ = model(torch.tensor([piece], device=self.generator.device), cache=staging)
        self.done += len(piece)
        if self.done < len(ids):
            return
        self.prefill.popleft()
        self.done = 0
        row = len(self.active)
        self.cache.copy_row(staging, row, 0, len(ids))
        self.active.append(seq)
        self.positions.append(len(ids))
        self._take(row, sample_next(logits[0, -1].cpu(), seq.settings, self._history(seq), seq.rng))

    def _pick_all(self, logits: torch.Tensor) -> None:
        """Sample the next token of every row from its logits (rows, vocab); ended sequences leave."""
        histories = [self._history(seq) for seq in self.active]
        tokens = sample_rows(logits, [seq.settings for seq in self.active], histories, [seq.rng for seq in self.active])
        for row in reversed(range(len(self.active))):
            self._take(row, tokens[row])

    def _history(self, seq: Sequence) -> torch.Tensor | None:
        """The context a repetition penalty looks at (None without one)."""
        if seq.settings.repetition_penalty == 1.0:
            return None
        return torch.tensor(seq.ids[-self.generator.config.context :])

    def _take(self, row: int, token: int) -> None:
        """The sequence in `row` picked `token`: its text goes on, or it leaves the batch."""
        seq = self.active[row]
        ctx = self.generator.config.context
        seq.sampled += 1
        if seq.sampled == 1:
            seq.first_token = time.perf_counter()
        assert seq.text is not None
        piece = seq.text.push(token)
        self._emit(seq, piece)
        seq.ids.append(token)
        if seq.text.finish_reason:
            self._finish(self._leave(row), seq.text.finish_reason)
        elif seq.sampled >= seq.settings.max_tokens:
            self._finish(self._leave(row), "length")
        elif self.positions[row] >= ctx:  # full: read the newest half of the context again, then go on
            self.prefill.append((self._leave(row), seq.ids[-(ctx // 2) :]))

    def _leave(self, row: int) -> Sequence:
        """Take the sequence in `row` out; the last row moves into its place."""
        seq, last = self.active[row], len(self.active) - 1
        if row != last:
            self.cache.copy_row(self.cache, row, last, self.positions[last])
            self.active[row], self.positions[row] = self.active[last], self.positions[last]
        self.active.pop()
        self.positions.pop()
        return seq

    def _finish(self, seq: Sequence, reason: str) -> None:
        assert seq.text is not None
        self._emit(seq, seq.text.finish(reason) if reason != seq.text.finish_reason else "")
        if self.on_finish is not None:
            self.on_finish(seq)
        seq.on_done(seq)

    @staticmethod
    def _emit(seq: Sequence, piece: str) -> None:
        if piece:
            seq.output += piece
            seq.on_text(seq, piece)


def run_together(generator: Generator, sequences: list[Sequence], rows: int | None = None) -> None:
    """Generate every sequence to its end on this thread, `rows` (default: all) at a time."""
    batch = Batch(generator, rows or len(sequences) or 1)
    waiting = deque(sequences)
    while waiting or len(batch):
        while waiting and batch.has_room():
            batch.add(waiting.popleft())
        batch.step()


def samples(generator: Generator, prompt: list[int], settings: SamplingSettings, n: int) -> list[Sequence]:
    """`n` continuations of `prompt` decoded as one batch; with a seed, sample i uses seed + i."""
    seeds = [None if settings.seed is None else settings.seed + i for i in range(n)]
    sequences = [Sequence(prompt, replace(settings, seed=seed)) for seed in seeds]
    run_together(generator, sequences)
    return sequences
