"""One size dial: a depth gives the whole model shape, as nanochat's `--depth` does.

Width is ASPECT x depth (toy's 4 x 128 is depth 4), heads are HEAD_DIM wide (64 from 512 wide on), the MLP is
SwiGLU's 8/3 of the width, and the context grows with depth (64 tokens up to depth 4, then 16 x depth rounded up
to a power of two), since a small model in a short budget learns more from more windows than from longer ones.
"""

from __future__ import annotations

from core.config import ModelConfig, count_params

ASPECT = 32  # width per layer
DEPTHS = range(1, 33)  # the dial's positions


def model_shape(depth: int, vocab_size: int, context: int | None = None) -> ModelConfig:
    """The model of the dial at `depth` for a `vocab_size` tokenizer (its own context unless one is given)."""
    width = ASPECT * depth
    head_dim = 32 if width < 512 else 64 if width < 2048 else 128
    heads = max(1, width // head_dim)
    return ModelConfig(
        vocab_size=vocab_size,
        context=context or default_context(depth),
        n_layer=depth,
        n_head=heads,
        n_kv_head=heads,
        n_embd=heads * head_dim,
        tie_embeddings=False,
    )


def default_context(depth: int) -> int:
    """64 tokens up to depth 4, then 16 x depth rounded up to a power of two (depth 12: 256, depth 24: 512)."""
    return max(64, 1 << (16 * depth - 1).bit_length())


def matrix_params(m: ModelConfig) -> int:
    """Parameters in the blocks' matrices (no embeddings, no norms): what scaling rules count."""
    return count_params(m) - m.vocab_size * m.n_embd * (1 if m.tie_embeddings else 2) - m.n_embd * (2 * m.n_layer + 1)


def compute_params(m: ModelConfig) -> int:
    """The parameters each token multiplies through: the blocks' matrices and the output head (the input
    embedding is a lookup). Tokens per parameter counts these."""
    return matrix_params(m) + m.vocab_size * m.n_embd


def flops_per_token(m: ModelConfig) -> int:
    """Training FLOPs per token: 6 per weight it multiplies (forward and backward) plus attention's."""
    return 6 * compute_params(m) + 6 * m.n_layer * m.context * m.n_embd
