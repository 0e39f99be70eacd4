"""Speed, side by side in one run: our training step vs a nanoGPT-style reference, KV cache on/off.

    python bench/train_speed.py [--rounds 5] [--steps 40] [--compile]

Training: 4 layers, 4 heads, 128 wide, context 64, batch 12 (nanoGPT's CPU "baby" shape), the same
vocabulary for both (tied embeddings, as nanoGPT). Ours is the real `Trainer` step (data from a memmap, AdamW, clipping); the
reference is nanoGPT's model and loop. Rounds alternate between the two and the median is reported,
so machine noise hits both alike. Generation: 500 new tokens, greedy, with and without the KV cache,
for that shape and for the `small` preset, with all threads and with one; cached and uncached
runs alternate and medians are reported.
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
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.config import ModelConfig, TrainConfig, preset
from core.model import GPT
from core.tokenizer.bpe import train_tokenizer
from core.train.trainer import Trainer
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


def our_trainer(root: Path, vocab: int, compile: bool) -> Trainer:
    ws = Workspace.resolve(root)
    ws.ensure()
    if not (ws.data_dir / "corpus.txt").exists():
        (ws.data_dir / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
        train_tokenizer([corpus_text()], vocab_size=vocab).save(root / "tokenizer.json")
    model = ModelConfig(vocab_size=vocab, **SHAPE)
    train = TrainConfig(batch_size=BATCH, tokenizer=str(root / "tokenizer.json"), max_steps=10**9, compile=compile)
    trainer = Trainer(ws, f"bench-{compile}", model, train)
    trainer.prepare()
    return trainer


class Reference:
    """nanoGPT's training loop: get_batch from a memmap, forward, backward, clip, step."""

    def __init__(self, tokens_path: Path, dtype: str, vocab: int, compile: bool = False) -> None:
        torch.manual_seed(0)
        self.model = ReferenceGPT(vocab, SHAPE["context"], SHAPE["n_layer"], SHAPE["n_head"], SHAPE["n_embd"])
        self.opt = self.model.optimizer(1e-3)
        self.forward = torch.compile(self.model) if compile else self.model
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
        loss = self.forward(x, y)
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


def generation_speed(config: ModelConfig, new_tokens: int, rounds: int = 1) -> tuple[float, float]:
    """Greedy tokens/s from a short prompt, with and without the KV cache: medians of alternating rounds."""
    torch.manual_seed(0)
    tok = train_tokenizer([corpus_text()[:200_000]], vocab_size=config.vocab_size)
    gen = Generator(GPT(config), tok)
    gen.stop_ids = set()
    settings = SamplingSettings(temperature=0, max_tokens=new_tokens)
    speeds: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for use_cache in speeds:
            start = time.perf_counter()
            n = sum(1 for _ in gen.token_ids(tok.encode("First Citizen:"), settings, use_cache=use_cache))
            speeds[use_cache].append(n / (time.perf_counter() - start))
    return statistics.median(speeds[True]), statistics.median(speeds[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40, help="steps per round per model")
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--gen-rounds", type=int, default=3, help="alternating cached/uncached rounds per row")
    parser.add_argument("--compile", action="store_true", help="also time both under torch.compile")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, shape {SHAPE}, batch {BATCH}")
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for compile in (False, True) if args.compile else (False,):
            trainer = our_trainer(Path(tmp), args.vocab, compile)
            ref = Reference(trainer.data.train.path, trainer.data.train.dtype, trainer.tokenizer.vocab_size, compile)
            suffix = " + torch.compile" if compile else ""
            steps = {f"nanoGPT-style reference{suffix}": ref.step, f"slm (this project){suffix}": trainer._step}
            for step in steps.values():
                for _ in range(10):  # warm up (and compile)
                    step()
            for _ in range(args.rounds):
                for name, step in steps.items():
                    results.setdefault(name, []).append(timed(step, args.steps))
    print("\ntraining tokens/s (median of alternating rounds)")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        print(f"  {name:<42} {medians[name]:>8.0f}   rounds: {' '.join(f'{x:.0f}' for x in values)}")
    base = medians["nanoGPT-style reference"]
    for name, value in medians.items():
        if name.startswith("slm"):
            print(f"  {name} / eager reference: {value / base:.2f}x")
    shapes = {
        "4 layers x 128, context 1024": ModelConfig(vocab_size=args.vocab, **{**SHAPE, "context": 1024}),
        "small preset, 6 layers x 320": ModelConfig(**preset("small").model),
    }
    print(
        f"\ngeneration, {args.new_tokens} new tokens, greedy, batch 1, median of {args.gen_rounds} alternating rounds"
    )
    print(f"  {'model':<32} {'threads':>7} {'KV cache':>10} {'no cache':>10} {'speed-up':>9}")
    all_threads = torch.get_num_threads()
    for name, config in shapes.items():
        for threads in sorted({all_threads, 1}, reverse=True):
            torch.set_num_threads(threads)
            cached, uncached = generation_speed(config, args.new_tokens, args.gen_rounds)
            print(f"  {name:<32} {threads:>7} {cached:>8.1f}/s {uncached:>8.1f}/s {cached / uncached:>8.1f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
