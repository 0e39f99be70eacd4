"""The chat session: a conversation with a model, its rules kept apart from any screen."""

from __future__ import annotations

from core.data.conversations import Message


def transcript_markdown(messages: list[Message], title: str, details: list[str]) -> str:
    """A readable Markdown transcript: a title, a list of details, then one section per message."""
    lines = [f"# {title}", "", *(f"- {d}" for d in details), ""]
    for message in messages:
        lines += [f"## {message['role'].capitalize()}", "", message["content"].rstrip(), ""]
    return "\n".join(lines)
