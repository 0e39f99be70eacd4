"""The chat session: a conversation with a model, its rules kept apart from any screen.

A `ChatSession` holds what the next reply is generated from (messages, system prompt, mode, sampling
settings) and the bookkeeping of ratings; its methods change that state and return the line to show. The
slash commands are parsed here; a screen runs them and writes ratings in a worker with the work built here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from core.chat.feedback import FILE_NAME, FeedbackDB, Rating
from core.chat.sampling import SamplingSettings
from core.data.conversations import Message
from core.errors import SLMError
from core.listing import label
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import END, has_chat_tokens, is_chat_model, prompt_ids

SLASH_COMMANDS: list[tuple[str, str]] = [
    ("/temp X", "sampling temperature (0 is greedy)"),
    ("/topk N", "sample among the N most likely tokens (0: all)"),
    ("/topp X", "sample among the most likely tokens that together reach probability X (1: all)"),
    ("/max N", "the most tokens a reply may have"),
    ("/system TEXT", "the system prompt for chat mode (empty: none)"),
    ("/mode chat|completion", "turns in the chat template, or plain text for the model to continue"),
    ("/model NAME", "chat with another checkpoint: RUN, RUN/best|final|latest or a folder"),
    ("/models", "pick a checkpoint from a list (also F2)"),
    ("/params", "the sampling settings and the model's figures"),
    (
        "/dtype f32|int8",
        "the model's weights: f32 (exact) or int8 (CPU, faster; `slm eval --dtype int8` shows its cost)",
    ),
    ("/retry", "generate the last reply again; then /pick says which of the two is better"),
    ("/rate +|-", "rate the last reply good or bad (also + and - outside the prompt); slm dpo learns from ratings"),
    ("/pick 1|2", "after /retry: the earlier reply (1) or the new one (2) is the better; keeps that one"),
    ("/reset", "start a new conversation (keeps the system prompt)"),
    ("/save [FILE]", "write the conversation as Markdown (default checkpoints/chats/DATE-TIME.md)"),
    ("/help", "list these commands"),
    ("/quit", "leave the studio"),
]
COMMANDS = {usage.split()[0][1:]: usage for usage, _ in SLASH_COMMANDS}  # "temp" -> "/temp X"
SAMPLING: dict[str, tuple[str, type]] = {  # command -> (SamplingSettings field, type of its value)
    "temp": ("temperature", float),
    "topk": ("top_k", int),
    "topp": ("top_p", float),
    "max": ("max_tokens", int),
}
RATINGS = {"+": 1, "good": 1, "-": -1, "bad": -1}  # /rate's words
NO_MODEL = "no model loaded: pick a checkpoint with /model NAME or F2"
FINISH = {
    "length": "max tokens reached",
    "eot": "end of text",
    "stop": "end of reply",
    "cancelled": "stopped",
    "context": "context full",
}
TITLE = "SLM Studio chat"


def parse_command(line: str) -> tuple[str, str]:
    """`/name argument` as (name, argument); an unknown name is refused."""
    name, _, arg = line[1:].partition(" ")
    name = name.lower()
    if name not in COMMANDS:
        raise SLMError(f"unknown command /{name}: /help lists the commands")
    return name, arg.strip()


def command_error(name: str, error: Exception) -> SLMError:
    """What went wrong with /name, after its usage: `/temp X: expected a number, not 'abc'`."""
    return SLMError(f"{COMMANDS[name]}: {error}")


def rating_value(arg: str) -> int:
    """/rate's argument as +1 or -1."""
    if arg not in RATINGS:
        raise SLMError("say /rate + (good) or /rate - (bad)")
    return RATINGS[arg]


def sampling_text(s: SamplingSettings) -> str:
    return (
        f"temperature {s.temperature:g} · top-k {s.top_k} · top-p {s.top_p:g} · max tokens {s.max_tokens} · "
        f"repetition penalty {s.repetition_penalty:g}"
    )


def reply_stats(new_tokens: int, speed: str, finish_reason: str, truncated: int) -> str:
    """One line under a reply: tokens, speed (tokens per second, formatted), why it ended, whether the prompt was cut."""
    parts = [f"{new_tokens} tokens", f"{speed} tok/s", FINISH.get(finish_reason, finish_reason)]
    if truncated:
        parts.append(f"prompt cut: the oldest {truncated} tokens did not fit the context")
    return " · ".join(parts)


