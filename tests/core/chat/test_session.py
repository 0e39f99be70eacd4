"""The chat session's rules, without a screen: slash commands, sampling, modes, prompts, retry/pick/rate, saving."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from core.chat.feedback import FeedbackDB, preference_pairs
from core.chat.sampling import SamplingSettings
from core.chat.session import (
    COMMANDS,
    SLASH_COMMANDS,
    ChatSession,
    command_error,
    pair_recorded,
    parse_command,
    rating_value,
    reply_stats,
    sampling_text,
    transcript_markdown,
)
from core.errors import SLMError
from core.tokenizer.bpe import EOT, Tokenizer, train_tokenizer
from core.tokenizer.chat_template import END, completion_text
from tests.conftest import make_text

MODEL = Path("/ws/checkpoints/run/best")
NOW = time.struct_time((2024, 5, 6, 7, 8, 9, 0, 127, -1))


@pytest.fixture(scope="module")
def tok(tokenizer_file) -> Tokenizer:
    return Tokenizer.load(tokenizer_file)  # has the chat tokens


@pytest.fixture(scope="module")
def plain() -> Tokenizer:
    return train_tokenizer([make_text(200)], vocab_size=300, special_tokens=[EOT])


@pytest.fixture
def db(tmp_path: Path) -> FeedbackDB:
    return FeedbackDB(tmp_path / "feedback.sqlite")


def talked(*turns: str, **kwargs) -> ChatSession:
    """A session whose conversation alternates user and assistant turns, with its replies counted."""
    session = ChatSession(model="run/best", **kwargs)
    for i, text in enumerate(turns):
        if i % 2 == 0:
            session.add_user(text)
        else:
            session.finish_reply(text, 2)
    return session


# -- slash commands ----------------------------------------------------------------------------


def test_a_command_line_splits_into_its_lowercase_name_and_argument() -> None:
    assert parse_command("/TEMP  0.5 ") == ("temp", "0.5")
    assert parse_command("/system Be brief. Very.") == ("system", "Be brief. Very.")
    assert parse_command("/help") == ("help", "")
    with pytest.raises(SLMError) as e:
        parse_command("/frob x")
    assert str(e.value) == "unknown command /frob: /help lists the commands"


def test_every_command_has_one_usage_and_errors_start_with_it() -> None:
    assert len(COMMANDS) == len(SLASH_COMMANDS)
    assert COMMANDS["temp"] == "/temp X" and COMMANDS["save"] == "/save [FILE]"
    assert str(command_error("temp", SLMError("expected a number, not 'abc'"))) == (
        "/temp X: expected a number, not 'abc'"
    )


@pytest.mark.parametrize(
    ("name", "arg", "field", "value", "note"),
    [
        ("temp", "0.3", "temperature", 0.3, "temperature is now 0.3"),
        ("topk", "7", "top_k", 7, "top k is now 7"),
        ("topp", "0.9", "top_p", 0.9, "top p is now 0.9"),
        ("max", "12", "max_tokens", 12, "max tokens is now 12"),
    ],
)
def test_sampling_commands_change_one_setting(name, arg, field, value, note) -> None:
    session = ChatSession()
    assert session.set_sampling(name, arg) == note
    assert getattr(session.settings, field) == value
    assert session.settings == SamplingSettings(**{field: value})


@pytest.mark.parametrize(
    ("name", "arg", "error"),
    [
        ("temp", "abc", "expected a number, not 'abc'"),
        ("topk", "x", "expected a whole number, not 'x'"),
        ("max", "1.5", "expected a whole number, not '1.5'"),
        ("temp", "-1", "invalid sampling setting: temperature must be >= 0"),
        ("topp", "0", "invalid sampling setting: top_p must be in (0, 1]"),
    ],
)
def test_bad_sampling_values_are_refused_and_change_nothing(name, arg, error) -> None:
    session = ChatSession(settings=SamplingSettings(temperature=0.5))
    with pytest.raises(SLMError) as e:
        session.set_sampling(name, arg)
    assert str(e.value) == error
    assert session.settings == SamplingSettings(temperature=0.5)


def test_rate_words_and_the_sampling_summary() -> None:
    assert [rating_value(w) for w in ("+", "good", "-", "bad")] == [1, 1, -1, -1]
    with pytest.raises(SLMError, match=r"say /rate \+ \(good\) or /rate - \(bad\)"):
        rating_value("meh")
    assert sampling_text(SamplingSettings(temperature=0, top_k=5, top_p=0.5, max_tokens=9)) == (
        "temperature 0 · top-k 5 · top-p 0.5 · max tokens 9 · repetition penalty 1"
    )


def test_system_prompt_notes_say_when_it_is_ignored() -> None:
    session = ChatSession()
    assert session.set_system("Be brief.") == "system prompt set (ignored in completion mode: `/mode chat` uses it)"
    session.mode = "chat"
    assert session.set_system("Be kind.") == "system prompt set"
    assert session.set_system("") == "system prompt cleared" and session.system == ""


def test_params_and_reset_keep_the_system_prompt() -> None:
    session = talked("hi", "hello", system="Be brief.")
    assert session.params_lines()[1] == "- **mode** completion · system prompt: Be brief."
    assert session.reset() == "new conversation (the system prompt is kept)"
    assert (session.messages, session.used, session.system) == ([], 0, "Be brief.")
    assert ChatSession().reset() == "new conversation"


# -- modes and what the model reads ------------------------------------------------------------


def test_a_chat_model_is_talked_to_in_chat_mode(tok, plain) -> None:
    session = ChatSession()
    note = session.model_changed(MODEL, tok, {"chat": True})
    assert session.mode == "chat" and session.model == "run/best"
    assert note == "Chatting with **run/best** in chat mode (turns in the chat template). `/help` lists the commands."
    assert "completion mode (the model continues your text)" in session.model_changed(MODEL, tok, {})
    session.model_changed(MODEL, plain, {"chat": True})  # no chat tokens: completion, whatever the checkpoint says
    assert session.mode == "completion"


def test_a_new_model_counts_the_context_of_the_conversation_so_far(tok) -> None:
    session = talked("The cat", " sees the moon.")
    session.model_changed(MODEL, tok, {})
    assert session.used == len(tok.encode("The cat sees the moon."))
    session.reset()
    session.model_changed(MODEL, tok, {})
    assert session.used == 0


def test_mode_switches_with_its_checks(tok, plain) -> None:
    session = ChatSession()
    with pytest.raises(SLMError, match="say /mode chat or /mode completion"):
        session.set_mode("talk", tok, {})
    with pytest.raises(SLMError, match="this model's tokenizer has no chat tokens: only completion mode works"):
        session.set_mode("chat", plain, {})
    assert session.mode == "completion"
    assert session.set_mode("chat", tok, {}) == "chat mode (this model was not fine-tuned on conversations)"
    assert session.set_mode("chat", tok, {"chat": True}) == "chat mode"
    assert session.set_mode("chat", None, {}) == "chat mode"  # no model loaded yet
    assert session.set_mode("completion", plain, {}) == "completion mode" and session.mode == "completion"


def test_chat_mode_reads_the_system_prompt_first_and_stops_at_end(tok) -> None:
    session = talked("A", "B", "C", system="Hi", mode="chat", settings=SamplingSettings(stop=["\n"]))
    assert session.conversation()[0] == {"role": "system", "content": "Hi"}
    text = tok.decode(session.prompt_ids(tok))
    assert text == "<|system|>Hi<|end|><|user|>A<|end|><|assistant|>B<|end|><|user|>C<|end|><|assistant|>"
    assert session.reply_settings().stop == ["\n", END]
    assert session.settings.stop == ["\n"]  # the session's own settings are left alone


def test_completion_mode_reads_plain_text_without_the_system_prompt(tok) -> None:
    session = talked("The cat", " sees", "A dog", system="Hi")
    assert session.conversation() == session.messages
    assert session.prompt_ids(tok) == tok.encode(completion_text(session.messages)) == tok.encode("The cat sees\nA dog")
    assert session.reply_settings() == session.settings


def test_a_reply_counts_its_prompt_within_the_context_and_then_its_tokens(tok) -> None:
    session = talked("The cat sees the moon. A dog finds the sea.")
    ids, settings = session.start_reply(tok, context=1000)
    assert ids == session.prompt_ids(tok) and session.used == len(ids) and settings == session.settings
    session.start_reply(tok, context=4)
    assert session.used == 3  # a cut prompt fills the context but for the reply's first token
    session.finish_reply("It", 5)
    assert (session.used, session.replies, session.last_reply()) == (8, 1, "It")


def test_reply_stats() -> None:
    assert reply_stats(12, "3.4k", "length", 0) == "12 tokens · 3.4k tok/s · max tokens reached"
    assert reply_stats(3, "9", "stop", 5) == (
        "3 tokens · 9 tok/s · end of reply · prompt cut: the oldest 5 tokens did not fit the context"
    )
    assert reply_stats(1, "1", "cancelled", 0).endswith("stopped")
    assert reply_stats(1, "1", "weird", 0).endswith("weird")


# -- retry, pick and rate ----------------------------------------------------------------------


def test_retry_takes_back_the_last_reply_and_keeps_it_for_pick() -> None:
    with pytest.raises(SLMError, match="nothing to retry yet"):
        ChatSession().retry()
    session = talked("hi", "hello", "how?", "so", mode="chat", system="S", settings=SamplingSettings(top_k=3))
    assert session.retry() is True
    assert session.messages[-1] == {"role": "user", "content": "how?"}
    earlier = session.earlier
    assert (earlier.answer, earlier.rating, earlier.model, earlier.mode) == ("so", 1, "run/best", "chat")
    assert earlier.conversation == [{"role": "system", "content": "S"}, *session.messages]
    assert earlier.sampling["top_k"] == 3
    assert session.retry() is False and session.earlier is earlier  # the prompt still waits for its reply
    session.add_user("never mind")
    assert session.earlier is None


@pytest.mark.parametrize(("choice", "kept", "ratings"), [("1", "first", [1, -1]), ("2", "second", [-1, 1])])
def test_pick_stores_the_better_reply_as_good_and_keeps_it(db, choice, kept, ratings) -> None:
    session = talked("hi", "first")
    session.retry()
    session.finish_reply("second", 2)
    work = session.pick(choice, db)
    assert session.earlier is None and session.last_reply() == kept
    ids = work()
    stored = db.ratings()
    assert [(r.answer, r.rating) for r in stored] == list(zip(["first", "second"], ratings, strict=True))
    assert all(r.conversation == [{"role": "user", "content": "hi"}] for r in stored)
    assert len(preference_pairs(stored)) == 1  # a pair `slm dpo` learns from
    assert pair_recorded(ids) == f"recorded which reply is better (#{ids[0]} and #{ids[1]} in `feedback.sqlite`)"


def test_pick_needs_a_retry_and_says_one_or_two(db) -> None:
    session = talked("hi", "hello")
    with pytest.raises(SLMError, match="nothing to pick from: /retry a reply first"):
        session.pick("1", db)
    session.retry()
    with pytest.raises(SLMError, match="nothing to pick from"):
        session.pick("1", db)  # the new reply has not come yet
    session.finish_reply("again", 1)
    with pytest.raises(SLMError, match=r"say /pick 1 \(the earlier reply\) or /pick 2 \(the new one\)"):
        session.pick("3", db)
    assert session.earlier is not None and not db.ratings()


def test_a_second_rating_of_a_reply_changes_it_and_a_new_reply_gets_its_own(db) -> None:
    session = ChatSession()
    with pytest.raises(SLMError, match="no reply to rate yet"):
        session.rate(1, db)
    session = talked("hi", "hello")
    result = session.rate(1, db)()
    assert session.rated(*result) == f"rated the last reply good (#{result[1]} in `feedback.sqlite`)"
    assert session.rated(*session.rate(-1, db)()).startswith("rated the last reply bad")
    assert [(r.answer, r.rating) for r in db.ratings()] == [("hello", -1)]
    session.add_user("more")
    with pytest.raises(SLMError, match="no reply to rate yet"):
        session.rate(1, db)  # while the reply streams
    session.finish_reply("yes", 1)
    session.rated(*session.rate(1, db)())
    assert [(r.answer, r.rating) for r in db.ratings()] == [("hello", -1), ("yes", 1)]
    assert db.ratings()[1].conversation == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "more"},
    ]


# -- saving ------------------------------------------------------------------------------------


def test_transcript_has_a_section_per_message() -> None:
    text = transcript_markdown(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello\n"}], "Chat", ["model: m"]
    )
    assert text == "# Chat\n\n- model: m\n\n## User\n\nhi\n\n## Assistant\n\nhello\n"


def test_save_writes_under_the_workspace_by_default(tmp_path: Path) -> None:
    with pytest.raises(SLMError, match="nothing to save yet"):
        ChatSession().save("", tmp_path)
    session = talked("hi", "hello", settings=SamplingSettings(max_tokens=5))
    path, text = session.save("", tmp_path, NOW)
    assert path == tmp_path / "checkpoints" / "chats" / "20240506-070809.md"
    assert text.startswith(
        "# SLM Studio chat\n\n- model: run/best (completion mode)\n"
        "- sampling: temperature 0.8 · top-k 50 · top-p 1 · max tokens 5 · repetition penalty 1\n"
        "- system prompt: (none)\n- saved: 2024-05-06 07:08\n\n## User\n\nhi\n"
    )
    assert session.save("talk.md", tmp_path)[0] == tmp_path / "talk.md"
    assert session.save(str(tmp_path / "x" / "a.md"), Path("/elsewhere"))[0] == tmp_path / "x" / "a.md"
    assert "- model: none (completion mode)" in ChatSession(messages=session.messages).save("", tmp_path)[1]
