from __future__ import annotations

import pytest
import torch

from core.chat.generate import Generator, sample_next
from core.chat.sampling import SamplingSettings
from core.config import ModelConfig
from core.errors import SLMError
from core.model import GPT
from core.tokenizer.bpe import Tokenizer
from tests.conftest import TINY_MODEL


@pytest.fixture
def gen(tokenizer_file) -> Generator:
    torch.manual_seed(0)
    return Generator(GPT(ModelConfig(**TINY_MODEL)), Tokenizer.load(tokenizer_file))


def greedy(n: int) -> SamplingSettings:
    return SamplingSettings(temperature=0, max_tokens=n)


def test_kv_cache_output_equals_no_cache_output(gen) -> None:
    prompt = gen.tokenizer.encode("The cat sees")
    cached = list(gen.token_ids(prompt, greedy(25)))
    uncached = list(gen.token_ids(prompt, greedy(25), use_cache=False))
    assert cached == uncached and len(cached) >= 1


def test_sampling_with_a_seed_is_reproducible(gen) -> None:
    settings = SamplingSettings(temperature=1.0, top_k=0, max_tokens=20, seed=7)
    assert gen.generate("The", settings) == gen.generate("The", settings)


def test_generation_continues_past_the_context(gen) -> None:
    gen.stop_ids = set()  # an untrained model may emit <|endoftext|> early
    out = list(gen.token_ids([5], greedy(80)))
    assert len(out) == 80  # context is 32: the cache restarted from its newest half


def test_long_prompt_is_truncated_from_the_left(gen) -> None:
    stream = gen.stream("the cat sees the moon. " * 40, greedy(3))
    stream.text()
    assert stream.truncated > 0
    assert stream.prompt_tokens == gen.config.context - 1


def test_stop_strings_end_the_text_before_them(gen) -> None:
    full = gen.generate("The", SamplingSettings(temperature=1.0, max_tokens=30, seed=3))
    assert len(full) > 4
    stop = full[2:4]
    stream = gen.stream("The", SamplingSettings(temperature=1.0, max_tokens=30, seed=3, stop=[stop]))
    text = stream.text()
    assert text == full[: full.index(stop)]
    assert stream.finish_reason == "stop"


def test_stream_pieces_are_whole_characters(tokenizer_file) -> None:
    tok = Tokenizer.load(tokenizer_file)
    emoji_ids = tok.encode("🎉é")  # several byte-level tokens
    assert len(emoji_ids) > 2

    class Scripted(Generator):
        def token_ids(self, prompt, settings, cancelled=None, use_cache=True):
            yield from emoji_ids

    g = Scripted(GPT(ModelConfig(**TINY_MODEL)), tok)
    pieces = list(g.stream("x", greedy(10)))
    assert "".join(pieces) == "🎉é"
    assert all("\ufffd" not in p for p in pieces)


def test_cancel_stops_generation(gen) -> None:
    gen.stop_ids = set()
    calls = iter(range(100))
    stream = gen.stream("The", greedy(50), cancelled=lambda: next(calls) >= 5)
    stream.text()
    assert stream.finish_reason == "cancelled"
    assert stream.new_tokens == 5


def test_top_k_one_is_greedy_and_penalty_lowers_repeats() -> None:
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    g = torch.Generator().manual_seed(0)
    assert sample_next(logits, SamplingSettings(temperature=1.0, top_k=1), None, g) == 1
    penalised = SamplingSettings(temperature=0, repetition_penalty=4.0)
    assert sample_next(logits, penalised, torch.tensor([1]), g) == 2


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.tensor([5.0, 4.9, -5.0, -5.0])
    g = torch.Generator().manual_seed(0)
    picks = {sample_next(logits, SamplingSettings(temperature=1.0, top_k=0, top_p=0.5), None, g) for _ in range(50)}
    assert picks <= {0, 1}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SLMError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(SLMError, match="top_p"):
        SamplingSettings(top_p=0)


def test_an_imported_tokenizer_stops_at_its_own_end_token() -> None:
    """Imported models end with their own special token (here Llama's </s>), never with the same text unmarked."""
    from core.tokenizer.bpe import train_tokenizer
    from tests.conftest import make_text

    tok = train_tokenizer([make_text(200)], vocab_size=320, special_tokens=["</s>", "<unk>"])
    tok.hf.add_tokens(["<|im_end|>"])  # an added token that is not special: text, not an end
    tok = Tokenizer.from_json(tok.to_json())
    end, plain = tok.hf.token_to_id("</s>"), tok.hf.token_to_id("<|im_end|>")
    assert tok.stop_ids == {end} and plain is not None
    model = GPT(ModelConfig(**{**TINY_MODEL, "vocab_size": tok.vocab_size, "tie_embeddings": False}))
    torch.nn.init.zeros_(model.lm_head.weight)  # every logit 0: greedy picks id 0, which is </s>
    assert end == 0
    stream = Generator(model, tok).stream("The", greedy(10))
    assert stream.text() == "" and stream.finish_reason == "eot"
