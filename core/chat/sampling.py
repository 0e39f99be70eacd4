"""Sampling settings: how the next token is picked. Torch-free, so the studio can hold them cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.errors import check


@dataclass
class SamplingSettings:
    """How to pick each next token. temperature 0 is greedy; top_k 0 and top_p 1 switch those off."""

    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    max_tokens: int = 200
    stop: list[str] = field(default_factory=list)
    seed: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (self.max_tokens >= 0, "max_tokens must be >= 0"),
        ]
        check("sampling setting", checks)
