"""The planner's rules: a recipe for a shape of the dial, and the constants bench/planner_sweep.py fitted.

The fitted figures and the sweep's table are in bench/PLANNER.md.
"""

from __future__ import annotations

import math
from typing import Any

from core.config import ModelConfig

TOKENS_PER_PARAM = 7.5  # training tokens per compute parameter at the sweep's optima (median of 5, bench/PLANNER.md)
TRAIN_SHARE = 0.92  # of a budget that goes to steps: evaluations, the sample and saves take the rest
DROPOUT, DROPOUT_FROM_EPOCHS = 0.1, 18  # plans of this many epochs or more train with dropout (bench/PLANNER.md):
# it lost 0.03-0.05 bits/byte at 10 and 16 epochs, and won 0.08 at 20 and 0.21 at 23 (depth 4, tinyshakespeare)
PROBE_DEPTHS = (2, 6)  # the shapes every plan measures first
COMPILE_FROM_MINUTES = {"cpu": 10.0, "cuda": 5.0}  # budgets from which compiling (CPU: ~7 s, 1.10x) pays off
BASE_WIDTH, BASE_LR, BASE_ROWS = 128, 3e-3, 16  # the toy preset's width, tuned peak lr and batch
VOCABS = ((8e6, 1024), (32e6, 2048), (128e6, 4096), (1e9, 8192))  # (corpus bytes below, vocabulary)


def peak_lr(width: int, rows: int = BASE_ROWS) -> float:
    """toy's tuned 3e-3 at 128 wide and 16 rows, falling as 1/sqrt(width), rising as sqrt(rows)."""
    return BASE_LR * math.sqrt(BASE_WIDTH / width * rows / BASE_ROWS)


def recipe(model: ModelConfig, rows: int = BASE_ROWS) -> dict[str, Any]:
    """Training settings for a shape of the dial (fields of TrainConfig); the planner sets the limits."""
    return dict(
        batch_size=rows,
        lr=float(f"{peak_lr(model.n_embd, rows):.2g}"),
        warmup_steps=50,
        weight_decay=0.1,
        eval_interval=200,
        eval_tokens=16384,
        sample_interval=1000,
    )


def vocab_for(corpus_bytes: int) -> tuple[int, str]:
    """The vocabulary for a corpus of `corpus_bytes`, and why: small corpora learn faster with small ones."""
    for below, vocab in VOCABS:
        if corpus_bytes < below:
            return vocab, f"a corpus under {below / 1e6:g} MB"
    return 16384, "a corpus of 1 GB or more"
