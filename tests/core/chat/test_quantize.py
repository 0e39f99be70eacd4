"""int8 generation: the quantized model follows the exact one closely, its cache agrees with no cache,
matrices the kernel cannot take stay exact, and a bad choice is one line."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.chat.generate import Generator
from core.chat.quantize import Int8Linear, quantize
from core.chat.sampling import SamplingSettings
from core.config import ModelConfig
from core.errors import SLMError
from core.model import GPT
from core.tokenizer.bpe import Tokenizer
from tests.conftest import TINY_MODEL

SHAPE = {**TINY_MODEL, "n_embd": 64, "n_head": 2, "n_kv_head": 2, "mlp_hidden": 100}  # down's 100 does not split


def models(spread: float | None = None) -> tuple[GPT, GPT]:
    """A model and its int8 copy; `spread`: matrices drawn wider than the init, so that greedy choices vary."""
    torch.manual_seed(0)
    exact = GPT(ModelConfig(**SHAPE)).eval()
    for p in exact.parameters():
        if spread and p.dim() == 2:
            p.data.normal_(0, spread)
    copy = GPT(exact.config).eval()
    copy.load_state_dict(exact.state_dict())
    return exact, quantize(copy, "int8")


def test_int8_rows_hold_each_weight_within_half_a_step_of_its_scale() -> None:
    w = torch.randn(48, 64) * torch.logspace(-3, 1, 48)[:, None]  # rows of very different sizes
    q = Int8Linear(w)
    restored = q.int8.float() * q.scale.float()[:, None]
    assert q.int8.dtype == torch.int8 and q.int8.abs().max() <= 127
    assert ((restored - w).abs() <= q.scale.float()[:, None] * 0.5 + 1e-12).all()
    x = torch.randn(3, 5, 64)
    assert torch.allclose(q(x), x @ restored.t(), rtol=2e-2, atol=2e-2 * float((x @ restored.t()).abs().max()))


def test_the_int8_model_follows_the_exact_one_and_leaves_narrow_inputs_exact() -> None:
    exact, int8 = models()
    assert isinstance(int8.blocks[0].attn.qkv, Int8Linear) and isinstance(int8.lm_head, Int8Linear)
    assert isinstance(int8.blocks[0].mlp.down, nn.Linear)  # its input is 100 wide: the kernel wants 32s
    idx = torch.randint(0, SHAPE["vocab_size"], (2, 16))
    with torch.no_grad():
        (a, _), (b, _) = exact(idx, idx), int8(idx, idx)
    assert (a - b).abs().mean() < 0.03 * a.abs().mean() and not torch.equal(a, b)


def test_int8_decoding_with_the_cache_equals_decoding_without(tokenizer_file) -> None:
    tokenizer = Tokenizer.load(tokenizer_file)
    _, int8 = models(spread=0.3)
    gen = Generator(int8, tokenizer)
    prompt, greedy = tokenizer.encode("The cat sees"), SamplingSettings(temperature=0, max_tokens=20)
    cached = list(gen.token_ids(prompt, greedy))
    assert cached == list(gen.token_ids(prompt, greedy, use_cache=False)) and len(cached) == 20
    from core.chat.batch import samples

    assert len(set(cached)) > 3  # not one token over and over
    together = [seq.ids[len(prompt) :] for seq in samples(gen, prompt, greedy, 2)]
    assert together == [cached, cached]  # the batched decoder too


def test_a_generation_dtype_that_cannot_run_is_one_line() -> None:
    exact, _ = models()
    with pytest.raises(SLMError, match="unknown generation dtype 'int4': choose f32, int8"):
        quantize(exact, "int4")
    assert quantize(exact, "f32") is exact and isinstance(exact.lm_head, nn.Linear)
