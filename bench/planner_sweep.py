"""The grid the planner's constants come from: model depths x time budgets on two corpora of different kinds.

    python bench/planner_sweep.py [--depths 2 3 4 6 8] [--seconds 12 64] [--seeds 1] [--corpus NAME ...]

Corpora: `shakespeare` (../shared/corpora/tinyshakespeare.txt, 1.1 MB of plays) and `sample` (the studio's
sample corpus: prose, code docstrings and chat, from `slm data --add-sample`). Each corpus gets one tokenizer
(1024 tokens, trained on its training split) shared by its runs, so the runs differ only by shape and budget.
Each run is the dial's shape at that depth (core/plan/shape.py) with the planner's recipe for it
(`core.plan.rules.recipe`), trained for the budget on 2 threads; the runs of one budget alternate depths and
seeds so that a busy spell spreads over all of them. Printed per corpus and budget: each depth's params,
steps, tokens seen, tokens per param, epochs of the corpus and final val bits/byte (median over seeds), and
the best depth marked. Since the depths are coarse steps, each table's optimum is the vertex of the parabola
through the best depth and its two neighbours (bits/byte against log tokens per param; at the grid's edge the
three nearest it). The last line gives those optima: the planner's TOKENS_PER_PARAM is
their median.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy
import torch

from bench.scored import scored_run
from core.config import TrainConfig
from core.data.corpus import Corpus
from core.data.sample import write_sample_corpus
from core.plan.rules import recipe
from core.plan.shape import compute_params, model_shape
from core.tokenizer.named import save_named, train_on_corpus
from core.workspace import Workspace

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
VOCAB = 1024


def workspace(name: str, root: Path) -> tuple[Workspace, str, int]:
    """A workspace holding the corpus, its tokenizer's path and the corpus's training bytes."""
    ws = Workspace.resolve(root / name)
    ws.ensure()
    if name == "shakespeare":
        (ws.data_dir / SHAKESPEARE.name).symlink_to(SHAKESPEARE)
    else:
        write_sample_corpus(ws.data_dir)
    corpus = Corpus.scan(ws.data_dir, [], "skip")
    tok = train_on_corpus(corpus, VOCAB, 2, TrainConfig().val_fraction)
    return ws, str(save_named(ws, "sweep", tok, {})), corpus.total_bytes


def run(ws: Workspace, tokenizer: str, depth: int, seconds: float, seed: int, dropout: float) -> tuple[float, int, int]:
    """(final val bits/byte, steps, tokens seen) of one budgeted run."""
    model = model_shape(depth, VOCAB)
    model.dropout = dropout
    train = TrainConfig(**recipe(model), tokenizer=tokenizer, max_minutes=seconds / 60, max_steps=10**9, seed=seed)
    bpb, steps = scored_run(ws, f"d{depth}-{seconds:g}s-{seed}", model, train)
    return bpb, steps, steps * train.batch_size * train.grad_accum * model.context


def optimum(ratios: list[float], bpbs: list[float]) -> float:
    """Tokens per param at the vertex of the parabola through the best point and its neighbours (at the grid's
    edge: its nearest three points), kept within the ratios of those points."""
    best = min(range(len(bpbs)), key=bpbs.__getitem__)
    if len(bpbs) < 3:
        return ratios[best]
    i = min(max(best, 1), len(bpbs) - 2)
    x = [math.log(r) for r in ratios[i - 1 : i + 2]]
    a, b, _ = numpy.polyfit(x, bpbs[i - 1 : i + 2], 2)
    if a <= 0:
        return ratios[best]
    return math.exp(min(max(-b / (2 * a), min(x)), max(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4, 6, 8])
    parser.add_argument("--seconds", type=float, nargs="+", default=[12, 64])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout of every run (default 0)")
    parser.add_argument("--corpus", nargs="+", default=["shakespeare", "sample"], choices=["shakespeare", "sample"])
    args = parser.parse_args()
    torch.set_num_threads(2)
    best_ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpus:
            ws, tokenizer, corpus_bytes = workspace(name, Path(tmp))
            corpus_tokens = corpus_bytes * (1 - TrainConfig().val_fraction) / 4
            for seconds in args.seconds:
                results: dict[int, list[tuple[float, int, int]]] = {d: [] for d in args.depths}
                for seed in range(args.seeds):
                    for depth in args.depths:
                        results[depth].append(run(ws, tokenizer, depth, seconds, seed, args.dropout))
                print(f"\n{name} ({corpus_bytes / 1e6:.1f} MB), {seconds:g} s, dropout {args.dropout:g}")
                print(
                    f"{'depth':>5} {'params':>9} {'steps':>6} {'tokens':>9} {'tok/param':>9} {'epochs':>7} {'val bpb':>8}"
                )
                medians = {d: statistics.median(r[0] for r in rs) for d, rs in results.items()}
                best = min(medians, key=medians.get)
                ratios = []
                for depth, rs in results.items():
                    params = compute_params(model_shape(depth, VOCAB))
                    steps, tokens = statistics.median(r[1] for r in rs), statistics.median(r[2] for r in rs)
                    ratios.append(tokens / params)
                    mark = " <- best" if depth == best else ""
                    print(f"{depth:>5} {params:>9,} {steps:>6.0f} {tokens:>9,.0f} {tokens / params:>9.2f} "
                          f"{tokens / corpus_tokens:>7.2f} {medians[depth]:>8.3f}{mark}", flush=True)  # fmt: skip
                best_ratios.append(optimum(ratios, list(medians.values())))
                print(f"optimum near {best_ratios[-1]:.1f} tokens per param")
    print(f"\noptimal tokens per param: {', '.join(f'{r:.1f}' for r in best_ratios)}; "
          f"median {statistics.median(best_ratios):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
