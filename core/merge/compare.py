"""Comparing checkpoints on the validation split of the selected data: a merge against its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.data.corpus import Corpus, ProgressFn
from core.workspace import Workspace

if TYPE_CHECKING:
    from core.evaluate import EvalResult

EVAL_TOKENS = 16384  # validation tokens scored per checkpoint


def evaluate_checkpoints(
    workspace: Workspace,
    paths: list[Path],
    selection: list[str] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
    max_tokens: int = EVAL_TOKENS,
    device: str = "auto",
    on_progress: ProgressFn | None = None,
) -> list[EvalResult]:
    """Val loss and bits per byte of each checkpoint on the first `max_tokens` of the selection's validation split."""
    import torch  # these load torch: imported here, the studio starts without it

    from core.chat.generate import Generator
    from core.evaluate import evaluate_tokens
    from core.train.tokens import encode_corpus

    corpus = Corpus.scan(workspace.data_dir, selection)
    results = []
    for i, path in enumerate(paths):
        gen = Generator.from_checkpoint(Path(path), device)
        data = encode_corpus(corpus, gen.tokenizer, workspace.cache_dir, val_fraction, split_seed)
        byte_lengths = torch.tensor(gen.tokenizer.byte_lengths())
        results.append(evaluate_tokens(gen.model, data.val.array(), byte_lengths, batch_size=8, max_tokens=max_tokens))
        if on_progress:
            on_progress("evaluate", i + 1, len(paths))
    return results
