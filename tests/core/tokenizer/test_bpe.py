from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.errors import Cancelled, SLMError
from core.tokenizer.bpe import EOT, SPECIAL_TOKENS, Tokenizer, min_vocab_size, train_tokenizer
from tests.conftest import make_text


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return train_tokenizer([make_text(400), "naïve café — 東京 🎉\n"], vocab_size=400)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_unicode(tok: Tokenizer, text: str) -> None:
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_stream_decoder_never_splits_a_character(tok: Tokenizer, text: str) -> None:
    decoder = tok.stream_decoder()
    pieces = [decoder.push(i) for i in tok.encode(text)] + [decoder.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces if "\ufffd" not in text)


def test_special_tokens_are_single_ids(tok: Tokenizer) -> None:
    for token in SPECIAL_TOKENS:
        assert len(tok.encode(token)) == 1
    assert tok.eot_id == tok.encode(EOT)[0]
    assert tok.byte_lengths()[tok.eot_id] == 0


def test_byte_lengths_add_up_to_the_text(tok: Tokenizer) -> None:
    text = "Byte lengths: ünïcödé and emoji 🎉 too."
    lengths = tok.byte_lengths()
    assert sum(lengths[i] for i in tok.encode(text)) == len(text.encode("utf-8"))


def test_vocab_size_and_bytes_per_token(tok: Tokenizer) -> None:
    assert 300 < tok.vocab_size <= 400  # BPE stops early when the text has no more pairs to merge
    assert tok.bytes_per_token([make_text(50, seed=9)]) > 1.5


def test_too_small_vocab_is_refused() -> None:
    with pytest.raises(SLMError, match="too small"):
        train_tokenizer(["hello"], vocab_size=min_vocab_size() - 1)


def test_empty_text_is_refused() -> None:
    with pytest.raises(SLMError, match="no text"):
        train_tokenizer(["", ""], vocab_size=300)


def test_training_can_be_cancelled() -> None:
    with pytest.raises(Cancelled):
        train_tokenizer((make_text(5) for _ in range(1000)), vocab_size=300, cancelled=lambda: True)


def test_save_load_keeps_hash(tok: Tokenizer, tmp_path) -> None:
    tok.save(tmp_path / "t.json")
    again = Tokenizer.load(tmp_path / "t.json")
    assert again.hash == tok.hash
    assert again.encode("the cat sees the moon") == tok.encode("the cat sees the moon")


def test_loading_garbage_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SLMError, match="not a valid tokenizer"):
        Tokenizer.load(tmp_path / "bad.json")
