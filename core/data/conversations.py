"""Conversations, and the files they are read from for supervised fine-tuning: OpenAI-style JSONL and dialog text.

A conversation is a list of messages `{"role": "system" | "user" | "assistant", "content": str}` (the
OpenAI shape, so fine-tuning, rating and serving read the same thing).

- `.jsonl`: one conversation per line, `{"messages": [{"role": "user", "content": "..."}, ...]}` with roles
  system, user and assistant. Lines without `messages` (plain `text` documents) are skipped.
- `.txt` / `.md`: dialog text. Conversations are separated by blank lines; a line that starts with a speaker
  prefix (`User:`, `Bot:`, `System:` by default) starts a turn, and the lines after it continue that turn.

Conversations without an assistant reply teach nothing and are counted apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.errors import SLMError

ROLES = ("system", "user", "assistant")
DIALOG_SUFFIXES = (".txt", ".md")

Message = dict[str, str]


def last_user_message(messages: list[Message]) -> str:
    """What the next reply answers: the content of the last user message ("" when there is none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


@dataclass(frozen=True)
class DialogFormat:
    """The speaker prefixes of dialog text, e.g. `User:` and `Bot:`."""

    user: str = "User:"
    assistant: str = "Bot:"
    system: str = "System:"

    def __post_init__(self) -> None:
        prefixes = [self.user, self.assistant, self.system]
        if not all(p.strip() for p in prefixes) or len(set(prefixes)) < 3:
            raise SLMError("speaker prefixes must be three different, non-empty texts")

    def speaker(self, line: str) -> tuple[str, str] | None:
        """(role, text after the prefix) when `line` starts a turn; the longest matching prefix wins."""
        matches = [(p, role) for role, p in self.prefixes().items() if line.startswith(p)]
        if not matches:
            return None
        prefix, role = max(matches, key=lambda m: len(m[0]))
        return role, line[len(prefix) :].removeprefix(" ")

    def prefixes(self) -> dict[str, str]:
        return {"user": self.user, "assistant": self.assistant, "system": self.system}


@dataclass
class ConversationSet:
    """Conversations read from files, with a fingerprint of the files and how many were left out."""

    conversations: list[list[Message]]
    fingerprint: str
    without_reply: int = 0
    text_records: int = 0  # JSONL lines with `text` but no `messages`


def resolve_files(data_dir: Path, refs: list[str]) -> list[Path]:
    """Conversation files named relative to `data_dir`, or as paths."""
    if not refs:
        raise SLMError("name the conversation files with --data FILE (a .jsonl with messages, or dialog .txt)")
    paths = []
    for ref in refs:
        found = next((p for p in (Path(data_dir) / ref, Path(ref).expanduser()) if p.is_file()), None)
        if found is None:
            raise SLMError(f"conversation file {ref} does not exist (looked in {data_dir} and the current folder)")
        if found.suffix.lower() not in (".jsonl", *DIALOG_SUFFIXES):
            raise SLMError(f"{ref} is not a .jsonl, .txt or .md file")
        paths.append(found)
    return paths


def read_conversations(paths: list[Path], dialog: DialogFormat | None = None) -> ConversationSet:
    """Read every conversation of `paths`; a malformed record is a one-line error naming its line."""
    dialog = dialog or DialogFormat()
    digest = hashlib.blake2b(digest_size=16)
    result = ConversationSet([], "")
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise SLMError(f"{path} is not UTF-8 text") from None
        except OSError as e:
            raise SLMError(f"{path} cannot be read ({e.strerror or e})") from None
        digest.update(f"{path.name}\0{text}\0".encode())
        found = _jsonl(text, path, result) if path.suffix.lower() == ".jsonl" else _dialog(text, path, dialog)
        for messages in found:
            if any(m["role"] == "assistant" and m["content"] for m in messages):
                result.conversations.append(messages)
            else:
                result.without_reply += 1
    result.fingerprint = digest.hexdigest()
    if not result.conversations:
        raise SLMError(f"no conversations with an assistant reply in {', '.join(p.name for p in paths)}")
    return result


def _jsonl(text: str, path: Path, result: ConversationSet) -> Iterator[list[Message]]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise SLMError(f"{path}:{number}: not valid JSON ({e.msg})") from None
        if isinstance(record, dict) and "messages" not in record and isinstance(record.get("text"), str):
            result.text_records += 1
            continue
        if not isinstance(record, dict) or "messages" not in record:
            raise SLMError(f'{path}:{number}: a record needs "messages": [{{"role": ..., "content": ...}}, ...]')
        yield _messages(record["messages"], f"{path}:{number}")


def _messages(value: object, where: str) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise SLMError(f"{where}: messages must be a non-empty list")
    messages = []
    for i, message in enumerate(value, 1):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise SLMError(f"{where}: message {i} needs a role and a content string")
        if message.get("role") not in ROLES:
            raise SLMError(f"{where}: message {i} has role {message.get('role')!r}: use one of {', '.join(ROLES)}")
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


def _dialog(text: str, path: Path, dialog: DialogFormat) -> Iterator[list[Message]]:
    """Blank lines end a conversation; a prefixed line starts a turn; other lines continue the turn."""
    messages: list[Message] = []
    for number, line in enumerate([*text.splitlines(), ""], 1):
        if not line.strip():
            if messages:
                yield messages
            messages = []
            continue
        turn = dialog.speaker(line)
        if turn is not None:
            messages.append({"role": turn[0], "content": turn[1]})
        elif messages:
            messages[-1]["content"] += "\n" + line
        else:
            names = ", ".join(dialog.prefixes().values())
            raise SLMError(f"{path}:{number}: a turn must start with a speaker prefix ({names})")
