from __future__ import annotations

import random

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers

from core.errors import SLMError
from core.tokenizer import encoder
from core.tokenizer.bpe import train_tokenizer
from core.tokenizer.encoder import Encoder, WordEncoder
from tests.conftest import make_text

# every character Python or the tokenizer counts as whitespace, and some that look like it and are not
SPACES = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000\u180e\u200b\ufeff"
ODD = "²³½¹Ⅻ〇٣_'’"  # numbers that are not digits, digits of other scripts, an underscore, apostrophes


def unicode_text(seed: int, n: int = 6000) -> str:
    rng = random.Random(seed)
    alphabet = SPACES + ODD + "ab1,'s" + "".join(chr(c) for c in range(0x370, 0x3FF)) + "日本語の文字🙂👍🏽𝔘"
    words = ["'s", "'re", "'ll", "don't", "x'", "<|endoftext|>", "<|user|>", "<|end", " "]
    return "".join(rng.choice(alphabet) if rng.random() < 0.8 else rng.choice(words) for _ in range(n))


def ascii_spaced_text(seed: int, n: int = 8000) -> str:
    """ASCII whitespace in every arrangement, with letters of other scripts."""
    rng = random.Random(seed)
    spaces = " \t\n\v\f\r\x1c\x1f"
    words = ["a", "1,", "'s", "don't", "日本語", "🙂", "x" * 30, "élan", "\r\n", "\n\n\n", "  ", " \n", "\n "]
    return "".join(rng.choice(spaces) if rng.random() < 0.4 else rng.choice(words) for _ in range(n))


@pytest.fixture(scope="module")
def tok():
    windows = make_text(200, seed=2).replace("\n", "\r\n")  # so that "\r\n" and "\n\n\n" are tokens of their own
    gaps = make_text(200, seed=3).replace("\n\n", "\n\n\n\n")
    texts = [make_text(300, seed=1), unicode_text(0), windows, gaps, ascii_spaced_text(0, 20000)]
    return train_tokenizer(texts, vocab_size=800)  # runs of whitespace of every kind are tokens of their own


def reference(hf, texts: list[str]) -> tuple[list[int], list[int]]:
    encoded = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    return [i for ids in encoded for i in ids], [len(ids) for ids in encoded]


def test_the_ids_are_the_tokenizers_own_on_unicode_heavy_text(tok) -> None:
    enc = WordEncoder(tok.to_json())
    assert enc.fast
    texts = [unicode_text(seed) for seed in range(1, 6)]
    texts += [" " + texts[0], texts[1] + " ", "", " ", "  x", "<|endoftext|>", " <|endoftext|> x", make_text(50)]
    texts += [make_text(60, seed=3).replace("\n", "\r\n"), "a\r\nb\r\n\r\nc \r\nd\r\n e\r\r\nf\r\n"]  # Windows lines
    texts += [
        make_text(30, seed=4) + "\n",
        "a\n\n\nb c\n\n\n\nd\n\n",
        "x\n\n y z\n y\n\n w",
        make_text(40).replace("\n\n", "\n\n\n"),
    ]
    texts += ["".join(a + b + c for a in SPACES + "a1,'" for b in SPACES for c in SPACES + "a1,'s")]
    ids, lengths = enc.encode(texts)
    assert (ids.tolist(), lengths.tolist()) == reference(tok.hf, texts)
    again, _ = enc.encode(texts[::-1])  # from the table now
    assert again.tolist() == reference(tok.hf, texts[::-1])[0]


def test_a_full_table_starts_afresh_and_stays_right(tok, monkeypatch) -> None:
    monkeypatch.setattr(encoder, "MAX_KEYS", 50)
    enc = WordEncoder(tok.to_json())
    for seed in range(3):
        texts = [make_text(40, seed=seed), unicode_text(seed, 500)]
        assert enc.encode(texts)[0].tolist() == reference(tok.hf, texts)[0]
        assert enc.size <= max(50, len(set(texts[0].split()) | set(texts[1].split())) * 4)


def test_a_tokenizer_that_splits_otherwise_is_encoded_by_itself(tok) -> None:
    other = HFTokenizer.from_str(tok.to_json())
    other.normalizer = normalizers.NFKC()
    metaspace = HFTokenizer(models.BPE())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    for hf in (other, metaspace):
        enc = WordEncoder(hf.to_str())
        assert not enc.fast
        texts = [unicode_text(7, 800), "  a b", ""]
        ids, lengths = enc.encode(texts)
        assert (ids.tolist(), lengths.tolist()) == reference(hf, texts)


def test_texts_encode_alike_in_worker_processes_and_a_dead_one_is_a_one_line_error(tok) -> None:
    texts = [unicode_text(9, 2000), make_text(80)]
    with Encoder(tok.to_json(), workers=2) as pool:
        results = [pool.submit(texts[i % 2 :]) for i in range(4)]
        assert [r.result(timeout=60)[0].tolist() for r in results[:2]] == [
            reference(tok.hf, texts[i:])[0] for i in (0, 1)
        ]
        pool._pool[0].process.kill()
        with pytest.raises(SLMError, match="an encoding process stopped"):
            pool.submit(texts).result(timeout=60)


def test_text_without_added_tokens_is_cut_on_its_bytes_to_the_same_ids(tok) -> None:
    enc = WordEncoder(tok.to_json())
    texts = [ascii_spaced_text(seed) for seed in range(4)] + ["", " ", "x", "a\r\nb", "", "\n", "ab \n", "\r\n a"]
    texts += [unicode_text(seed).replace("<|", "<") for seed in (21, 22, 23)]  # whitespace of every kind
    texts += [
        "a\xa0 b\u3000\nc \u2028d\r\n\x85e",
        "".join(a + b + c for a in SPACES + "a1" for b in SPACES for c in SPACES),
    ]
    texts += [make_text(40, seed=5), make_text(40, seed=6).replace("\n", "\r\n"), "a\n\nb\n\n\nc  d \n"]
    ids, lengths = enc.encode(texts)
    assert (ids.tolist(), lengths.tolist()) == reference(tok.hf, texts)
    assert enc.chunks.count > 100 and all(isinstance(k, bytes) for k in enc.index)  # long chunks only
    mixed = [texts[0], unicode_text(11, 800), "", texts[3], "<|endoftext|> a b"]  # both paths in one batch
    ids, lengths = enc.encode(mixed)
    assert (ids.tolist(), lengths.tolist()) == reference(tok.hf, mixed)


def test_the_utf8_pattern_finds_every_whitespace_character_above_ascii() -> None:
    from core.tokenizer.chunks import UNICODE_SPACE, WHITESPACE

    found = [c for c in range(0x80, 0x110000) if not 0xD800 <= c < 0xE000 and UNICODE_SPACE.search(chr(c).encode())]
    assert found == [c for c in range(0x80, 0x110000) if chr(c).isspace()]
    assert WHITESPACE.nonzero()[0].tolist() == [c for c in range(128) if chr(c).isspace()]
