"""Shared fixtures: a tiny corpus in a temporary workspace, a tokenizer and a tiny model config."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from core.workspace import Workspace

SUBJECTS = ["the cat", "a dog", "the old king", "my friend", "the river", "a small bird", "the queen"]
VERBS = ["sees", "loves", "follows", "finds", "hears", "keeps", "leaves"]
OBJECTS = ["the moon", "a red apple", "the long road", "the sea", "a quiet song", "the garden"]


def make_text(n_sentences: int, seed: int = 0) -> str:
    """Deterministic English-like text with enough structure for a tiny model to learn."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_sentences):
        lines.append(f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}.")
        if i % 7 == 6:
            lines.append("")
    return "\n".join(lines) + "\n"


TINY_MODEL = dict(vocab_size=320, context=32, n_layer=2, n_head=2, n_kv_head=1, n_embd=32)
TINY_TRAIN = dict(
    batch_size=4,
    lr=3e-3,
    warmup_steps=2,
    max_steps=12,
    eval_interval=6,
    eval_tokens=512,
    sample_interval=6,
    sample_tokens=8,
    checkpoint_interval=6,
)


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """User settings go to a temporary folder, never the real config dir."""
    monkeypatch.setenv("SLM_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
    monkeypatch.setenv("SLM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("SLM_WORKSPACE", raising=False)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A workspace with a small two-file corpus in data/."""
    ws = Workspace.resolve(tmp_path / "ws")
    ws.ensure()
    (ws.data_dir / "stories").mkdir()
    (ws.data_dir / "stories" / "a.txt").write_text(make_text(900, seed=1), encoding="utf-8")
    (ws.data_dir / "b.md").write_text(make_text(300, seed=2), encoding="utf-8")
    return ws


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory) -> Path:
    """A tokenizer trained once on the tiny corpus text (shared by the tests that need one)."""
    from core.tokenizer.bpe import train_tokenizer

    tok = train_tokenizer([make_text(1200, seed=1)], vocab_size=TINY_MODEL["vocab_size"])
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(path)
    return path


@pytest.fixture
def tiny_configs(tokenizer_file):
    from core.config import ModelConfig, TrainConfig

    def make(**train_overrides):
        return ModelConfig(**TINY_MODEL), TrainConfig(
            **{**TINY_TRAIN, "tokenizer": str(tokenizer_file), **train_overrides}
        )

    return make


@pytest.fixture
def one_thread():
    """Tiny models train fastest on one CPU thread, and do not crawl when other work shares the CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
