"""Chat: talk to a checkpoint and watch its reply stream in; slash commands steer sampling, model and conversation.

Completion mode sends the conversation as plain text for the model to continue; chat mode wraps each turn in
the chat template (core.tokenizer.chat_template) and is the default for checkpoints fine-tuned on conversations.
The conversation and its rules live in `core.chat.session.ChatSession`; this screen holds the widgets, the keys
and the calls into the bridge.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from core import atomic
from core.chat.feedback import FeedbackDB
from core.chat.sampling import DTYPES
from core.chat.session import (
    NO_MODEL,
    SAMPLING,
    SLASH_COMMANDS,
    ChatSession,
    command_error,
    pair_recorded,
    parse_command,
    rating_value,
    reply_stats,
)
from core.config import count_params
from core.errors import SLMError
from core.listing import label, list_checkpoints, resolve_checkpoint
from tui.format import clip, count
from tui.messages import GenerationDone, GenerationText, JobDone, JobFailed, JobProgress, ModelLoaded
from tui.screens.modals import PickScreen
from tui.widgets.chat.log import ChatLog, Reply
from tui.widgets.chat.prompt import PromptInput
from tui.widgets.chat.status import ChatStatus


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
        self.session = ChatSession()
        self.request: int | None = None  # the generation streaming now
        self.reply: Reply | None = None  # where it streams to

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
        log = self.query_one(ChatLog)
        if log.is_attached:  # a worker's result can arrive while the studio is closing
            log.add_note(text, error)

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
        self.note(self.session.model_changed(bridge.model_path, bridge.generator.tokenizer, self.model_meta()))
        self.refresh_status()

    def model_meta(self) -> dict:
        """checkpoint.json of the loaded model (empty when none)."""
        generator = self.app.bridge.generator
        checkpoint = generator.checkpoint if generator is not None else None
        return checkpoint.meta if checkpoint is not None else {}

    def refresh_status(self) -> None:
        status, bridge, session = self.query_one(ChatStatus), self.app.bridge, self.session
        generator = bridge.generator
        if bridge.loading is not None:
            status.update(f"loading {label(bridge.loading)}…")
        elif generator is None:
            status.update("no model loaded: /model NAME, or F2 to pick one")
        else:
            config = generator.config
            params = count_params(config)
            status.show(label(bridge.model_path), params, session.mode, session.settings, session.used, config.context)

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
        self.session.add_user(text)
        self.query_one(ChatLog).add_user(text)
        self.generate()

    def require_model(self) -> None:
        if self.app.bridge.generator is None:
            raise SLMError(NO_MODEL)

    def generate(self) -> None:
        """Stream a reply to the conversation."""
        bridge = self.app.bridge
        generator = bridge.generator
        ids, settings = self.session.start_reply(generator.tokenizer, generator.config.context)
        self.reply = self.query_one(ChatLog).add_reply()
        self.request = bridge.generate(ids, settings)
        self.refresh_status()
        self.refresh_bindings()

    async def on_generation_text(self, message: GenerationText) -> None:
        if message.request == self.request and self.reply is not None:
            await self.reply.append(message.text)

    async def on_generation_done(self, message: GenerationDone) -> None:
        if message.request == self.request and self.reply is not None:
            speed = count(message.new_tokens / max(message.seconds, 1e-9))
            stats = reply_stats(message.new_tokens, speed, message.finish_reason, message.truncated)
            await self.finish_reply(stats, message.new_tokens)

    async def finish_reply(self, stats: str, new_tokens: int) -> None:
        """The reply joins the conversation (whatever streamed of it) and shows its stats."""
        reply, self.reply, self.request = self.reply, None, None
        self.session.finish_reply(reply.text, new_tokens)
        self.refresh_status()
        self.refresh_bindings()
        await reply.finish(stats)
        if (earlier := self.session.earlier) is not None:
            self.note(
                f"Which reply is better? `/pick 1` the earlier one (“{clip(earlier.answer, 80)}”), `/pick 2` this one."
            )

    def on_job_done(self, message: JobDone) -> None:
        if message.job == "save-chat":
            self.note(f"saved the conversation to `{message.result}`")
        elif message.job == "rate":
            self.note(self.session.rated(*message.result))
        elif message.job == "rate-pair":
            self.note(pair_recorded(message.result))

    # -- keys ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop":
            return self.generating
        if action == "leave_prompt":
            return isinstance(self.focused, PromptInput)
        if action == "rate":
            return self.session.last_reply() is not None
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

    def rate(self, value: int) -> None:
        """Store a rating of the last reply (a second one changes it), in a worker."""
        self.app.bridge.run_job("rate", self.session.rate(value, FeedbackDB.for_workspace(self.app.workspace)))

    # -- slash commands ------------------------------------------------------------------------

    async def run_command(self, line: str) -> None:
        name, arg = parse_command(line)
        try:
            if name in SAMPLING:
                self.note(self.session.set_sampling(name, arg))
                self.refresh_status()
            else:
                await getattr(self, f"command_{name}")(arg)
        except SLMError as e:
            raise command_error(name, e) from None

    async def command_system(self, arg: str) -> None:
        self.note(self.session.set_system(arg))

    async def command_mode(self, arg: str) -> None:
        generator = self.app.bridge.generator
        self.note(self.session.set_mode(arg, generator.tokenizer if generator else None, self.model_meta()))
        self.refresh_status()

    async def command_model(self, arg: str) -> None:
        if not arg:
            raise SLMError("name a checkpoint (/models lists them)")
        await self.app.chat_with(resolve_checkpoint(self.app.workspace, arg))

    async def command_models(self, arg: str) -> None:
        await self.action_models()

    async def command_dtype(self, arg: str) -> None:
        if arg not in DTYPES:
            raise SLMError(f"choose {' or '.join(DTYPES)}, not {arg!r}")
        bridge = self.app.bridge
        bridge.dtype = arg
        if bridge.model_path is None:
            self.note(f"models will load with {arg} weights")
            return
        self.note(f"loading {label(bridge.model_path)} with {arg} weights…")
        bridge.load_model(bridge.model_path)

    async def command_params(self, arg: str) -> None:
        lines = self.session.params_lines()
        generator = self.app.bridge.generator
        if generator is not None:
            config, meta = generator.config, self.model_meta()
            val = meta.get("metrics", {}).get("val_loss")
            lines.append(
                f"- **model** {label(self.app.bridge.model_path)} · {count(count_params(config))} parameters · "
                f"context {config.context} tokens ({min(self.session.used, config.context)} used) · vocabulary "
                f"{generator.tokenizer.vocab_size} · step {meta.get('step', 0)}"
                + (f" · val loss {val:.3f}" if val is not None else "")
                + f" · on {generator.device}, {generator.dtype} weights"
            )
        self.note("\n".join(lines))

    async def command_retry(self, arg: str) -> None:
        self.require_model()
        if self.session.retry():
            await self.query(Reply).last().remove()
        self.generate()

    async def command_rate(self, arg: str) -> None:
        self.rate(rating_value(arg))

    async def command_pick(self, arg: str) -> None:
        self.app.bridge.run_job("rate-pair", self.session.pick(arg, FeedbackDB.for_workspace(self.app.workspace)))
        if arg == "1":
            await self.query(Reply).last().show(self.session.messages[-1]["content"])

    async def command_reset(self, arg: str) -> None:
        text = self.session.reset()
        await self.query_one(ChatLog).clear()
        self.note(text)
        self.refresh_status()

    async def command_save(self, arg: str) -> None:
        path, text = self.session.save(arg, self.app.workspace.root)

        def write() -> str:
            atomic.write_text(path, text)
            return str(path)

        self.app.bridge.run_job("save-chat", write)

    async def command_help(self, arg: str) -> None:
        self.note("\n".join(f"- `{usage}` {does}" for usage, does in SLASH_COMMANDS))

    async def command_quit(self, arg: str) -> None:
        await self.app.action_quit()
