from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.checkpoint import load_checkpoint, save_checkpoint, weights_for_saving
from core.config import ModelConfig, to_dict
from core.errors import SLMError
from core.listing import list_checkpoints
from core.merge.compare import evaluate_checkpoints
from core.merge.weights import (
    METHODS,
    MergeOptions,
    check_compatible,
    load_header,
    merge_checkpoints,
    merge_linear,
    merge_slerp,
    merge_task_arithmetic,
    merge_ties,
)
from core.model import GPT
from core.tokenizer.bpe import Tokenizer, train_tokenizer
from core.train.trainer import Trainer
from tests.conftest import TINY_MODEL, make_text


def write_checkpoint(path: Path, run_id: str, tokenizer: Tokenizer, lineage=(), seed: int = 0, **model) -> Path:
    """A random-weight tiny checkpoint at `path` whose run id is `run_id`."""
    config = ModelConfig(**{**TINY_MODEL, **model})
    torch.manual_seed(seed)
    meta = {"run_id": run_id, "step": 1, "model": to_dict(config), "lineage": list(lineage)}
    save_checkpoint(path, weights_for_saving(GPT(config)), meta, tokenizer)
    return path


@pytest.fixture
def make_ckpt(tmp_path, tokenizer_file):
    """Write a random-weight checkpoint `tmp_path/NAME/final` whose run id is `run_id`."""

    def make(name: str, run_id: str, lineage=(), seed: int = 0, tokenizer: Tokenizer | None = None, **model):
        tokenizer = tokenizer or Tokenizer.load(tokenizer_file)
        return write_checkpoint(tmp_path / name / "final", run_id, tokenizer, lineage, seed, **model)

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


def states_equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def rooted(make_ckpt) -> tuple[Path, Path, Path]:
    """A base checkpoint on disk and two branches whose lineage names it."""
    base = make_ckpt("base", "base-id")
    ref = [{"run_id": "base-id", "path": str(base), "step": 1}]
    return base, make_ckpt("a", "run-a", ref, seed=1), make_ckpt("b", "run-b", ref, seed=2)


def test_slerp_returns_its_ends_and_keeps_the_norm_between_them() -> None:
    torch.manual_seed(0)
    a, b = {"w": torch.randn(4, 3), "v": torch.randn(5)}, {"w": torch.randn(4, 3), "v": torch.randn(5)}
    assert all(torch.equal(merge_slerp(a, b, 0.0)[k], a[k]) for k in a)
    assert all(torch.equal(merge_slerp(a, b, 1.0)[k], b[k]) for k in a)
    half = merge_slerp({"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 1.0])}, 0.5)["w"]
    assert torch.allclose(half, torch.tensor([0.5**0.5, 0.5**0.5]))  # on the arc, not the chord's midpoint
    parallel = merge_slerp({"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([2.0, 4.0])}, 0.25)["w"]
    assert torch.allclose(parallel, torch.tensor([1.25, 2.5]))  # no arc: linear interpolation
    with pytest.raises(SLMError, match="between 0 and 1"):
        merge_slerp(a, b, 1.5)


def test_task_arithmetic_adds_weighted_task_vectors_to_the_base() -> None:
    base = {"w": torch.tensor([1.0, 1.0])}
    models = [{"w": torch.tensor([2.0, 3.0])}, {"w": torch.tensor([4.0, -1.0])}]  # task vectors [1, 2], [3, -2]
    assert torch.allclose(merge_task_arithmetic(base, models, [1, 1], MergeOptions())["w"], torch.tensor([5.0, 1.0]))
    halved = merge_task_arithmetic(base, models, [1, 1], MergeOptions(scale=0.5))["w"]
    assert torch.allclose(halved, merge_linear(models, [1, 1])["w"])  # half the sum of two task vectors: the mean
    assert torch.allclose(merge_task_arithmetic(base, models, [3, 1], MergeOptions())["w"], torch.tensor([4.0, 3.0]))


def test_ties_trims_elects_a_sign_and_averages_the_agreeing_values() -> None:
    base = {"w": torch.zeros(4)}
    models = [{"w": torch.tensor([3.0, -1.0, 0.1, 2.0])}, {"w": torch.tensor([1.0, 2.0, -0.2, -4.0])}]
    # density 0.5 keeps [3, 0, 0, 2] and [0, 2, 0, -4]; elected signs + + 0 -; 2 disagrees with -4 and is dropped
    merged = merge_ties(base, models, [1, 1], MergeOptions(density=0.5))["w"]
    assert torch.allclose(merged, torch.tensor([3.0, 2.0, 0.0, -4.0]))
    both = merge_ties(base, [models[0], models[0]], [1, 3], MergeOptions(density=1.0))["w"]
    assert torch.allclose(both, models[0]["w"])  # agreeing values are averaged, not summed


@pytest.mark.parametrize("method", ["task-arithmetic", "ties"])
def test_zero_deltas_return_the_base(method) -> None:
    torch.manual_seed(0)
    base = {"w": torch.randn(8, 4), "n": torch.ones(4)}
    merged = METHODS[method].combine([base, dict(base)], [0.5, 0.5], base, MergeOptions())
    assert states_equal(merged, base)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_merging_a_checkpoint_with_itself_returns_it(make_ckpt, tmp_path, method) -> None:
    path = make_ckpt("a", "run-a")
    merged = load_checkpoint(merge_checkpoints([path, path], None, method, out=tmp_path / "self", base=path))
    assert states_equal(merged.state, load_checkpoint(path).state)
    assert merged.meta["merge"]["method"] == method


def test_base_methods_find_the_shared_base_and_record_it(make_ckpt, tmp_path) -> None:
    base, a, b = rooted(make_ckpt)
    merged = load_checkpoint(merge_checkpoints([a, b], [1, 1], "ties", out=tmp_path / "t"))
    record = merged.meta["merge"]
    assert record["base"] == str(base) and record["density"] == 0.2 and record["scale"] == 1.0
    base_state, states = load_checkpoint(base).state, [load_checkpoint(p).state for p in (a, b)]
    expected = merge_ties(base_state, states, [1, 1], MergeOptions())
    assert states_equal(merged.state, expected)
    assert "base-id" in merged.ancestors()
    linear = load_checkpoint(merge_checkpoints([a, b], None, "linear", out=tmp_path / "l", base=base))
    assert "base" not in linear.meta["merge"]  # linear reads no base


def test_base_methods_refuse_without_a_base_and_slerp_takes_two(make_ckpt, tmp_path) -> None:
    a, b = branches(make_ckpt)  # their shared base is not on disk
    with pytest.raises(SLMError, match="--base"):
        merge_checkpoints([a, b], None, "task-arithmetic", out=tmp_path / "m")
    with pytest.raises(SLMError, match="exactly 2 checkpoints, not 3"):
        merge_checkpoints([a, b, a], None, "slerp", out=tmp_path / "m")
    wide = make_ckpt("wide", "run-w", n_embd=64)
    with pytest.raises(SLMError, match="n_embd 32 vs 64"):
        merge_checkpoints([a, b], None, "ties", out=tmp_path / "m", base=wide)
    with pytest.raises(SLMError, match="density"):
        MergeOptions(density=0)
    assert not (tmp_path / "m").exists()
