"""Bounded memory on a large corpus: encode ~1 GB of text and train a few steps, reporting peak RSS.

    python bench/big_corpus.py [--mb 1024]

The corpus is made here (words drawn from tinyshakespeare, or a built-in list), written as one big
file plus many small ones into a temporary workspace. The run uses the toy preset with its default
tokenizer training (capped at 200 MiB of text, shared by the sources) and 20 steps. Target: peak RSS under 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.train.events import Progress
from core.train.trainer import Trainer
from core.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def words() -> np.ndarray:
    text = CORPUS.read_text(encoding="utf-8") if CORPUS.exists() else "the king and queen walk by the sea " * 100
    return np.array(sorted(set(text.split())))


def write_corpus(data_dir: Path, megabytes: int) -> int:
    rng = np.random.default_rng(0)
    vocab = words()
    written = 0
    big = data_dir / "big.txt"
    with open(big, "w", encoding="utf-8") as f:
        while written < megabytes * (1 << 20) * 0.9:
            lines = rng.choice(vocab, size=(20000, 12))
            chunk = "\n".join(" ".join(line) for line in lines) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    small = data_dir / "small"
    small.mkdir()
    i = 0
    while written < megabytes * (1 << 20):
        text = "\n".join(" ".join(line) for line in rng.choice(vocab, size=(400, 12))) + "\n"
        (small / f"{i:05d}.txt").write_text(text, encoding="utf-8")
        written += len(text.encode("utf-8"))
        i += 1
    return written


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        start = time.perf_counter()
        size = write_corpus(ws.data_dir, args.mb)
        print(f"wrote {size / 2**20:.0f} MB in {time.perf_counter() - start:.0f} s; peak RSS so far {rss_mb():.0f} MB")
        stages: dict[str, float] = {}
        clock = time.perf_counter()

        def on_event(event) -> None:
            if isinstance(event, Progress) and event.stage not in stages:
                stages[event.stage] = time.perf_counter()

        toy = preset("toy")
        train = TrainConfig(**{**toy.train, "max_steps": 20, "eval_interval": 10, "sample_interval": 20})
        trainer = Trainer(ws, "big", ModelConfig(**toy.model), train, on_event)
        trainer.run()
        end = time.perf_counter()
        for name, t in sorted(stages.items(), key=lambda kv: kv[1]):
            print(f"  {name:<10} started after {t - clock:6.1f} s")
        print(f"train tokens {trainer.data.train.tokens:,}, val tokens {trainer.data.val.tokens:,}")
        print(f"total {end - clock:.0f} s; peak RSS {rss_mb():.0f} MB (target < 2048 MB)")


if __name__ == "__main__":
    main()
