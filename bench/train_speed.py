"""Speed, side by side in one run: our training step vs a nanoGPT-style reference, KV cache on/off.

    python bench/train_speed.py [--rounds 5] [--steps 40]

Training: 4 layers, 4 heads, 128 wide, context 64, batch 12 (nanoGPT's CPU "baby" shape), the same
vocabulary for both. Ours is the real `Trainer` step (data from a memmap, AdamW, clipping); the
reference is nanoGPT's model and loop. Rounds alternate between the two and the median is reported,
so machine noise hits both alike. Generation: 500 new tokens, greedy, with and without the KV cache.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.nanogpt_reference import ReferenceGPT
from core.config import ModelConfig, TrainConfig
from core.generate import Generator, SamplingSettings
from core.model import GPT
from core.tokenizer import train_tokenizer
from core.train import Trainer
from core.workspace import Workspace

SHAPE = dict(n_layer=4, n_head=4, n_kv_head=4, n_embd=128, context=64)
BATCH = 12
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def corpus_text() -> str:
    if CORPUS.exists():
        return CORPUS.read_text(encoding="utf-8")
    words = [
        "the",
        "king",
        "and",
        "queen",
        "walk",
        "by",
        "the",
        "river",
        "while",
        "a",
        "bird",
        "sings",
        "of",
        "the",
        "sea",
    ]
    rng = np.random.default_rng(0)
    return "\n".join(" ".join(rng.choice(words, 12)) for _ in range(40000))


def our_trainer(root: Path, vocab: int) -> Trainer:
    ws = Workspace.resolve(root)
    ws.ensure()
    (ws.data_dir / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    tok = train_tokenizer([corpus_text()], vocab_size=vocab)
    tok.save(root / "tokenizer.json")
    model = ModelConfig(vocab_size=vocab, **SHAPE)
    train = TrainConfig(batch_size=BATCH, tokenizer=str(root / "tokenizer.json"), max_steps=10**9)
    trainer = Trainer(ws, "bench", model, train)
    trainer.prepare()
    return trainer


class Reference:
    """nanoGPT's training loop: get_batch from a memmap, forward, backward, clip, step."""

    def __init__(self, tokens_path: Path, dtype: str, vocab: int) -> None:
        torch.manual_seed(0)
        self.model = ReferenceGPT(vocab, SHAPE["context"], SHAPE["n_layer"], SHAPE["n_head"], SHAPE["n_embd"])
        self.opt = self.model.optimizer(1e-3)
        self.path, self.dtype = tokens_path, dtype

    def get_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        ix = torch.randint(len(data) - SHAPE["context"], (BATCH,))
        block = SHAPE["context"]
        x = torch.stack([torch.from_numpy(data[i : i + block].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + block].astype(np.int64)) for i in ix])
        return x, y

    def step(self) -> None:
        x, y = self.get_batch()
        loss = self.model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        loss.item()


def timed(step, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        step()
    return n * BATCH * SHAPE["context"] / (time.perf_counter() - start)


def generation_speed(vocab: int, new_tokens: int) -> tuple[float, float]:
    torch.manual_seed(0)
    tok = train_tokenizer([corpus_text()[:200_000]], vocab_size=vocab)
    config = ModelConfig(vocab_size=vocab, **{**SHAPE, "context": 1024})
    gen = Generator(GPT(config), tok)
    gen.stop_ids = set()
    settings = SamplingSettings(temperature=0, max_tokens=new_tokens)
    speeds = []
    for use_cache in (True, False):
        start = time.perf_counter()
        n = sum(1 for _ in gen.token_ids(tok.encode("First Citizen:"), settings, use_cache=use_cache))
        speeds.append(n / (time.perf_counter() - start))
    return speeds[0], speeds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per round per model")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=500)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {SHAPE}, batch {BATCH}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = our_trainer(Path(tmp), args.vocab)
        ref = Reference(trainer.data.train.path, trainer.data.train.dtype, trainer.tokenizer.vocab_size)
        for _ in range(10):  # warm up both
            trainer._step()
            ref.step()
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(timed(ref.step, args.steps))
            ours.append(timed(trainer._step, args.steps))
    o, r = statistics.median(ours), statistics.median(theirs)
    print("\ntraining tokens/s (median of rounds)")
    print(f"  {'nanoGPT-style reference':<28} {r:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in theirs)}")
    print(f"  {'slm (this project)':<28} {o:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in ours)}")
    print(f"  ratio ours / reference      {o / r:>9.2f}x")
    cached, uncached = generation_speed(args.vocab, args.new_tokens)
    print(f"\ngeneration, {args.new_tokens} new tokens (context 1024, greedy)")
    print(f"  {'with KV cache':<28} {cached:>9.1f} tokens/s")
    print(f"  {'without KV cache':<28} {uncached:>9.1f} tokens/s")
    print(f"  speed-up                    {cached / uncached:>9.1f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
