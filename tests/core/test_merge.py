from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from core.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, weights_for_saving
from core.config import ModelConfig, to_dict
from core.errors import SLMError
from core.generate import Generator, SamplingSettings
from core.merge import check_compatible, evaluate_checkpoints, load_header, merge_checkpoints, merge_linear
from core.model import GPT
from core.tokenizer import Tokenizer, train_tokenizer
from core.train import Trainer
from tests.conftest import TINY_MODEL, make_text


@pytest.fixture
def make_ckpt(tmp_path, tokenizer_file):
    """Write a random-weight checkpoint `tmp_path/NAME/final` whose run id is `run_id`."""

    def make(name: str, run_id: str, lineage=(), seed: int = 0, tokenizer: Tokenizer | None = None, **model):
        config = ModelConfig(**{**TINY_MODEL, **model})
        torch.manual_seed(seed)
        meta = {"run_id": run_id, "step": 1, "model": to_dict(config), "lineage": list(lineage)}
        path = tmp_path / name / "final"
        save_checkpoint(path, weights_for_saving(GPT(config)), meta, tokenizer or Tokenizer.load(tokenizer_file))
        return path

    return make


def branches(make_ckpt) -> tuple[Path, Path]:
    """Two checkpoints branched from one base run (different weights, a shared ancestor)."""
    base = [{"run_id": "base", "path": "base/final", "step": 1}]
    return make_ckpt("a", "run-a", base, seed=1), make_ckpt("b", "run-b", base, seed=2)


def test_linear_merge_is_the_weighted_mean() -> None:
    a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}
    assert torch.allclose(merge_linear([a, b], [1, 1])["w"], torch.tensor([2.0, 4.0]))
    assert torch.allclose(merge_linear([a, b], [3, 1])["w"], torch.tensor([1.5, 3.0]))  # normalised to 3/4, 1/4
    half = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16)}
    assert merge_linear([half, half], [1, 2])["w"].dtype == torch.bfloat16


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, -1.0], [1.0, math.nan]])
def test_bad_weights_are_refused(weights) -> None:
    a = {"w": torch.ones(2)}
    with pytest.raises(SLMError, match="weight"):
        merge_linear([a, a], weights)


def test_merging_a_checkpoint_with_itself_returns_it(make_ckpt, tmp_path) -> None:
    path = make_ckpt("a", "run-a")
    merged = load_checkpoint(merge_checkpoints([path, path], None, out=tmp_path / "twice"))
    original = load_checkpoint(path)
    assert merged.state.keys() == original.state.keys()
    assert all(torch.allclose(merged.state[k], original.state[k]) for k in original.state)


def test_merge_of_branches_averages_every_tensor(make_ckpt, tmp_path) -> None:
    a, b = branches(make_ckpt)
    merged = load_checkpoint(merge_checkpoints([a, b], [1, 3], out=tmp_path / "m"))
    sa, sb = load_checkpoint(a).state, load_checkpoint(b).state
    assert all(torch.allclose(merged.state[k], 0.25 * sa[k] + 0.75 * sb[k]) for k in sa)
    assert merged.meta["merge"] == {"method": "linear", "parents": [str(a), str(b)], "weights": [0.25, 0.75]}
    assert {"run-a", "run-b", "base"} <= set(merged.ancestors())
    assert merged.meta["lineage"][0]["path"] == str(a)


def test_different_architectures_are_refused_naming_the_fields(make_ckpt) -> None:
    a = load_checkpoint(make_ckpt("a", "run-a"))
    b = load_checkpoint(make_ckpt("b", "run-a", n_embd=64))
    with pytest.raises(SLMError, match="n_embd 32 vs 64"):
        check_compatible([a, b])


def test_different_tokenizers_are_refused(make_ckpt, tmp_path) -> None:
    other = train_tokenizer([make_text(200, seed=9)], vocab_size=300)
    a = load_checkpoint(make_ckpt("a", "run-a"))
    b = load_checkpoint(make_ckpt("b", "run-a", tokenizer=other))
    with pytest.raises(SLMError, match="different tokenizers"):
        check_compatible([a, b])


def test_unrelated_runs_need_force(make_ckpt, tmp_path) -> None:
    a, b = make_ckpt("a", "run-a"), make_ckpt("b", "run-b", seed=1)
    with pytest.raises(SLMError, match=r"share no ancestor.*slm train --from"):
        merge_checkpoints([a, b], None, out=tmp_path / "m")
    assert not (tmp_path / "m").exists()
    assert check_compatible([load_checkpoint(a), load_checkpoint(b)], force=True)[0].startswith("forced")
    merged = load_checkpoint(merge_checkpoints([a, b], None, out=tmp_path / "m", force=True))
    assert "share no ancestor" in merged.meta["merge"]["warnings"][0]


def test_branches_are_compatible_without_warnings(make_ckpt) -> None:
    a, b = branches(make_ckpt)
    assert check_compatible([load_checkpoint(a), load_checkpoint(b)]) == []
    assert check_compatible([load_header(a), load_header(b)]) == []
    with pytest.raises(SLMError, match="at least two"):
        check_compatible([load_checkpoint(a)])


def test_an_existing_run_is_not_overwritten(make_ckpt, tmp_path) -> None:
    a, b = branches(make_ckpt)
    merge_checkpoints([a, b], None, out=tmp_path / "m")
    with pytest.raises(SLMError, match="already exists"):
        merge_checkpoints([a, b], None, out=tmp_path / "m")


def test_merged_run_lists_evaluates_generates_and_fine_tunes(workspace, tiny_configs) -> None:
    Trainer(workspace, "base", *tiny_configs(max_steps=6)).run()
    for name in ("b1", "b2"):
        Trainer(workspace, name, *tiny_configs(max_steps=4, init_from="base/final", tokenizer=None)).run()
    parents = [workspace.run_dir(name) / "final" for name in ("b1", "b2")]
    path = merge_checkpoints(parents, [1, 1], out=workspace.run_dir("merged"))

    assert path == workspace.run_dir("merged") / "final"
    run = json.loads((workspace.run_dir("merged") / "run.json").read_text())
    assert run["name"] == "merged" and run["merge"]["parents"] == [str(p) for p in parents]
    assert any(e.run == "merged" for e in list_checkpoints(workspace))
    results = evaluate_checkpoints(workspace, [*parents, path], max_tokens=256)
    assert all(math.isfinite(r.loss) and r.bpb > 0 and r.tokens > 0 for r in results)
    stream = Generator.from_checkpoint(path, "cpu").stream("The", SamplingSettings(max_tokens=5, seed=0))
    stream.text()
    assert stream.new_tokens >= 1
    end = Trainer(workspace, "child", *tiny_configs(max_steps=2, init_from="merged", tokenizer=None)).run()
    assert end.reason == "finished"
    child = load_checkpoint(workspace.run_dir("child") / "final")
    assert load_checkpoint(parents[0]).ancestors()[-1] in child.ancestors()
