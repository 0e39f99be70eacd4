"""Quality per wall-clock second: the planner's `auto` run against the presets' defaults, at the same budgets.

    python bench/quality.py [--minutes 0.2 1.07 3] [--recipes toy auto] [--corpus PATH] [--seeds 1]

Each budget and recipe is a separate run of `slm train --preset RECIPE --max-minutes M` (defaults only,
so the learning-rate schedule fits the budget), with a tokenizer trained on the training split only;
the recipes of one budget run one after another, seed by seed, so a busy spell hits them alike. The
time counts the whole training loop, evaluations included. Reported: final val bits per byte (the last
10% of the file, as nanoGPT's split; the median over seeds), steps, and the shape `auto` planned; and the
anchor from nanoGPT's CPU baby run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.plan.planner import plan_for
from core.train.events import EvalMetrics
from core.train.trainer import Trainer
from core.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
ANCHOR = "nanoGPT CPU baby run (char-level, 4x4x128): 2.72 bits/byte after 64 s"


def configs(recipe: str, ws: Workspace, minutes: float, seed: int) -> tuple[ModelConfig, TrainConfig]:
    if recipe == "auto":
        plan = plan_for(ws, {"max_minutes": minutes})
        return plan.model, TrainConfig(**plan.train, seed=seed)
    chosen = preset(recipe)
    train = TrainConfig(**{**chosen.train, "max_minutes": minutes, "max_steps": 10**9, "seed": seed})
    return ModelConfig(**chosen.model), train


def run(recipe: str, minutes: float, corpus: Path, seed: int) -> tuple[float, int, str]:
    """(final val bits/byte, steps, shape) of one run."""
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        (ws.data_dir / corpus.name).symlink_to(corpus.resolve())
        model, train = configs(recipe, ws, minutes, seed)
        evals: list[EvalMetrics] = []
        trainer = Trainer(
            ws, f"{recipe}-{minutes}", model, train, lambda e: evals.append(e) if isinstance(e, EvalMetrics) else None
        )
        trainer.run()
        return evals[-1].val_bpb, trainer.step, f"{model.n_layer}x{model.n_embd}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.2, 64 / 60, 3.0])
    parser.add_argument("--recipes", nargs="+", default=["toy", "auto"])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus {args.corpus} not found: pass --corpus PATH")
    print(f"{args.corpus.name}, {args.seeds} seed(s); anchor: {ANCHOR}")
    print(f"{'budget':>7} " + " ".join(f"{r + ' bpb':>10} {'steps':>6} {'shape':>6}" for r in args.recipes))
    for minutes in args.minutes:
        results: dict[str, list[tuple[float, int, str]]] = {r: [] for r in args.recipes}
        for seed in range(args.seeds):
            for recipe in args.recipes:
                results[recipe].append(run(recipe, minutes, args.corpus, 1337 + seed))
        cells = []
        for rs in results.values():
            bpb, steps = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
            cells.append(f"{bpb:>10.3f} {steps:>6.0f} {rs[-1][2]:>6}")
        print(f"{minutes * 60:>6.0f}s " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
