"""Sampling settings: how the next token is picked. Torch-free, so the studio can hold them cheaply."""

from __future__ import annotations

from dataclasses import dataclass

from core.config import option
from core.errors import check

DTYPES = ("f32", "int8")  # generation's weight types (core/chat/quantize.py); f32 is exact


@dataclass
class SamplingSettings:
    """How to pick each next token. temperature 0 is greedy; top_k 0 and top_p 1 switch those off."""

    temperature: float = option(0.8, "0 = greedy")
    top_k: int = option(50, "sample from the k likeliest tokens; 0 = off")
    top_p: float = option(1.0, "nucleus sampling; 1 = off")
    repetition_penalty: float = option(1.0, "> 1 discourages repeats")
    max_tokens: int = option(200, "new tokens at most")
    stop: list[str] = option(factory=list, help="stop when this text appears (repeatable)", repeat=True)
    seed: int | None = option(None, "sampling seed (default: random)")

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.max_tokens >= 0, "max_tokens must be >= 0"),
        ]
        check("sampling setting", checks)
