"""Quality per wall-clock second: the toy preset on tinyshakespeare for 30 s, 64 s and 3 min.

    python bench/quality.py [--minutes 0.5 1.07 3] [--corpus PATH]

Each budget is a separate run of `slm train --preset toy --max-minutes M` (defaults only, so the
learning-rate schedule fits the budget), with a tokenizer trained on the training split only.
The time counts the whole training loop, evaluations included. Reported: val bits per byte (the
last 10% of the file, as nanoGPT's split), and the anchor from nanoGPT's CPU baby run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.train.events import EvalMetrics
from core.train.trainer import Trainer
from core.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
ANCHOR = "nanoGPT CPU baby run (char-level, 4x4x128): 2.72 bits/byte after 64 s"


def run(minutes: float, corpus: Path) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        (ws.data_dir / corpus.name).symlink_to(corpus.resolve())
        toy = preset("toy")
        evals: list[EvalMetrics] = []
        trainer = Trainer(
            ws,
            f"toy-{minutes}",
            ModelConfig(**toy.model),
            TrainConfig(**{**toy.train, "max_minutes": minutes, "max_steps": 10**9}),
            lambda e: evals.append(e) if isinstance(e, EvalMetrics) else None,
        )
        trainer.run()
        return evals[-1].val_bpb, trainer.elapsed, trainer.step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[0.4, 0.5, 64 / 60, 3.0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus {args.corpus} not found: pass --corpus PATH")
    print(f"toy preset on {args.corpus.name}; anchor: {ANCHOR}")
    print(f"{'budget':>8} {'wall s':>7} {'steps':>6} {'val bits/byte':>14}")
    for minutes in args.minutes:
        bpb, elapsed, steps = run(minutes, args.corpus)
        print(f"{minutes * 60:>7.0f}s {elapsed:>7.1f} {steps:>6} {bpb:>14.3f}", flush=True)


if __name__ == "__main__":
    main()
