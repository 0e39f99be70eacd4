"""Which of the big runs' tricks buy quality at our scale: each change alone against the current recipe.

    python bench/recipe_ablation.py [--depth 2] [--seconds 64] [--seeds 2] [--only NAME ...]

Every run is the planner's shape at `--depth` (core/plan/shape.py) with its recipe, trained on
tinyshakespeare (tokenizer of 1024 tokens on the training split, as bench/planner_sweep.py) for the same
wall-clock budget on 2 threads; the runs alternate changes within each seed, so a busy spell spreads over
all of them. Printed: each change's steps, val bits/byte per seed, the median and its difference from the
current recipe's (negative is better). A change joins the model only if it wins at equal time.

The changes live here, as patches over the model for the length of one run, so that the model stays as
it is until one of them earns its place:
- tied head: input and output embeddings shared (the planner's shapes keep them separate)
- qk-norm: queries and keys RMS-normalised per head before the rotation (OLMo 2, modded-nanogpt)
- relu2: a ReLU-squared MLP 4x wide instead of SwiGLU (modded-nanogpt)
- zero proj: output projections of attention and MLP start at zero (modded-nanogpt, nanochat)
- softcap: logits soft-capped at 15 by tanh (Gemma 2, modded-nanogpt)
- muon: Muon for the hidden matrices (--optimizer muon; its CPU cost counts against the budget)
- ema: evaluations score an exponential average of the weights (decay 0.99 a step), as the tail averages
  of modded-nanogpt's track 3
- value embeds: each layer adds a table of its own (token -> value vector) to its values (modded-nanogpt)
- batch warmup: the first quarter of the budget trains on a quarter of the rows (more, cheaper steps)
- seq warmup: the first quarter trains on the same tokens cut into windows a quarter as long
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from planner_sweep import workspace
from torch import nn

from bench.scored import scored_run
from core import model as gpt
from core.config import ModelConfig, TrainConfig
from core.evaluate import EvalResult
from core.plan.rules import recipe
from core.plan.shape import model_shape
from core.train.trainer import Trainer

VOCAB = 1024


class BenchTrainer(Trainer):
    """A trainer that prints no samples (a changed MLP would not fit the sampler's decoder)."""

    def _sample(self) -> None:
        pass


class AveragingTrainer(BenchTrainer):
    """Evaluations score an exponential moving average of the weights instead of the weights."""

    decay = 0.99

    def _step(self) -> tuple[float, float, float]:
        result = super()._step()
        with torch.no_grad():
            if not hasattr(self, "average"):
                self.average = [p.detach().clone() for p in self.model.parameters()]
            for a, p in zip(self.average, self.model.parameters(), strict=True):
                a.lerp_(p, 1 - self.decay)
        return result

    def _evaluate(self, tokens: int | None = None) -> EvalResult:
        if not hasattr(self, "average"):
            return super()._evaluate(tokens)
        live = [p.detach().clone() for p in self.model.parameters()]
        with torch.no_grad():
            for p, a in zip(self.model.parameters(), self.average, strict=True):
                p.copy_(a)
        try:
            return super()._evaluate(tokens)
        finally:
            with torch.no_grad():
                for p, w in zip(self.model.parameters(), live, strict=True):
                    p.copy_(w)


class BatchWarmupTrainer(BenchTrainer):
    """The first quarter of the budget trains on a quarter of the rows."""

    def _batch_loss(self) -> torch.Tensor:
        x, y = self.batches.next()
        if self.progress() < 0.25:
            x, y = x[: len(x) // 4], y[: len(y) // 4]
        return self.train_model(x, y)[1]


class SequenceWarmupTrainer(BenchTrainer):
    """The first quarter of the budget trains on each batch's tokens as windows a quarter as long."""

    def _batch_loss(self) -> torch.Tensor:
        x, y = self.batches.next()
        if self.progress() < 0.25:
            x, y = x.reshape(len(x) * 4, -1), y.reshape(len(y) * 4, -1)
        return self.train_model(x, y)[1]


@contextlib.contextmanager
def value_embeds() -> Iterator[None]:
    build = gpt.GPT.__init__

    def init(self: gpt.GPT, config: ModelConfig) -> None:
        build(self, config)
        width = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleList(nn.Embedding(config.vocab_size, width) for _ in self.blocks)
        for block, table in zip(self.blocks, self.value_embeds, strict=True):
            nn.init.normal_(table.weight, std=0.02)
            qkv = block.attn.qkv

            def forward(x: torch.Tensor, qkv: nn.Linear = qkv, table: nn.Embedding = table) -> torch.Tensor:
                out = F.linear(x, qkv.weight)
                out[..., -width:] += table(qkv.ids)  # the values are the last kv_heads x head_dim outputs
                return out

            qkv.forward = forward

        def hand_ids(model: gpt.GPT, args: tuple) -> None:
            for block in model.blocks:
                block.attn.qkv.ids = args[0]

        self.register_forward_pre_hook(hand_ids)

    with mock.patch.object(gpt.GPT, "__init__", init):
        yield


@contextlib.contextmanager
def qk_norm() -> Iterator[None]:
    rotate = gpt.apply_rope
    with mock.patch.object(gpt, "apply_rope", lambda x, cos, sin: rotate(F.rms_norm(x, (x.shape[-1],)), cos, sin)):
        yield


def _relu2_init(self: gpt.MLP, config: ModelConfig) -> None:
    nn.Module.__init__(self)
    self.gate_up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)  # the up matrix alone
    self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)


