"""Comparing checkpoints on the validation split of the selected data: a merge against its inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.config import load_json
from core.data.corpus import Corpus, ProgressFn
from core.errors import SLMError
from core.listing import read_meta
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
    from core.train.token_cache import encode_corpus

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


def branch_entries(paths: list[Path]) -> list[str]:
    """The data entry each checkpoint's run trained on, when each trained on one entry of its own (branches);
    else none."""
    entries = []
    for path in paths:
        try:
            data = load_json(Path(path).parent / "run.json").get("train", {}).get("data")
        except (SLMError, AttributeError):
            return []
        if not (isinstance(data, list) and len(data) == 1 and isinstance(data[0], str)):
            return []
        entries.append(data[0])
    return entries if len(set(entries)) == len(entries) else []


def common_parent(paths: list[Path]) -> Path | None:
    """The checkpoint every one of `paths` was started from, when it is the same one and still readable."""
    parents = set()
    for path in paths:
        try:
            lineage = read_meta(Path(path)).get("lineage") or [{}]
        except SLMError:
            return None
        parents.add(lineage[0].get("path"))
    parent = parents.pop() if len(parents) == 1 else None
    if not parent:
        return None
    try:
        read_meta(Path(parent))
    except SLMError:
        return None
    return Path(parent)
