"""Checkpoints for benchmarks that need a model but not a trained one: a preset's shape, random weights,
and a tokenizer trained on the shared corpus (or the sample corpus when it is missing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.checkpoint import save_checkpoint, weights_for_saving
from core.config import ModelConfig, preset, to_dict
from core.model import GPT
from core.tokenizer.bpe import train_tokenizer

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def random_checkpoint(folder: Path, preset_name: str = "toy", spread: float | None = None, **shape: Any) -> Path:
    """Save `folder/PRESET/final`: the preset's shape with `shape` overrides, seeded random weights.

    `spread`: draw the matrices from N(0, spread) and the norms near 1 instead of the training init,
    so that greedy choices are clear-cut (for comparing greedy continuations across runtimes).
    """
    if CORPUS.exists():
        text = CORPUS.read_text(encoding="utf-8")[: 1 << 20]
    else:
        from core.data.sample import write_sample_corpus

        text = "".join(p.read_text(encoding="utf-8") for p in write_sample_corpus(folder / "data"))[: 1 << 20]
    shape = {**preset(preset_name).model, **shape}
    tokenizer = train_tokenizer([text], shape["vocab_size"])
    config = ModelConfig(**{**shape, "vocab_size": tokenizer.vocab_size})
    torch.manual_seed(0)
    model = GPT(config)
    if spread is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(1 + 0.1 * torch.randn_like(p) if name.endswith("norm.weight") else spread * torch.randn_like(p))
    path = folder / preset_name / "final"
    save_checkpoint(path, weights_for_saving(model), {"model": to_dict(config)}, tokenizer)
    return path
