from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import SLMError
from core.tokenizer.bpe import EOT, SPECIAL_TOKENS, Tokenizer, train_tokenizer
from core.tokenizer.chat_template import (
    END,
    completion_text,
    has_chat_tokens,
    is_chat_model,
    render_chat,
    render_chat_masked,
)
from tests.conftest import make_text


@pytest.fixture(scope="module")
def tok(tokenizer_file) -> Tokenizer:
    return Tokenizer.load(tokenizer_file)


def test_render_chat_wraps_each_turn_in_special_ids_and_prompts_the_assistant(tok) -> None:
    s = tok.special_ids
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "The cat"},
        {"role": "assistant", "content": "sees the moon."},
        {"role": "user", "content": "A dog"},
    ]
    ids = render_chat(messages, tok)
    expected = []
    for m in messages:
        expected += [s[f"<|{m['role']}|>"], *tok.encode(m["content"]), s["<|end|>"]]
    assert ids == [*expected, s["<|assistant|>"]]
    assert tok.decode(ids).startswith("<|system|>Be brief.<|end|><|user|>The cat<|end|>")
    assert render_chat(messages, tok, prompt_reply=False) == expected


def test_render_chat_refuses_unknown_roles(tok) -> None:
    with pytest.raises(SLMError, match="unknown chat role"):
        render_chat([{"role": "robot", "content": "hi"}], tok)


def test_a_tokenizer_without_chat_tokens_has_no_chat_template() -> None:
    plain = train_tokenizer([make_text(200)], vocab_size=300, special_tokens=[EOT])
    assert not has_chat_tokens(plain)
    assert not is_chat_model(plain, {"chat": True})
    with pytest.raises(SLMError, match="no chat tokens"):
        render_chat([{"role": "user", "content": "hi"}], plain)


def test_chat_model_needs_the_checkpoint_flag(tok) -> None:
    assert has_chat_tokens(tok)
    assert is_chat_model(tok, {"chat": True})
    assert not is_chat_model(tok, {})


def test_completion_text_continues_replies_and_starts_user_turns_on_new_lines() -> None:
    messages = [
        {"role": "system", "content": "ignored"},
        {"role": "user", "content": "The cat"},
        {"role": "assistant", "content": " sees the moon."},
        {"role": "user", "content": "A dog"},
        {"role": "assistant", "content": " runs.\n"},
        {"role": "user", "content": "The end"},
    ]
    assert completion_text(messages) == "The cat sees the moon.\nA dog runs.\nThe end"


def spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The runs of consecutive masked-in ids."""
    runs: list[list[int]] = []
    for i, (token, m) in enumerate(zip(ids, mask, strict=True)):
        if m:
            if i == 0 or not mask[i - 1]:
                runs.append([])
            runs[-1].append(token)
    return runs


CONTENT = st.lists(st.one_of(st.text(max_size=6), st.sampled_from([*SPECIAL_TOKENS, "User:", "\n"])), max_size=4)
MESSAGES = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]), "content": CONTENT.map("".join)}),
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=MESSAGES)
def test_template_round_trip_masks_exactly_the_assistant_replies(tok, messages) -> None:
    ids, mask = render_chat_masked(messages, tok)
    assert ids == render_chat(messages, tok, prompt_reply=False)
    assert tok.decode(ids) == "".join(f"<|{m['role']}|>{m['content']}<|end|>" for m in messages)
    replies = [m["content"] + END for m in messages if m["role"] == "assistant"]
    assert [tok.decode(run) for run in spans(ids, mask)] == replies
    # content never imitates the template: the special ids are exactly the markers of the turns
    special = set(tok.special_ids.values())
    assert sum(t in special for t in ids) == 2 * len(messages)
