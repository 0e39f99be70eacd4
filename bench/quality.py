"""Quality per wall-clock second: the planner's `auto` run against the presets' defaults, at the same budgets.

    python bench/quality.py [--minutes 0.2 1.07 3] [--recipes toy auto nanogpt] [--corpus PATH] [--seeds 1]

--corpus is a text file or a folder of them (the recipes but nanogpt).

Each budget and recipe is a separate run of `slm train --preset RECIPE --max-minutes M` (defaults only,
so the learning-rate schedule fits the budget), with a tokenizer trained on the training split only;
the recipes of one budget run one after another, seed by seed, so a busy spell hits them alike. The
time counts the whole training loop, evaluations included. `nanogpt` is nanoGPT's CPU baby run
(`train_shakespeare_char` with 4 layers x 4 heads x 128, context 64, batch 12, dropout 0: characters,
LayerNorm, GELU, learned positions, AdamW at 1e-3 with beta2 0.99, 100 warmup steps, cosine decay to 1e-4)
in bench/nanogpt_reference.py, its cosine following the clock so that it ends with the budget, and its
time the training steps alone. Reported: final val bits per byte (the last 10% of the file, as nanoGPT's
split; the median over seeds; characters are bytes in this ASCII corpus), steps, and the shape each ran.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from bench.nanogpt_reference import ReferenceGPT
from bench.scored import scored_run
from core.config import ModelConfig, TrainConfig, preset
from core.plan.planner import plan_for
from core.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
BABY = {"n_layer": 4, "n_head": 4, "n_embd": 128, "context": 64}


def configs(recipe: str, ws: Workspace, minutes: float, seed: int) -> tuple[ModelConfig, TrainConfig]:
    if recipe == "auto":
        plan = plan_for(ws, {"max_minutes": minutes})
        return plan.model, TrainConfig(**plan.train, seed=seed)
    chosen = preset(recipe)
    train = TrainConfig(**{**chosen.train, "max_minutes": minutes, "max_steps": 10**9, "seed": seed})
    return ModelConfig(**chosen.model), train


def nanogpt(minutes: float, corpus: Path, seed: int) -> tuple[float, int, str]:
    """(final val bits/byte, steps, shape) of nanoGPT's baby run for `minutes` of training steps."""
    text = corpus.read_text(encoding="utf-8")
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = torch.tensor([index[c] for c in text])
    cut = int(0.9 * len(ids))
    train, val, T = ids[:cut], ids[cut:], BABY["context"]
    bytes_per_char = len(text[cut:].encode()) / len(text[cut:])
    torch.manual_seed(seed)
    model = ReferenceGPT(len(index), T, BABY["n_layer"], BABY["n_head"], BABY["n_embd"])
    opt = model.optimizer(1e-3)
    budget, spent, steps = minutes * 60, 0.0, 0
    while spent < budget:
        start = time.perf_counter()
        lr = 1e-3 * min(1.0, (steps + 1) / 100)
        if steps >= 100:
            lr = 1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * spent / budget))
        for group in opt.param_groups:
            group["lr"] = lr
        ix = torch.randint(len(train) - T - 1, (12,))
        x = torch.stack([train[i : i + T] for i in ix])
        y = torch.stack([train[i + 1 : i + 1 + T] for i in ix])
        model(x, y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        steps, spent = steps + 1, spent + time.perf_counter() - start
    model.eval()
    windows = (len(val) - 1) // T
    x, y = val[: windows * T].view(windows, T), val[1 : windows * T + 1].view(windows, T)
    with torch.no_grad():
        loss = sum(model(x[i : i + 64], y[i : i + 64]).item() * len(x[i : i + 64]) for i in range(0, windows, 64))
    return loss / windows / math.log(2) / bytes_per_char, steps, "4x128"


def run(recipe: str, minutes: float, corpus: Path, seed: int) -> tuple[float, int, str]:
    """(final val bits/byte, steps, shape) of one run."""
    if recipe == "nanogpt":
        return nanogpt(minutes, corpus, seed)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        for file in sorted(corpus.iterdir()) if corpus.is_dir() else [corpus]:  # a folder: its files, linked
            (ws.data_dir / file.name).symlink_to(file.resolve())
        model, train = configs(recipe, ws, minutes, seed)
        return (*scored_run(ws, f"{recipe}-{minutes}", model, train), f"{model.n_layer}x{model.n_embd}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.2, 64 / 60, 3.0])
    parser.add_argument("--recipes", nargs="+", default=["toy", "auto", "nanogpt"])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus {args.corpus} not found: pass --corpus PATH")
    if args.corpus.is_dir() and "nanogpt" in args.recipes:
        sys.exit("the nanogpt recipe reads one file: pass --corpus FILE, or leave nanogpt out of --recipes")
    torch.set_num_threads(2)
    print(f"{args.corpus.name}, {args.seeds} seed(s), 2 threads")
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