@contextlib.contextmanager
def relu2() -> Iterator[None]:
    with (
        mock.patch.object(gpt.MLP, "__init__", _relu2_init),
        mock.patch.object(gpt.MLP, "forward", lambda self, x: self.down(F.relu(self.gate_up(x)).square())),
    ):
        yield


@contextlib.contextmanager
def zero_proj() -> Iterator[None]:
    init = gpt.GPT.reset_parameters

    def reset(self: gpt.GPT) -> None:
        init(self)
        for block in self.blocks:
            nn.init.zeros_(block.attn.proj.weight)
            nn.init.zeros_(block.mlp.down.weight)

    with mock.patch.object(gpt.GPT, "reset_parameters", reset):
        yield


@contextlib.contextmanager
def softcap(cap: float = 15.0) -> Iterator[None]:
    build = gpt.GPT.__init__

    def init(self: gpt.GPT, config: ModelConfig) -> None:
        build(self, config)
        head = self.lm_head
        head.forward = lambda x: cap * torch.tanh(F.linear(x, head.weight) / cap)

    with mock.patch.object(gpt.GPT, "__init__", init):
        yield


@dataclass
class Change:
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    patch: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    trainer: type[Trainer] = BenchTrainer


CHANGES = {
    "current": Change(),
    "tied head": Change(model={"tie_embeddings": True}),
    "qk-norm": Change(patch=qk_norm),
    "relu2": Change(patch=relu2),
    "zero proj": Change(patch=zero_proj),
    "softcap": Change(patch=softcap),
    "muon": Change(train={"optimizer": "muon"}),
    "ema": Change(trainer=AveragingTrainer),
    "value embeds": Change(patch=value_embeds),
    "batch warmup": Change(trainer=BatchWarmupTrainer),
    "seq warmup": Change(trainer=SequenceWarmupTrainer),
}


def run(ws, tokenizer: str, name: str, depth: int, seconds: float, seed: int) -> tuple[float, int]:
    """(final val bits/byte, steps) of one budgeted run with the change `name`."""
    change = CHANGES[name]
    model = replace(model_shape(depth, VOCAB), **change.model)
    settings = recipe(model) | change.train
    train = TrainConfig(**settings, tokenizer=tokenizer, max_minutes=seconds / 60, max_steps=10**9, seed=seed)
    with change.patch():
        return scored_run(ws, f"{name.replace(' ', '-')}-{seed}", model, train, change.trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=64)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=list(CHANGES), help="changes to run beside the current recipe")
    args = parser.parse_args()
    torch.set_num_threads(2)
    names = ["current", *(n for n in args.only or CHANGES if n != "current")]
    results: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        ws, tokenizer, _ = workspace("shakespeare", Path(tmp))
        for seed in range(args.seeds):
            for name in names:
                results[name].append(run(ws, tokenizer, name, args.depth, args.seconds, seed))
                print(f"  {name} seed {seed}: {results[name][-1][0]:.4f}", file=sys.stderr, flush=True)
    base = statistics.median(r[0] for r in results["current"])
    print(f"\ntinyshakespeare, depth {args.depth}, {args.seconds:g} s on 2 threads, {args.seeds} seeds")
    print(f"{'change':<10} {'steps':>6} {'val bpb by seed':>24} {'median':>7} {'vs current':>10}")
    for name, rs in results.items():
        median = statistics.median(r[0] for r in rs)
        seeds = " ".join(f"{r[0]:.3f}" for r in rs)
        steps = statistics.median(r[1] for r in rs)
        print(f"{name:<10} {steps:>6.0f} {seeds:>24} {median:>7.3f} {median - base:>+10.3f}")


if __name__ == "__main__":
    main()
