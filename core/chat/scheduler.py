"""The server's decoding thread: requests wait in a bounded queue, join the batch as rows free, decode together.

`Scheduler.submit` hands over a request's sequences (one per choice) or raises `QueueFull` when more
would wait than the queue holds; the thread moves waiting sequences into the `Batch` whenever it has a
free row and runs its steps while anything is active. `Scheduler.metrics()` reads the counters the
server exposes at `/metrics`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from core.chat.batch import Batch, Sequence
from core.chat.generate import Generator
from core.config import ModelConfig

WINDOW_S = 10.0  # tokens per second are measured over this many seconds
KV_BUDGET = 1 << 30  # bytes of KV cache the default number of slots may take


def default_parallel(config: ModelConfig, device: torch.device) -> int:
    """Slots for a server: 16 on a GPU, 8 elsewhere, halved until their KV cache fits in 1 GiB."""
    slots = 16 if device.type == "cuda" else 8
    per_slot = 2 * config.n_layer * config.n_kv_head * config.head_dim * config.context * 4
    while slots > 1 and slots * per_slot > KV_BUDGET:
        slots //= 2
    return slots


class QueueFull(Exception):
    """More sequences would wait than the queue holds."""


@dataclass
class Metrics:
    """What the server has done so far, and what it is doing now."""

    requests: int = 0
    rejected: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    slots: int = 0
    busy_slots: int = 0
    queued: int = 0
    tokens_per_second: float = 0.0
    ttft_p50: float = 0.0  # seconds from submission to the first token, over the latest 1000 sequences
    ttft_p99: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: int = 0

    def prometheus(self) -> str:
        """The Prometheus text exposition format."""
        lines = []
        for name, kind, help_text, value in [
            ("requests_total", "counter", "Requests accepted.", self.requests),
            ("requests_rejected_total", "counter", "Requests refused because the queue was full.", self.rejected),
            ("prompt_tokens_total", "counter", "Prompt tokens read.", self.prompt_tokens),
            ("generated_tokens_total", "counter", "Tokens generated.", self.generated_tokens),
            ("slots", "gauge", "Sequences that can decode at once (--parallel).", self.slots),
            ("slots_busy", "gauge", "Sequences decoding or reading their prompt now.", self.busy_slots),
            ("queue_length", "gauge", "Sequences waiting for a slot.", self.queued),
            (
                "tokens_per_second",
                "gauge",
                f"Tokens generated per second over the last {WINDOW_S:g} s.",
                self.tokens_per_second,
            ),
        ]:
            lines += [f"# HELP slm_{name} {help_text}", f"# TYPE slm_{name} {kind}", f"slm_{name} {value:g}"]
        name = "slm_time_to_first_token_seconds"
        lines += [f"# HELP {name} Seconds from a request's arrival to its first token.", f"# TYPE {name} summary"]
        lines += [f'{name}{{quantile="0.5"}} {self.ttft_p50:g}', f'{name}{{quantile="0.99"}} {self.ttft_p99:g}']
        lines += [f"{name}_sum {self.ttft_sum:g}", f"{name}_count {self.ttft_count}"]
        return "\n".join(lines) + "\n"


class Scheduler:
    """Continuous batching for a server: `parallel` rows, at most `max_queue` sequences waiting."""

    def __init__(self, generator: Generator, parallel: int, max_queue: int, chunk: int = 64) -> None:
        self.batch = Batch(generator, parallel, chunk, on_finish=self._record)
        self.max_queue = max_queue
        self.waiting: deque[Sequence] = deque()
        self.wake = threading.Condition()
        self.closed = False
        self.counts = Metrics(slots=parallel)
        self.ttfts: deque[float] = deque(maxlen=1000)
        self.recent: deque[tuple[float, int]] = deque()  # (time, tokens) of each step in the window
        self.thread = threading.Thread(target=self._run, name="slm-decode", daemon=True)
        self.thread.start()

    def submit(self, sequences: list[Sequence]) -> None:
        """Queue one request's sequences; `QueueFull` when they would not fit in the free rows and queue."""
        with self.wake:
            free = self.batch.rows - len(self.batch)
            if self.closed or len(self.waiting) + len(sequences) - max(free, 0) > self.max_queue:
                self.counts.rejected += 1
                raise QueueFull
            self.waiting.extend(sequences)
            self.counts.requests += 1
            self.wake.notify()

    def metrics(self) -> Metrics:
        with self.wake:
            now, counts = time.perf_counter(), self.counts
            while self.recent and self.recent[0][0] < now - WINDOW_S:
                self.recent.popleft()
            counts.tokens_per_second = sum(n for _, n in self.recent) / WINDOW_S
            counts.busy_slots, counts.queued = len(self.batch), len(self.waiting)
            ordered = sorted(self.ttfts)
            if ordered:
                counts.ttft_p50 = ordered[len(ordered) // 2]
                counts.ttft_p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
            return Metrics(**vars(counts))

    def close(self) -> None:
        """Stop the thread; every sequence still waiting or decoding ends with an error."""
        with self.wake:
            self.closed = True
            self.wake.notify()
        self.thread.join(timeout=10)

    def _record(self, seq: Sequence) -> None:  # on the decoding thread, inside a step
        with self.wake:
            self.counts.prompt_tokens += seq.prompt_tokens
            self.counts.generated_tokens += seq.new_tokens
            if seq.first_token:
                self.ttfts.append(seq.first_token - seq.submitted)
                self.counts.ttft_sum += seq.first_token - seq.submitted
                self.counts.ttft_count += 1

    def _run(self) -> None:
        batch = self.batch
        while True:
            with self.wake:
                while not self.closed and not self.waiting and not len(batch):
                    self.wake.wait()
                if self.closed:
                    break
                while self.waiting and batch.has_room():
                    batch.add(self.waiting.popleft())
            decoding = len(batch.active)
            try:
                batch.step()
            except Exception as e:  # a failed step ends the sequences in it, not the server
                batch.fail(f"generation failed: {type(e).__name__}: {e}")
            with self.wake:
                self.recent.append((time.perf_counter(), decoding))
        with self.wake:
            waiting, self.waiting = list(self.waiting), deque()
        for seq in waiting:  # taken in only to be ended with the others
            batch.add(seq)
        batch.fail("the server is shutting down")
