"""The chat template: how a conversation becomes the token ids a model reads, in chat or completion mode.

A conversation (`core.data.conversations.Message`s) in chat mode renders each turn as
`<|role|>content<|end|>` and the prompt ends with `<|assistant|>`; the model's reply ends at `<|end|>`.
In completion mode the model simply continues the text of the conversation.
"""

from __future__ import annotations

from typing import Any

from core.data.conversations import ROLES, Message
from core.errors import SLMError
from core.tokenizer.bpe import CHAT_TOKENS, Tokenizer

END = "<|end|>"

# `render_chat` in Jinja, for transformers and llama.cpp: `<|role|>content<|end|>` per message, then `<|assistant|>`.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def has_chat_tokens(tokenizer: Tokenizer) -> bool:
    """True when the tokenizer knows every chat token (<|system|>, <|user|>, <|assistant|>, <|end|>)."""
    return all(token in tokenizer.special_ids for token in CHAT_TOKENS)


def is_chat_model(tokenizer: Tokenizer, meta: dict[str, Any]) -> bool:
    """True for a checkpoint fine-tuned on conversations (`"chat": true`) with a tokenizer that has chat tokens."""
    return meta.get("chat") is True and has_chat_tokens(tokenizer)


def render_chat(messages: list[Message], tokenizer: Tokenizer, prompt_reply: bool = True) -> list[int]:
    """Token ids of `<|role|>content<|end|>` per message, then `<|assistant|>` when `prompt_reply`.

    The role and end markers are the special token ids, never text the content could imitate.
    """
    ids, _ = render_chat_masked(messages, tokenizer)
    if prompt_reply:
        ids.append(tokenizer.special_ids["<|assistant|>"])
    return ids


def render_chat_masked(messages: list[Message], tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The template's token ids and a loss mask over them: 1 on every assistant reply's content and its
    closing `<|end|>` (what the model must learn to write), 0 on role markers and the other turns."""
    if not has_chat_tokens(tokenizer):
        raise SLMError("this tokenizer has no chat tokens (<|user|>, <|assistant|>…): use completion mode")
    special = tokenizer.special_ids
    ids: list[int] = []
    mask: list[int] = []
    for message in messages:
        role = message["role"]
        if role not in ROLES:
            raise SLMError(f"unknown chat role {role!r}: use one of {', '.join(ROLES)}")
        body = [*tokenizer.encode_text(message["content"]), special[END]]
        ids += [special[f"<|{role}|>"], *body]
        mask += [0, *[int(role == "assistant")] * len(body)]
    return ids, mask


def prompt_ids(messages: list[Message], tokenizer: Tokenizer, mode: str = "chat") -> list[int]:
    """The conversation as the model reads it before its reply: the chat template, or plain text to continue."""
    if mode == "chat":
        return render_chat(messages, tokenizer)
    return tokenizer.encode(completion_text(messages))


def completion_text(messages: list[Message]) -> str:
    """The conversation as one text to continue: replies follow their prompt directly, each new
    user message starts on a new line; system messages are left out."""
    text = ""
    for message in messages:
        if message["role"] == "system":
            continue
        if message["role"] == "user" and text and not text[-1].isspace():
            text += "\n"
        text += message["content"]
    return text
