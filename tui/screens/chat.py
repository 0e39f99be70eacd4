"""Chat: talk to a checkpoint and watch its reply stream in; slash commands steer sampling, model and conversation.

Completion mode sends the conversation as plain text for the model to continue; chat mode wraps each turn in
the chat template (core.tokenizer.chat_template) and is the default for checkpoints fine-tuned on conversations.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from functools import partialmethod
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from core import atomic
from core.chat.feedback import FILE_NAME, FeedbackDB, Rating
from core.chat.sampling import SamplingSettings
from core.chat.session import transcript_markdown
from core.checkpoint import label, list_checkpoints, resolve_checkpoint
from core.config import count_params
from core.data.conversations import Message
from core.errors import SLMError
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import END, has_chat_tokens, is_chat_model, prompt_ids
from tui.format import clip, count
from tui.messages import GenerationDone, GenerationText, JobDone, JobFailed, JobProgress, ModelLoaded
from tui.screens.modals import PickScreen
from tui.widgets.chat.log import ChatLog, Reply
from tui.widgets.chat.prompt import PromptInput
from tui.widgets.chat.status import ChatStatus

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
    ("/retry", "generate the last reply again; then /pick says which of the two is better"),
    ("/rate +|-", "rate the last reply good or bad (also + and - outside the prompt); slm dpo learns from ratings"),
    ("/pick 1|2", "after /retry: the earlier reply (1) or the new one (2) is the better; keeps that one"),
    ("/reset", "start a new conversation (keeps the system prompt)"),
    ("/save [FILE]", "write the conversation as Markdown (default checkpoints/chats/DATE-TIME.md)"),
    ("/help", "list these commands"),
    ("/quit", "leave the studio"),
]
COMMANDS = {usage.split()[0][1:]: usage for usage, _ in SLASH_COMMANDS}  # "temp" -> "/temp X"
NO_MODEL = "no model loaded: pick a checkpoint with /model NAME or F2"
FINISH = {
    "length": "max tokens reached",
    "eot": "end of text",
    "stop": "end of reply",
    "cancelled": "stopped",
    "context": "context full",
}


def sampling_text(s: SamplingSettings) -> str:
    return (
        f"temperature {s.temperature:g} · top-k {s.top_k} · top-p {s.top_p:g} · max tokens {s.max_tokens} · "
        f"repetition penalty {s.repetition_penalty:g}"
    )


def generation_stats(done: GenerationDone) -> str:
    """One line under a reply: tokens, speed, why it ended, and whether the prompt was cut."""
    parts = [f"{done.new_tokens} tokens", f"{count(done.new_tokens / max(done.seconds, 1e-9))} tok/s"]
    parts.append(FINISH.get(done.finish_reason, done.finish_reason))
    if done.truncated:
        parts.append(f"prompt cut: the oldest {done.truncated} tokens did not fit the context")
    return " · ".join(parts)


class ChatScreen(Screen):
    BINDINGS = [
        Binding("escape", "stop", "Stop reply", id="chat.stop"),
        Binding("escape", "leave_prompt", "Leave prompt", show=False, id="chat.leave_prompt"),
        Binding("f2,ctrl+o", "models", "Models", id="chat.models"),
        Binding("plus", "rate(1)", "Good reply", id="chat.rate_good"),
        Binding("minus", "rate(-1)", "Bad reply", id="chat.rate_bad"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.settings = SamplingSettings()
        self.messages: list[Message] = []
        self.system = ""
        self.mode = "completion"
        self.request: int | None = None  # the generation streaming now
        self.reply: Reply | None = None  # where it streams to
        self.used = 0  # context tokens used by the conversation
        self.replies = 0  # replies finished so far: names the reply a rating belongs to
        self.rating: tuple[int, int] | None = None  # (reply number, rating id) of the last reply's rating
        self.earlier: Rating | None = None  # the reply /retry replaced (model and settings included), for /pick

    def compose(self) -> ComposeResult:
        yield Header()
        yield ChatLog(id="chat-log")
        yield ChatStatus("", id="chat-status")
        yield PromptInput(placeholder="Write to the model, or /help for commands", id="chat-prompt")
        yield Footer()

    def on_mount(self) -> None:
        self.app.bridge.subscribe(self)
        self.call_after_refresh(self.load_default_model)

    def on_unmount(self) -> None:
        self.app.bridge.unsubscribe(self)
        if self.generating:  # quitting: a streaming thread would keep the process alive
            self.app.bridge.stop_generation()

    def on_screen_resume(self) -> None:
        self.query_one(PromptInput).focus()

    @property
    def generating(self) -> bool:
        return self.request is not None

    def note(self, text: str, error: bool = False) -> None:
        self.query_one(ChatLog).add_note(text, error)

    # -- the model -----------------------------------------------------------------------------

    def load_default_model(self) -> None:
        """The model already loaded, else the last one used, else the newest checkpoint, else say how to get one."""
        bridge = self.app.bridge
        if bridge.generator is not None:
            self.model_changed()
        elif bridge.loading is None:
            path = self.default_checkpoint()
            if path is None:
                self.note(
                    "No checkpoints in this workspace yet. Train a model in section **3 · Train** (or with "
                    "`slm train`), then pick it with `/model NAME` or **F2**."
                )
            else:
                bridge.load_model(path)
        self.refresh_status()

    def default_checkpoint(self) -> Path | None:
        last = self.app.settings.get("last_model")
        for ref in [*([last] if last else []), None]:
            try:
                return resolve_checkpoint(self.app.workspace, ref)
            except SLMError:
                continue
        return None

    def model_changed(self) -> None:
        bridge = self.app.bridge
        generator = bridge.generator
        self.mode = "chat" if is_chat_model(generator.tokenizer, self.model_meta()) else "completion"
        how = "turns in the chat template" if self.mode == "chat" else "the model continues your text"
        self.note(
            f"Chatting with **{label(bridge.model_path)}** in {self.mode} mode ({how}). `/help` lists the commands."
        )
        self.used = len(self.prompt_ids(generator.tokenizer)) if self.messages else 0
        self.refresh_status()

    def model_meta(self) -> dict:
        """checkpoint.json of the loaded model (empty when none)."""
        generator = self.app.bridge.generator
        checkpoint = generator.checkpoint if generator is not None else None
        return checkpoint.meta if checkpoint is not None else {}

    def refresh_status(self) -> None:
        status, bridge = self.query_one(ChatStatus), self.app.bridge
        generator = bridge.generator
        if bridge.loading is not None:
            status.update(f"loading {label(bridge.loading)}…")
        elif generator is None:
            status.update("no model loaded: /model NAME, or F2 to pick one")
        else:
            config = generator.config
            status.show(
                label(bridge.model_path), count_params(config), self.mode, self.settings, self.used, config.context
            )

    def on_job_progress(self, message: JobProgress) -> None:
        if message.job == "load-model":
            self.refresh_status()

    def on_model_loaded(self, message: ModelLoaded) -> None:
        self.model_changed()

    async def on_job_failed(self, message: JobFailed) -> None:
        if message.job == "load-model":
            self.note(f"could not load the model: {message.error}", error=True)
            self.refresh_status()
        elif message.job == "generate" and self.reply is not None:
            await self.finish_reply(f"failed: {message.error}", 0)
        elif message.job == "save-chat":
            self.note(f"could not save the conversation: {message.error}", error=True)
        elif message.job in ("rate", "rate-pair"):
            self.note(f"could not store the rating: {message.error}", error=True)

    async def action_models(self) -> None:
        entries = await asyncio.to_thread(list_checkpoints, self.app.workspace)
        if not entries:
            self.note("No checkpoints yet: train a model in section 3 (or with `slm train`).", error=True)
            return
        items = [(str(e.path), f"{e.run}/{e.kind} · step {e.step} · {count(e.params)} params") for e in entries]
        self.app.push_screen(PickScreen("Chat with which checkpoint?", items), self.picked)

    async def picked(self, path: str | None) -> None:
        if path:
            await self.app.chat_with(Path(path))

    # -- sending and streaming -----------------------------------------------------------------

    @on(Input.Submitted, "#chat-prompt")
    async def submitted(self, event: Input.Submitted) -> None:
        text = event.value
        if not text.strip():
            return
        if refusal := self.refusal(text):
            self.notify(refusal, severity="warning")
            return
        prompt = self.query_one(PromptInput)
        prompt.remember(text)
        prompt.value = ""
        try:
            if text.startswith("/"):
                await self.run_command(text)
            else:
                self.send(text)
        except SLMError as e:
            self.note(str(e), error=True)

    def refusal(self, text: str) -> str | None:
        """Why `text` cannot be handled now (the prompt keeps it), or None."""
        bridge = self.app.bridge
        if self.generating:
            return "a reply is still streaming: Escape stops it"
        if text.startswith("/"):
            return None
        if bridge.loading is not None:
            return "the model is still loading: press Enter again in a moment"
        if bridge.generator is None:
            return NO_MODEL
        return None

    def send(self, text: str) -> None:
        self.earlier = None
        self.messages.append({"role": "user", "content": text})
        self.query_one(ChatLog).add_user(text)
        self.generate()

    def require_model(self) -> None:
        if self.app.bridge.generator is None:
            raise SLMError(NO_MODEL)

    def conversation(self) -> list[Message]:
        """The messages the model reads: in chat mode the system prompt comes first."""
        system = [{"role": "system", "content": self.system}] if self.system and self.mode == "chat" else []
        return system + self.messages

    def prompt_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The conversation as the model will read it."""
        return prompt_ids(self.conversation(), tokenizer, self.mode)

    def generate(self) -> None:
        """Stream a reply to the conversation."""
        bridge = self.app.bridge
        generator = bridge.generator
        ids = self.prompt_ids(generator.tokenizer)
        settings = replace(self.settings, stop=[*self.settings.stop, END]) if self.mode == "chat" else self.settings
        self.used = min(len(ids), generator.config.context - 1)
        self.reply = self.query_one(ChatLog).add_reply()
        self.request = bridge.generate(ids, settings)
        self.refresh_status()
        self.refresh_bindings()

    async def on_generation_text(self, message: GenerationText) -> None:
        if message.request == self.request and self.reply is not None:
            await self.reply.append(message.text)

    async def on_generation_done(self, message: GenerationDone) -> None:
        if message.request == self.request and self.reply is not None:
            await self.finish_reply(generation_stats(message), message.new_tokens)

    async def finish_reply(self, stats: str, new_tokens: int) -> None:
        """The reply joins the conversation (whatever streamed of it) and shows its stats."""
        reply, self.reply, self.request = self.reply, None, None
        self.messages.append({"role": "assistant", "content": reply.text})
        self.replies += 1
        self.used += new_tokens
        self.refresh_status()
        self.refresh_bindings()
        await reply.finish(stats)
        if self.earlier is not None:
            self.note(
                f"Which reply is better? `/pick 1` the earlier one (“{clip(self.earlier.answer, 80)}”), "
                "`/pick 2` this one."
            )

    def on_job_done(self, message: JobDone) -> None:
        if message.job == "save-chat":
            self.note(f"saved the conversation to `{message.result}`")
        elif message.job == "rate":
            reply, rating_id, value = message.result
            self.rating = (reply, rating_id)
            self.note(f"rated the last reply {'good' if value > 0 else 'bad'} (#{rating_id} in `{FILE_NAME}`)")
        elif message.job == "rate-pair":
            self.note(
                f"recorded which reply is better (#{message.result[0]} and #{message.result[1]} in `{FILE_NAME}`)"
            )

    # -- keys ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.generating
        if action == "leave_prompt":
            return isinstance(self.focused, PromptInput)
        if action == "rate":
            return self.last_reply() is not None
        return True

    def action_stop(self) -> None:
        self.app.bridge.stop_generation()

    def action_leave_prompt(self) -> None:
        self.query_one(ChatLog).focus()

    def action_rate(self, value: int) -> None:
        try:
            self.rate(value)
        except SLMError as e:
            self.note(str(e), error=True)

    # -- ratings -------------------------------------------------------------------------------

    def last_reply(self) -> str | None:
        """The last reply, when there is one and nothing is streaming."""
        if self.generating or not self.messages or self.messages[-1]["role"] != "assistant":
            return None
        return self.messages[-1]["content"]

    def rating_of(self, answer: str, value: int) -> Rating:
        """A rating of `answer` as the reply to the conversation before the last reply, by the model and
        settings of now."""
        model = self.app.bridge.model_path
        return Rating(
            self.conversation()[:-1],
            answer,
            value,
            model=label(model) if model else "",
            sampling=asdict(self.settings),
            mode=self.mode,
        )

    def rate(self, value: int) -> None:
        """Store a rating of the last reply (a second one changes it), in a worker."""
        answer = self.last_reply()
        if answer is None:
            raise SLMError("no reply to rate yet")
        db, reply, rating = FeedbackDB.for_workspace(self.app.workspace), self.replies, self.rating
        new = self.rating_of(answer, value)

        def store() -> tuple[int, int, int]:
            if rating is not None and rating[0] == reply:
                db.set_rating(rating[1], value)
                return reply, rating[1], value
            return reply, db.add(new)[0], value

        self.app.bridge.run_job("rate", store)

    # -- slash commands ------------------------------------------------------------------------

    async def run_command(self, line: str) -> None:
        name, _, arg = line[1:].partition(" ")
        name = name.lower()
        if name not in COMMANDS:
            raise SLMError(f"unknown command /{name}: /help lists the commands")
        try:
            await getattr(self, f"command_{name}")(arg.strip())
        except SLMError as e:
            raise SLMError(f"{COMMANDS[name]}: {e}") from None

    async def _set_sampling(self, field: str, kind: type, arg: str) -> None:
        try:
            value = kind(arg)
        except ValueError:
            raise SLMError(f"expected {'a whole number' if kind is int else 'a number'}, not {arg!r}") from None
        self.settings = replace(self.settings, **{field: value})
        self.note(f"{field.replace('_', ' ')} is now {value}")
        self.refresh_status()

    command_temp = partialmethod(_set_sampling, "temperature", float)
    command_topk = partialmethod(_set_sampling, "top_k", int)
    command_topp = partialmethod(_set_sampling, "top_p", float)
    command_max = partialmethod(_set_sampling, "max_tokens", int)

    async def command_system(self, arg: str) -> None:
        self.system = arg
        ignored = " (ignored in completion mode: `/mode chat` uses it)" if self.mode == "completion" else ""
        self.note(f"system prompt set{ignored}" if arg else "system prompt cleared")

    async def command_mode(self, arg: str) -> None:
        if arg not in ("chat", "completion"):
            raise SLMError("say /mode chat or /mode completion")
        generator = self.app.bridge.generator
        if arg == "chat" and generator is not None and not has_chat_tokens(generator.tokenizer):
            raise SLMError("this model's tokenizer has no chat tokens: only completion mode works")
        self.mode = arg
        untrained = arg == "chat" and generator is not None and not self.model_meta().get("chat")
        self.note(f"{arg} mode" + (" (this model was not fine-tuned on conversations)" if untrained else ""))
        self.refresh_status()

    async def command_model(self, arg: str) -> None:
        if not arg:
            raise SLMError("name a checkpoint (/models lists them)")
        await self.app.chat_with(resolve_checkpoint(self.app.workspace, arg))

    async def command_models(self, arg: str) -> None:
        await self.action_models()

    async def command_params(self, arg: str) -> None:
        lines = [
            f"- **sampling** {sampling_text(self.settings)}",
            f"- **mode** {self.mode} · system prompt: {self.system or '(none)'}",
        ]
        generator = self.app.bridge.generator
        if generator is not None:
            config, meta = generator.config, self.model_meta()
            val = meta.get("metrics", {}).get("val_loss")
            lines.append(
                f"- **model** {label(self.app.bridge.model_path)} · {count(count_params(config))} "
                f"parameters · context {config.context} tokens ({min(self.used, config.context)} used) · vocabulary "
                f"{generator.tokenizer.vocab_size} · step {meta.get('step', 0)}"
                + (f" · val loss {val:.3f}" if val is not None else "")
                + f" · on {generator.device}"
            )
        self.note("\n".join(lines))

    async def command_retry(self, arg: str) -> None:
        self.require_model()
        if not self.messages:
            raise SLMError("nothing to retry yet")
        if self.messages[-1]["role"] == "assistant":
            self.earlier = self.rating_of(self.messages.pop()["content"], 1)
            await self.query(Reply).last().remove()
        self.generate()

    async def command_rate(self, arg: str) -> None:
        values = {"+": 1, "good": 1, "-": -1, "bad": -1}
        if arg not in values:
            raise SLMError("say /rate + (good) or /rate - (bad)")
        self.rate(values[arg])

    async def command_pick(self, arg: str) -> None:
        if arg not in ("1", "2"):
            raise SLMError("say /pick 1 (the earlier reply) or /pick 2 (the new one)")
        new = self.last_reply()
        if self.earlier is None or new is None:
            raise SLMError("nothing to pick from: /retry a reply first")
        earlier, self.earlier = self.earlier, None
        first = 1 if arg == "1" else -1
        ratings = [replace(earlier, rating=first), self.rating_of(new, -first)]
        db = FeedbackDB.for_workspace(self.app.workspace)
        self.app.bridge.run_job("rate-pair", lambda: db.add(*ratings))
        if arg == "1":
            self.messages[-1]["content"] = earlier.answer
            await self.query(Reply).last().show(earlier.answer)

    async def command_reset(self, arg: str) -> None:
        self.earlier = None
        self.messages.clear()
        self.used = 0
        await self.query_one(ChatLog).clear()
        self.note("new conversation" + (" (the system prompt is kept)" if self.system else ""))
        self.refresh_status()

    async def command_save(self, arg: str) -> None:
        if not self.messages:
            raise SLMError("nothing to save yet")
        path = Path(arg or f"checkpoints/chats/{time.strftime('%Y%m%d-%H%M%S')}.md").expanduser()
        path = path if path.is_absolute() else self.app.workspace.root / path  # relative to the workspace
        text = transcript_markdown(self.messages, "SLM Studio chat", self.transcript_details())

        def write() -> str:
            atomic.write_text(path, text)
            return str(path)

        self.app.bridge.run_job("save-chat", write)

    def transcript_details(self) -> list[str]:
        model = self.app.bridge.model_path
        return [
            f"model: {label(model) if model else 'none'} ({self.mode} mode)",
            f"sampling: {sampling_text(self.settings)}",
            f"system prompt: {self.system or '(none)'}",
            f"saved: {time.strftime('%Y-%m-%d %H:%M')}",
        ]

    async def command_help(self, arg: str) -> None:
        self.note("\n".join(f"- `{usage}` {does}" for usage, does in SLASH_COMMANDS))

    async def command_quit(self, arg: str) -> None:
        await self.app.action_quit()
