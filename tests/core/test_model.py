from __future__ import annotations

import pytest
import torch

from core.config import PRESETS, ModelConfig, TrainConfig, count_params, estimate_memory
from core.errors import SLMError
from core.model import GPT, Decoder, KVCache, apply_rope, rope_tables
from tests.conftest import TINY_MODEL


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(**{**TINY_MODEL, **overrides}))


@pytest.mark.parametrize("name", ["toy", "small", "base"])
def test_param_count_formula_matches_the_model(name) -> None:
    config = ModelConfig(**PRESETS[name].model)
    assert count_params(config) == GPT(config).num_params()


def test_presets_have_the_promised_sizes() -> None:
    sizes = {n: count_params(ModelConfig(**p.model)) / 1e6 for n, p in PRESETS.items()}
    expected = {"toy": 1, "small": 10, "base": 35, "gpt2": 124, "large": 350, "1b": 1100}
    for name, target in expected.items():
        assert 0.75 * target <= sizes[name] <= 1.3 * target, (name, sizes[name])


def test_memory_estimate_grows_with_batch() -> None:
    m = ModelConfig(**PRESETS["toy"].model)
    small, big = estimate_memory(m, TrainConfig(batch_size=4)), estimate_memory(m, TrainConfig(batch_size=64))
    assert big.total > small.total and big.weights == small.weights == count_params(m) * 4


def test_invalid_shapes_are_refused() -> None:
    with pytest.raises(SLMError, match="multiple of n_head"):
        ModelConfig(n_embd=100, n_head=3)
    with pytest.raises(SLMError, match="n_kv_head"):
        ModelConfig(n_head=4, n_kv_head=3)


def test_tied_embeddings_share_the_matrix() -> None:
    model = tiny()
    assert model.lm_head.weight is model.embed.weight
    untied = tiny(tie_embeddings=False)
    assert untied.lm_head.weight is not untied.embed.weight


def test_loss_starts_near_uniform() -> None:
    model = tiny()
    x, y = torch.randint(0, 320, (2, 4, 32))
    _, loss = model(x, y)
    assert abs(loss.item() - torch.log(torch.tensor(320.0)).item()) < 0.5


def test_rope_rotates_pairs_and_keeps_norms() -> None:
    cos, sin = rope_tables(8, 16, 10000.0)
    x = torch.randn(1, 16, 2, 8)
    y = apply_rope(x, cos[:, None], sin[:, None])
    assert torch.allclose(x.norm(dim=-1), y.norm(dim=-1), atol=1e-5)
    assert torch.equal(y[:, 0], x[:, 0])  # position 0 is not rotated


def test_attention_is_causal() -> None:
    model = tiny().eval()
    x = torch.randint(0, 320, (1, 20))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 320
    a, _ = model(x, x)
    b, _ = model(y, y)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_kv_cache_gives_the_same_logits(kv_heads) -> None:
    model = tiny(n_kv_head=kv_heads).eval()
    x = torch.randint(0, 320, (2, 24))
    full, _ = model(x, x)
    cache = KVCache(model.config, 2, 32, "cpu", torch.float32)
    with torch.no_grad():
        model(x[:, :10], cache=cache)  # prefill
        chunk, _ = model(x[:, 10:14], x[:, 10:14], cache=cache)  # several tokens after a prefill
        steps = [model(x[:, i : i + 1], cache=cache)[0][:, -1] for i in range(14, 24)]
    assert torch.allclose(chunk, full[:, 10:14], atol=1e-5)
    assert torch.allclose(torch.stack(steps, 1), full[:, 14:24], atol=1e-5)


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_decoder_matches_the_full_forward(kv_heads) -> None:
    model = tiny(n_kv_head=kv_heads).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:  # norm weights away from 1, so their placement is checked too
                p.uniform_(0.5, 1.5)
    x = torch.randint(0, 320, (1, 32))
    full, _ = model(x, x)
    cache = KVCache(model.config, 1, 32, "cpu", torch.float32)
    with torch.no_grad():
        model(x[:, :5], cache=cache)
        decoder = Decoder(model, cache)
        steps = [decoder.step(int(x[0, i])) for i in range(5, 32)]
        assert cache.pos == 32
        with pytest.raises(ValueError, match="exceeds the context"):
            decoder.step(0)
    assert torch.allclose(torch.stack(steps), full[0, 5:], atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    x = torch.randint(0, 320, (2, 32))
    grads = []
    for flag in (False, True):
        model = tiny()
        model.grad_checkpoint = flag
        _, loss = model(x, x)
        loss.backward()
        grads.append(model.blocks[0].attn.qkv.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_sequence_longer_than_context_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceeds the context"):
        tiny()(torch.zeros(1, 33, dtype=torch.long))


def test_weight_decay_only_on_hidden_matrices() -> None:
    model = tiny()
    (adamw,) = model.optimizers(TrainConfig(weight_decay=0.1), "cpu")
    decayed = {id(p) for g in adamw.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in decayed}
    assert names and all(n.startswith("blocks.") and "norm" not in n for n in names)
    assert "embed.weight" not in names


def test_muon_takes_the_hidden_matrices() -> None:
    model = tiny()
    _adamw, muon = model.optimizers(TrainConfig(optimizer="muon"), "cpu")
    muon_params = {id(p) for g in muon.param_groups for p in g["params"]}
    assert all(p.dim() == 2 for g in muon.param_groups for p in g["params"])
    assert id(model.embed.weight) not in muon_params
    assert len(muon_params) == 4 * TINY_MODEL["n_layer"]