def transcript_markdown(messages: list[Message], title: str, details: list[str]) -> str:
    """A readable Markdown transcript: a title, a list of details, then one section per message."""
    lines = [f"# {title}", "", *(f"- {d}" for d in details), ""]
    for message in messages:
        lines += [f"## {message['role'].capitalize()}", "", message["content"].rstrip(), ""]
    return "\n".join(lines)


@dataclass
class ChatSession:
    """One conversation with the loaded model (`model` is its label, RUN/KIND; empty when none)."""

    settings: SamplingSettings = field(default_factory=SamplingSettings)
    messages: list[Message] = field(default_factory=list)
    system: str = ""
    mode: str = "completion"  # chat: turns in the chat template; completion: plain text to continue
    model: str = ""
    used: int = 0  # context tokens used by the conversation
    replies: int = 0  # replies finished so far: names the reply a rating belongs to
    rating: tuple[int, int] | None = None  # (reply number, rating id) of the last reply's rating
    earlier: Rating | None = None  # the reply /retry replaced (model and settings included), for /pick

    # -- what the model reads ------------------------------------------------------------------

    def conversation(self) -> list[Message]:
        """The messages the model reads: in chat mode the system prompt comes first."""
        system: list[Message] = (
            [{"role": "system", "content": self.system}] if self.system and self.mode == "chat" else []
        )
        return system + self.messages

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The conversation as the model will read it."""
        return prompt_ids(self.conversation(), tokenizer, self.mode)

    def reply_settings(self) -> SamplingSettings:
        """The settings a reply is generated with: in chat mode it also stops at `<|end|>`."""
        return replace(self.settings, stop=[*self.settings.stop, END]) if self.mode == "chat" else self.settings

    def model_changed(self, path: Path, tokenizer: Tokenizer, meta: dict[str, Any]) -> str:
        """A model was loaded: chat mode for a chat model, else completion; the conversation goes on."""
        self.model = label(path)
        self.mode = "chat" if is_chat_model(tokenizer, meta) else "completion"
        self.used = len(self.prompt_ids(tokenizer)) if self.messages else 0
        how = "turns in the chat template" if self.mode == "chat" else "the model continues your text"
        return f"Chatting with **{self.model}** in {self.mode} mode ({how}). `/help` lists the commands."

    # -- the turns -----------------------------------------------------------------------------

    def add_user(self, text: str) -> None:
        self.earlier = None
        self.messages.append({"role": "user", "content": text})

    def start_reply(self, tokenizer: Tokenizer, context: int) -> tuple[list[int], SamplingSettings]:
        """The prompt ids and settings of the next reply; the context is counted as used by them."""
        ids = self.prompt_ids(tokenizer)
        self.used = min(len(ids), context - 1)
        return ids, self.reply_settings()

    def finish_reply(self, text: str, new_tokens: int) -> None:
        """The reply (whatever streamed of it) joins the conversation."""
        self.messages.append({"role": "assistant", "content": text})
        self.replies += 1
        self.used += new_tokens

    def last_reply(self) -> str | None:
        """The last reply, when the conversation ends with one (a reply streaming now has not joined it)."""
        if not self.messages or self.messages[-1]["role"] != "assistant":
            return None
        return self.messages[-1]["content"]

    # -- commands ------------------------------------------------------------------------------

    def set_sampling(self, name: str, arg: str) -> str:
        """/temp, /topk, /topp, /max: change one setting; an unreadable or invalid value changes nothing."""
        setting, kind = SAMPLING[name]
        try:
            value = kind(arg)
        except ValueError:
            raise SLMError(f"expected {'a whole number' if kind is int else 'a number'}, not {arg!r}") from None
        self.settings = replace(self.settings, **{setting: value})
        return f"{setting.replace('_', ' ')} is now {value}"

    def set_system(self, text: str) -> str:
        self.system = text
        ignored = " (ignored in completion mode: `/mode chat` uses it)" if self.mode == "completion" else ""
        return f"system prompt set{ignored}" if text else "system prompt cleared"

    def set_mode(self, mode: str, tokenizer: Tokenizer | None, meta: dict[str, Any]) -> str:
        """/mode: chat needs a tokenizer with chat tokens (`tokenizer` None: no model loaded)."""
        if mode not in ("chat", "completion"):
            raise SLMError("say /mode chat or /mode completion")
        if mode == "chat" and tokenizer is not None and not has_chat_tokens(tokenizer):
            raise SLMError("this model's tokenizer has no chat tokens: only completion mode works")
        self.mode = mode
        untrained = mode == "chat" and tokenizer is not None and not meta.get("chat")
        return f"{mode} mode" + (" (this model was not fine-tuned on conversations)" if untrained else "")

    def params_lines(self) -> list[str]:
        """/params: the sampling settings, the mode and the system prompt (the screen adds the model)."""
        return [
            f"- **sampling** {sampling_text(self.settings)}",
            f"- **mode** {self.mode} · system prompt: {self.system or '(none)'}",
        ]

    def reset(self) -> str:
        """/reset: a new conversation, with the same system prompt and settings."""
        self.earlier = None
        self.messages.clear()
        self.used = 0
        return "new conversation" + (" (the system prompt is kept)" if self.system else "")

    def retry(self) -> bool:
        """/retry: take back the last reply, kept for /pick; True when there was one (else the last
        message is a prompt still waiting for its reply). Generate the next reply after this."""
        if not self.messages:
            raise SLMError("nothing to retry yet")
        if self.messages[-1]["role"] != "assistant":
            return False
        self.earlier = self.rating_of(self.messages[-1]["content"], 1)  # rated before the reply leaves
        self.messages.pop()
        return True

    def save(self, arg: str, root: Path, now: time.struct_time | None = None) -> tuple[Path, str]:
        """/save [FILE]: where to write (relative to the workspace `root`; default checkpoints/chats/DATE-TIME.md)
        and the Markdown transcript to write there."""
        if not self.messages:
            raise SLMError("nothing to save yet")
        now = now or time.localtime()
        path = Path(arg or f"checkpoints/chats/{time.strftime('%Y%m%d-%H%M%S', now)}.md").expanduser()
        path = path if path.is_absolute() else root / path
        return path, transcript_markdown(self.messages, TITLE, self.transcript_details(now))

    def transcript_details(self, now: time.struct_time) -> list[str]:
        return [
            f"model: {self.model or 'none'} ({self.mode} mode)",
            f"sampling: {sampling_text(self.settings)}",
            f"system prompt: {self.system or '(none)'}",
            f"saved: {time.strftime('%Y-%m-%d %H:%M', now)}",
        ]

    # -- ratings -------------------------------------------------------------------------------

    def rating_of(self, answer: str, value: int) -> Rating:
        """A rating of `answer` as the reply to the conversation before the last reply, by the model and
        settings of now."""
        return Rating(
            self.conversation()[:-1],
            answer,
            value,
            model=self.model,
            sampling=asdict(self.settings),
            mode=self.mode,
        )

    def rate(self, value: int, db: FeedbackDB) -> Callable[[], tuple[int, int, int]]:
        """The work (for a worker) that stores a rating of the last reply, or changes the one it has;
        it returns (reply number, rating id, value) for `rated`."""
        answer = self.last_reply()
        if answer is None:
            raise SLMError("no reply to rate yet")
        reply, rating, new = self.replies, self.rating, self.rating_of(answer, value)

        def store() -> tuple[int, int, int]:
            if rating is not None and rating[0] == reply:
                db.set_rating(rating[1], value)
                return reply, rating[1], value
            return reply, db.add(new)[0], value

        return store

    def rated(self, reply: int, rating_id: int, value: int) -> str:
        """The rating `rate`'s work stored: a later rating of the same reply changes it."""
        self.rating = (reply, rating_id)
        return f"rated the last reply {'good' if value > 0 else 'bad'} (#{rating_id} in `{FILE_NAME}`)"

    def pick(self, arg: str, db: FeedbackDB) -> Callable[[], list[int]]:
        """/pick 1|2 after /retry: the work that stores the better reply as good and the other as bad
        (ids returned, for `pair_recorded`). The conversation keeps the better reply."""
        if arg not in ("1", "2"):
            raise SLMError("say /pick 1 (the earlier reply) or /pick 2 (the new one)")
        new = self.last_reply()
        if self.earlier is None or new is None:
            raise SLMError("nothing to pick from: /retry a reply first")
        earlier, self.earlier = self.earlier, None
        first = 1 if arg == "1" else -1
        ratings = [replace(earlier, rating=first), self.rating_of(new, -first)]
        if arg == "1":
            self.messages[-1]["content"] = earlier.answer
        return lambda: db.add(*ratings)


def pair_recorded(ids: list[int]) -> str:
    """The line for the pair `ChatSession.pick`'s work stored."""
    return f"recorded which reply is better (#{ids[0]} and #{ids[1]} in `{FILE_NAME}`)"
