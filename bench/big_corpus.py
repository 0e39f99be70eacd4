"""A big multi-source corpus from raw files to the first training step: encoding speed, memory and waiting.

    python bench/big_corpus.py [--mb 1024] [--compare-mb 96]

The corpus is made here from words of tinyshakespeare (or a built-in list), drawn as often as they occur
there, into four sources, like a user's
folder: `wiki/` (one big file, 60%), `books/` (a few large files, 25%), `subtitles/` (many small files, 10%)
and `chat/` (a JSONL of `text` records, 5%). A toy run trains its own tokenizer (200 MiB of text at most,
shared by the sources) and 20 steps; the bench prints when each stage started, the first step, and the peak
RSS of this process and of the encoding processes (target: first step under 2 minutes, RSS under 2 GB).
Then, on the first `--compare-mb` of the text with the run's tokenizer, it times Hugging Face `encode_batch`
(its own threads) against ours (`core.tokenizer.encoder.Encoder`, a process per core), A B A B, and checks
that both give the same ids.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.data.corpus import Corpus
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.encoder import Encoder
from core.train.events import Progress, StepMetrics
from core.train.token_cache import _pieces
from core.train.trainer import Trainer
from core.workspace import Workspace

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
SOURCES = {"wiki": 0.60, "books": 0.25, "subtitles": 0.10, "chat": 0.05}


def words() -> np.ndarray:
    """The corpus's words with their repeats, so that drawing from them keeps their frequencies (Zipf's law)."""
    text = CORPUS.read_text(encoding="utf-8") if CORPUS.exists() else "the king and queen walk by the sea " * 100
    return np.array(text.split())


def lines(rng: np.random.Generator, vocab: np.ndarray, n: int, width: int = 12) -> str:
    return "\n".join(" ".join(line) for line in rng.choice(vocab, size=(n, width))) + "\n"


def write_corpus(data_dir: Path, megabytes: int) -> int:
    """The four sources, about `megabytes` MiB in all; returns the bytes written."""
    rng, vocab, written = np.random.default_rng(0), words(), 0
    for name, share in SOURCES.items():
        goal, folder = share * megabytes * (1 << 20), data_dir / name
        folder.mkdir()
        files = {"wiki": 1, "books": 8}.get(name)
        size = 0
        if name == "chat":
            with open(folder / "chat.jsonl", "w", encoding="utf-8") as f:
                while size < goal:
                    chunk = "".join(json.dumps({"text": lines(rng, vocab, 6, 8)}) + "\n" for _ in range(2000))
                    f.write(chunk)
                    size += len(chunk)
        elif files:
            for i in range(files):
                with open(folder / f"{name}-{i}.txt", "w", encoding="utf-8") as f:
                    part = 0
                    while part < goal / files:
                        chunk = lines(rng, vocab, 20000)
                        f.write(chunk)
                        part += len(chunk)
                size += part
        else:
            i = 0
            while size < goal:
                text = lines(rng, vocab, 400, 8)
                (folder / f"{i:05d}.srt").write_text(text, encoding="utf-8")
                size += len(text)
                i += 1
        written += size
    return written


def rss_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def first_step(ws: Workspace) -> Trainer:
    stages: dict[str, float] = {}
    clock = time.perf_counter()

    def on_event(event) -> None:
        if isinstance(event, Progress) and event.stage not in stages:
            stages[event.stage] = time.perf_counter()
        if isinstance(event, StepMetrics) and "first step" not in stages:
            stages["first step"] = time.perf_counter()

    toy = preset("toy")
    train = TrainConfig(**{**toy.train, "max_steps": 20, "eval_interval": 10, "sample_interval": 20})
    trainer = Trainer(ws, "big", ModelConfig(**toy.model), train, on_event)
    trainer.run()
    for name, t in sorted(stages.items(), key=lambda kv: kv[1]):
        print(f"  {name:<10} at {t - clock:6.1f} s")
    print(f"train tokens {trainer.data.train.tokens:,}, val tokens {trainer.data.val.tokens:,}")
    print(f"first training step after {stages['first step'] - clock:.0f} s (target < 120 s)")
    return trainer


def compare(ws: Workspace, tokenizer: Tokenizer, megabytes: int) -> None:
    """HF encode_batch against ours on the same pieces, A B A B, each making the ids one uint32 array (as the
    token files hold them); the ids must agree."""
    pieces, size = [], 0
    for _, text in Corpus.scan(ws.data_dir).split(0.0, 0):
        for piece in _pieces(text or ""):
            pieces.append(piece)
            size += len(piece.encode())
        if size >= megabytes * (1 << 20):
            break
    batches = [pieces[i : i + 256] for i in range(0, len(pieces), 256)]  # ~1 MiB each, as the cache sends them
    times: dict[str, list[float]] = {"hf": [], "ours": []}
    results = {}
    workers = os.cpu_count() or 1
    for _ in range(2):
        start = time.perf_counter()
        ids = (i for batch in batches for one in tokenizer.encode_batch(batch) for i in one)
        results["hf"] = np.fromiter(ids, np.uint32)
        times["hf"].append(time.perf_counter() - start)
        start = time.perf_counter()
        with Encoder(tokenizer.to_json(), workers) as encoder:
            futures = [encoder.submit(batch) for batch in batches]
            results["ours"] = np.concatenate([f.result()[0] for f in futures])
        times["ours"].append(time.perf_counter() - start)
    mb = size / 1e6
    hf, ours = (mb / min(times[k]) for k in ("hf", "ours"))
    print(f"encoding {mb:.0f} MB with the run's tokenizer (best of 2, A B A B):")
    print(f"  HF encode_batch  {hf:6.1f} MB/s")
    print(f"  ours, {workers} procs   {ours:6.1f} MB/s  ({ours / hf:.1f}x, processes started inside the timing)")
    print(f"  same ids: {np.array_equal(results['hf'], results['ours'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=1024)
    parser.add_argument("--compare-mb", type=int, default=96)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        start = time.perf_counter()
        size = write_corpus(ws.data_dir, args.mb)
        print(f"wrote {size / 2**20:.0f} MB in 4 sources in {time.perf_counter() - start:.0f} s")
        trainer = first_step(ws)
        print(f"peak RSS: this process {rss_mb(resource.RUSAGE_SELF):.0f} MB, encoding processes "
              f"{rss_mb(resource.RUSAGE_CHILDREN):.0f} MB (target < 2048 MB)")  # fmt: skip
        compare(ws, trainer.tokenizer, args.compare_mb)


if __name__ == "__main__":
    main()
