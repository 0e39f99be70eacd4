from __future__ import annotations

import pytest
import torch

from core.chat.batch import Batch, Sequence, run_together, samples
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.config import ModelConfig
from core.model import GPT
from core.tokenizer.bpe import Tokenizer
from tests.conftest import TINY_MODEL


@pytest.fixture
def gen(tokenizer_file) -> Generator:
    """Random weights spread wide, so greedy choices are clear-cut and a batch must match them exactly."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(**{**TINY_MODEL, "n_head": 4, "n_kv_head": 2}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    generator = Generator(model, Tokenizer.load(tokenizer_file))
    generator.stop_ids = set()  # random weights emit <|endoftext|> as readily as anything
    return generator


def alone(gen: Generator, prompt: list[int], settings: SamplingSettings) -> str:
    return gen.generate(prompt, settings)


def test_a_batch_of_different_prompts_writes_what_each_writes_alone(gen) -> None:
    prompts = [gen.tokenizer.encode(t) for t in ["The cat", "A moon sees the", "x", "the the the cat sat on"]]
    settings = [SamplingSettings(temperature=0, max_tokens=n) for n in (20, 7, 45, 12)]  # 45: past the context
    sequences = [Sequence(p, s) for p, s in zip(prompts, settings, strict=True)]
    run_together(gen, sequences, rows=3)  # one waits for a row; rows end and are refilled mid-run
    assert [seq.output for seq in sequences] == [alone(gen, p, s) for p, s in zip(prompts, settings, strict=True)]
    assert [seq.finish_reason for seq in sequences] == ["length"] * 4
    assert [seq.new_tokens for seq in sequences] == [20, 7, 45, 12]


def test_seeded_samples_match_one_at_a_time_and_differ_from_each_other(gen) -> None:
    prompt = gen.tokenizer.encode("The cat sees")
    settings = SamplingSettings(temperature=1.0, top_k=20, max_tokens=15, seed=11)
    together = [seq.output for seq in samples(gen, prompt, settings, 3)]
    one_by_one = [
        alone(gen, prompt, SamplingSettings(temperature=1.0, top_k=20, max_tokens=15, seed=11 + i)) for i in range(3)
    ]
    assert together == one_by_one
    assert len(set(together)) > 1


def test_long_prompts_are_read_in_chunks_and_truncated_like_a_single_generation(gen) -> None:
    prompt = gen.tokenizer.encode("the cat sees the moon. " * 20)
    settings = SamplingSettings(temperature=0, max_tokens=5)
    seq = Sequence(prompt, settings)
    batch = Batch(gen, rows=2, chunk=8)
    batch.add(seq)
    steps = 0
    while len(batch):
        batch.step()
        steps += 1
    single = gen.stream(prompt, settings)
    assert seq.output == single.text()
    assert seq.truncated == single.truncated > 0 and seq.prompt_tokens == gen.config.context - 1
    # 31 prompt tokens in 4 chunks; the step that reads the last also decodes: 2 tokens, then 1 a step
    assert steps == 4 + 3


def test_stop_strings_cancel_and_zero_tokens_end_a_sequence(gen) -> None:
    prompt = gen.tokenizer.encode("The")
    full = alone(gen, prompt, SamplingSettings(temperature=0, max_tokens=30))
    stop = full[6:8]
    flag = {"gone": False}
    ended: list[str] = []
    stopped = Sequence(prompt, SamplingSettings(temperature=0, max_tokens=30, stop=[stop]))
    cancelled = Sequence(prompt, SamplingSettings(temperature=0, max_tokens=30), cancelled=lambda: flag["gone"])
    empty = Sequence(prompt, SamplingSettings(temperature=0, max_tokens=0))
    for seq in (stopped, cancelled, empty):
        seq.on_done = lambda seq: ended.append(seq.finish_reason)
    batch = Batch(gen, rows=3)
    for seq in (stopped, cancelled, empty):
        batch.add(seq)
    for _ in range(4):
        batch.step()
    flag["gone"] = True
    while len(batch):
        batch.step()
    assert stopped.output == full[: full.index(stop)] and stopped.finish_reason == "stop"
    assert cancelled.finish_reason == "cancelled" and 0 < cancelled.new_tokens < 30
    assert empty.output == "" and empty.finish_reason == "length"
    assert sorted(ended) == ["cancelled", "length", "stop"]
