from __future__ import annotations

import json

import pytest

from core.data.conversations import DialogFormat, read_conversations, resolve_files
from core.errors import SLMError


def test_jsonl_messages_are_read_and_text_records_skipped(tmp_path) -> None:
    path = tmp_path / "chat.jsonl"
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    lines = [
        {"messages": [*chat, {"role": "assistant", "content": "Hello."}]},
        {"text": "a plain document"},
        {"messages": chat},  # no reply: nothing to learn
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    found = read_conversations([path])
    assert found.conversations == [lines[0]["messages"]]
    assert found.without_reply == 1 and found.text_records == 1


def test_dialog_text_with_custom_prefixes(tmp_path) -> None:
    path = tmp_path / "talk.txt"
    path.write_text(
        "Human: What is 2+2?\nAI: 4.\nHuman: And 3+3?\nAI: 6.\nIt is even.\n\n\nHuman: Bye\nAI: Bye!\n",
        encoding="utf-8",
    )
    found = read_conversations([path], DialogFormat(user="Human:", assistant="AI:"))
    assert found.conversations == [
        [
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
            {"role": "assistant", "content": "6.\nIt is even."},
        ],
        [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Bye!"}],
    ]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("a.jsonl", '{"messages": [{"role": "user", "content": "x"}]}\n{broken\n', "a.jsonl:2: not valid JSON"),
        ("b.jsonl", '{"messages": [{"role": "robot", "content": "x"}]}\n', "b.jsonl:1: message 1 has role 'robot'"),
        ("c.jsonl", '{"prompt": "x"}\n', 'c.jsonl:1: a record needs "messages"'),
        ("d.txt", "User: hi\n\nhello\nBot: x\n", "d.txt:3: a turn must start with a speaker prefix"),
        ("e.txt", "User: only a question\n", "no conversations with an assistant reply"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_line(tmp_path, name, text, message) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(SLMError, match=message.replace("(", r"\(").replace("+", r"\+")) as error:
        read_conversations([tmp_path / name])
    assert "\n" not in str(error.value)


def test_files_are_found_in_data_or_by_path(tmp_path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "c.jsonl").write_text("", encoding="utf-8")
    assert resolve_files(data, ["c.jsonl"]) == [data / "c.jsonl"]
    assert resolve_files(data, [str(data / "c.jsonl")]) == [data / "c.jsonl"]
    with pytest.raises(SLMError, match="does not exist"):
        resolve_files(data, ["missing.jsonl"])
    with pytest.raises(SLMError, match="speaker prefixes"):
        DialogFormat(user="A:", assistant="A:")
