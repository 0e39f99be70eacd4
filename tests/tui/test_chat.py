"""The Chat section, driven with keys: streaming, slash commands, stopping, history, model switching."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from textual.widgets import Markdown

from core.chat.feedback import FeedbackDB
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.chat.session import SLASH_COMMANDS
from core.config import ModelConfig, TrainConfig
from core.workspace import Workspace
from tests.conftest import TINY_MODEL, TINY_TRAIN, make_text
from tests.core.train.test_sft import write_conversations
from tests.tui.helpers import wait_for_dialog, wait_until
from tui.app import StudioApp
from tui.screens.chat import ChatScreen
from tui.screens.modals import PickScreen
from tui.widgets.chat.log import ChatLog, Reply
from tui.widgets.chat.prompt import PromptInput
from tui.widgets.chat.status import ChatStatus

SIZE = (120, 40)


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, tokenizer_file) -> Path:
    """A tiny run `run`, trained once for the module, and an older copy of it, `other`; tests copy both."""
    from core.train.trainer import Trainer

    ws = Workspace.resolve(tmp_path_factory.mktemp("chat") / "ws")
    ws.ensure()
    (ws.data_dir / "a.txt").write_text(make_text(900, seed=1), encoding="utf-8")
    train = TrainConfig(**{**TINY_TRAIN, "tokenizer": str(tokenizer_file)})
    Trainer(ws, "run", ModelConfig(**TINY_MODEL), train).run()
    other = ws.checkpoints_dir / "other"
    shutil.copytree(ws.checkpoints_dir / "run", other)
    os.utime(other / "run.json", (0, 0))  # older: `run` stays the newest run, the default model
    return ws.checkpoints_dir


@pytest.fixture
def chat_ws(workspace: Workspace, trained_runs: Path) -> Workspace:
    shutil.copytree(trained_runs, workspace.checkpoints_dir, dirs_exist_ok=True)
    return workspace


async def open_chat(app: StudioApp, pilot) -> ChatScreen:
    """Open the Chat section and wait for its model (when there is one to load)."""
    await app.switch_mode("chat")
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    await wait_until(pilot, lambda: status(screen) != "" and "loading" not in status(screen))
    return screen


async def write(pilot, text: str) -> None:
    """Type a line into the prompt and press Enter."""
    await pilot.press(*text, "enter")
    await pilot.pause()


async def send(pilot, screen: ChatScreen, text: str) -> Reply:
    """Send a message and wait until its reply is complete."""
    await write(pilot, text)
    await wait_until(pilot, lambda: not screen.generating)
    return screen.query(Reply).last()


def slow_endless_model(generator: Generator) -> None:
    """Make the model never stop by itself and sleep between tokens: the reply goes on until stopped,
    and the idle CPU keeps the pilot's key presses quick."""
    token_ids = generator.token_ids

    def slow(*args, **kwargs):
        for token in token_ids(*args, **kwargs):
            time.sleep(0.05)
            yield token

    generator.stop_ids = set()
    generator.token_ids = slow


def status(screen: ChatScreen) -> str:
    return str(screen.query_one(ChatStatus).render()).replace("\u00a0", " ")


def notes(screen: ChatScreen) -> list[str]:
    return [note.source if isinstance(note, Markdown) else str(note.render()) for note in screen.query(".note")]


async def test_reply_streams_into_the_pane_and_shows_its_stats(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/max 40")
        reply = await send(pilot, screen, "The cat sees")
        assert screen.query_one(".user").render().plain == "The cat sees"
        assert reply.text and reply.parts
        assert reply.query_one("Markdown").source == reply.text  # the pane holds the whole reply
        stats = str(reply.query_one(".reply-stats").render())
        assert "tokens" in stats and "tok/s" in stats
        assert screen.session.messages == [
            {"role": "user", "content": "The cat sees"},
            {"role": "assistant", "content": reply.text},
        ]
        assert screen.query_one(PromptInput).value == ""


async def test_status_line_shows_model_settings_and_context(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        line = status(screen)
        assert "run/best" in line and "completion" in line
        assert "temp 0.8" in line and "top-k 50" in line and "top-p 1" in line and "max 200" in line
        assert f"ctx 0/{TINY_MODEL['context']}" in line
        await write(pilot, "/max 5")
        await send(pilot, screen, "The cat")
        assert "max 5" in status(screen)
        assert "ctx 0/" not in status(screen)


async def test_sampling_commands_change_the_settings_and_refuse_bad_values(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        for command, field, value, shown in [
            ("/temp 0.3", "temperature", 0.3, "temp 0.3"),
            ("/topk 7", "top_k", 7, "top-k 7"),
            ("/topp 0.9", "top_p", 0.9, "top-p 0.9"),
            ("/max 12", "max_tokens", 12, "max 12"),
        ]:
            await write(pilot, command)
            assert getattr(screen.session.settings, field) == value
            assert shown in status(screen)
        for command, message in [("/temp -1", "temperature must be >= 0"), ("/topk x", "a whole number")]:
            await write(pilot, command)
            assert message in notes(screen)[-1]
            assert screen.session.settings == SamplingSettings(temperature=0.3, top_k=7, top_p=0.9, max_tokens=12)
        assert len(screen.query(".note.error")) == 2


async def test_help_params_and_unknown_commands_answer_in_the_log(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/help")
        assert all(usage in notes(screen)[-1] for usage, _ in SLASH_COMMANDS)
        await write(pilot, "/params")
        assert "temperature 0.8" in notes(screen)[-1] and "run/best" in notes(screen)[-1]
        assert f"context {TINY_MODEL['context']} tokens" in notes(screen)[-1]
        await write(pilot, "/frob x")
        assert notes(screen)[-1] == "unknown command /frob: /help lists the commands"


async def test_dtype_reloads_the_model_with_int8_weights_and_replies_go_on(chat_ws) -> None:
    from core.chat.quantize import Int8Linear

    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        first = app.bridge.generator
        await write(pilot, "/dtype int4")
        assert "/dtype f32|int8: choose f32 or int8, not 'int4'" in notes(screen)[-1] and app.bridge.generator is first
        await write(pilot, "/dtype int8")
        await wait_until(pilot, lambda: app.bridge.generator is not first and app.bridge.loading is None)
        assert isinstance(app.bridge.generator.model.lm_head, Int8Linear)
        await write(pilot, "/params")
        assert "int8 weights" in notes(screen)[-1]
        await write(pilot, "/max 4")
        await send(pilot, screen, "The cat")
        assert screen.session.messages[-1]["role"] == "assistant"


async def test_reset_clears_the_conversation(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/max 5")
        await send(pilot, screen, "The cat")
        await write(pilot, "/reset")
        assert screen.session.messages == []
        assert not screen.query(Reply) and not screen.query(".user")
        assert "ctx 0/" in status(screen)


async def test_retry_replaces_the_last_reply(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/retry")
        assert "nothing to retry" in notes(screen)[-1]
        await write(pilot, "/max 5")
        first = await send(pilot, screen, "The cat")
        second = await send(pilot, screen, "/retry")
        assert second is not first and not first.is_attached
        assert len(screen.query(Reply)) == 1 and len(screen.query(".user")) == 1
        assert [m["role"] for m in screen.session.messages] == ["user", "assistant"]
        assert screen.session.messages[1]["content"] == second.text


async def test_save_writes_the_transcript(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/max 5")
        reply = await send(pilot, screen, "The cat")
        await write(pilot, "/save")
        await write(pilot, "/save talk.md")
        await app.workers.wait_for_complete()
        await pilot.pause()
        saved = list((chat_ws.checkpoints_dir / "chats").glob("*.md"))
        assert len(saved) == 1
        for path in (saved[0], chat_ws.root / "talk.md"):
            text = path.read_text(encoding="utf-8")
            assert "## User\n\nThe cat" in text and "run/best" in text
            assert reply.text.strip() in text
        assert any(str(chat_ws.root / "talk.md") in note for note in notes(screen))


async def test_models_opens_a_picker_that_switches_and_keeps_the_chat(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/max 5")
        await send(pilot, screen, "The cat")
        await pilot.press("f2")
        await wait_for_dialog(pilot)
        assert isinstance(app.screen, PickScreen)
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        await write(pilot, "/models")
        await wait_for_dialog(pilot)
        assert isinstance(app.screen, PickScreen)
        labels = [str(o.prompt) for o in app.screen.query_one("#pick").options]
        target = next(i for i, label in enumerate(labels) if label.startswith("other/best"))
        await pilot.press(*["down"] * target, "enter")
        await wait_until(pilot, lambda: app.bridge.model_path == chat_ws.checkpoints_dir / "other" / "best")
        await wait_until(pilot, lambda: "other/best" in status(screen))
        assert app.screen is screen and len(screen.session.messages) == 2
        assert app.settings["last_model"].endswith("best")


async def test_model_command_loads_a_named_checkpoint(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await write(pilot, "/model other/final")
        await wait_until(pilot, lambda: "other/final" in status(screen))
        assert app.bridge.model_path == chat_ws.checkpoints_dir / "other" / "final"
        await write(pilot, "/model nothing-here")
        assert "no checkpoint 'nothing-here'" in notes(screen)[-1]


async def test_escape_stops_a_long_generation_and_stays(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        slow_endless_model(app.bridge.generator)
        await write(pilot, "/max 100000")
        await write(pilot, "The cat")
        await wait_until(pilot, lambda: screen.reply is not None and screen.reply.parts)
        await write(pilot, "x")  # refused while the reply streams: the text stays in the prompt
        assert screen.query_one(PromptInput).value == "x" and len(screen.query(".user")) == 1
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.generating)
        reply = screen.query(Reply).last()
        assert "stopped" in str(reply.query_one(".reply-stats").render())
        assert app.screen is screen and screen.session.messages[-1]["content"] == reply.text


async def test_quitting_while_a_reply_streams_stops_the_generation(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        slow_endless_model(app.bridge.generator)
        await write(pilot, "/max 300")
        await write(pilot, "The cat")
        await wait_until(pilot, lambda: screen.reply is not None and screen.reply.parts)
        await pilot.press("ctrl+q")
    assert app.bridge.generation_cancel.is_set()  # else the thread would keep the process alive


async def test_a_failing_generation_is_reported_and_the_chat_goes_on(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        generator = app.bridge.generator
        token_ids = generator.token_ids

        def broken(*args, **kwargs):
            raise RuntimeError("out of memory")

        generator.token_ids = broken
        reply = await send(pilot, screen, "A")
        assert "failed: out of memory" in str(reply.query_one(".reply-stats").render())
        generator.token_ids = token_ids
        await write(pilot, "/max 3")
        reply = await send(pilot, screen, "B")
        assert "tokens" in str(reply.query_one(".reply-stats").render())
        assert app.is_running


async def test_up_and_down_recall_earlier_inputs(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        prompt = screen.query_one(PromptInput)
        await write(pilot, "/temp 0.5")
        await write(pilot, "/topk 3")
        await pilot.press("d", "r", "a", "f", "t")
        await pilot.press("up")
        assert prompt.value == "/topk 3"
        await pilot.press("up")
        assert prompt.value == "/temp 0.5"
        await pilot.press("up")
        assert prompt.value == "/temp 0.5"
        await pilot.press("down")
        assert prompt.value == "/topk 3"
        await pilot.press("down")
        assert prompt.value == "draft"


async def test_escape_leaves_the_prompt_for_the_section_keys_and_coming_back_returns_to_it(chat_ws) -> None:
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        assert isinstance(screen.focused, PromptInput)
        await pilot.press("escape")
        assert isinstance(screen.focused, ChatLog)
        await pilot.press("3")
        assert app.current_mode == "train"
        await app.switch_mode("chat")
        await pilot.pause()
        assert app.screen is screen and isinstance(screen.focused, PromptInput)


async def test_chat_model_uses_the_template_and_the_system_prompt(chat_ws) -> None:
    meta_path = chat_ws.checkpoints_dir / "run" / "best" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "chat": True}))
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        assert screen.session.mode == "chat" and "· chat ·" in status(screen)
        await write(pilot, "/system Hi")
        assert "ignored" not in notes(screen)[-1]
        await write(pilot, "/max 5")
        reply = await send(pilot, screen, "A")
        tok = app.bridge.generator.tokenizer
        expected = f"<|system|>Hi<|end|><|user|>A<|end|><|assistant|>{reply.text}<|end|><|assistant|>"
        assert tok.decode(screen.session.prompt_ids(tok)) == expected
        await write(pilot, "/mode completion")
        assert screen.session.mode == "completion" and "· completion ·" in status(screen)
        await write(pilot, "/system Yo")
        assert "ignored in completion mode" in notes(screen)[-1]


async def test_no_checkpoint_shows_how_to_get_one(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        assert "Train" in notes(screen)[0]
        assert "no model loaded" in status(screen)
        await write(pilot, "hello")
        assert screen.query_one(PromptInput).value == "hello"  # refused: kept for when a model is loaded
        assert not screen.query(".user") and not screen.session.messages
        await pilot.press("ctrl+u")  # clear the line
        await write(pilot, "/retry")
        assert "no model loaded" in notes(screen)[-1]


async def test_the_last_model_used_is_loaded_again(chat_ws) -> None:
    first = StudioApp(chat_ws)
    async with first.run_test(size=SIZE) as pilot:
        await open_chat(first, pilot)
        await first.chat_with(chat_ws.checkpoints_dir / "other" / "latest")
        await wait_until(pilot, lambda: first.bridge.model_path.name == "latest")
    app = StudioApp(chat_ws)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        await wait_until(pilot, lambda: "other/latest" in status(screen))


@pytest.fixture(scope="module")
def sft_runs(trained_runs: Path, tmp_path_factory) -> Path:
    """The trained runs plus `chat`: `run/final` fine-tuned on a few conversations (the newest run)."""
    from core.train.sft import SFTTrainer

    ws = Workspace.resolve(tmp_path_factory.mktemp("sft") / "ws")
    ws.ensure()
    shutil.copytree(trained_runs, ws.checkpoints_dir, dirs_exist_ok=True)
    write_conversations(ws)
    train = TrainConfig(**{**TINY_TRAIN, "init_from": "run/final", "data": ["chat.jsonl"], "max_steps": 4})
    SFTTrainer(ws, "chat", ModelConfig(**TINY_MODEL), train).run()
    return ws.checkpoints_dir


@pytest.mark.usefixtures("one_thread")
async def test_an_sft_checkpoint_chats_in_chat_mode_and_its_replies_are_rated(workspace, sft_runs) -> None:
    shutil.copytree(sft_runs, workspace.checkpoints_dir, dirs_exist_ok=True)
    db = FeedbackDB.for_workspace(workspace)
    app = StudioApp(workspace)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_chat(app, pilot)
        assert screen.session.mode == "chat" and "chat/best" in status(screen) and "· chat ·" in status(screen)
        await write(pilot, "/rate +")
        assert "no reply to rate yet" in notes(screen)[-1]
        await write(pilot, "/max 6")
        reply = await send(pilot, screen, "Who sees the moon?")

        await pilot.press("escape", "plus")  # the keys act outside the prompt
        await wait_until(pilot, lambda: [r.rating for r in db.ratings()] == [1])
        await wait_until(pilot, lambda: "rated the last reply good" in notes(screen)[-1])
        await pilot.press("minus")  # changes that rating
        await wait_until(pilot, lambda: [r.rating for r in db.ratings()] == [-1])
        first = db.ratings()[0]
        assert first.conversation == [{"role": "user", "content": "Who sees the moon?"}]
        assert first.answer == reply.text and first.model == "chat/best" and first.mode == "chat"
        assert first.sampling["max_tokens"] == 6

        screen.query_one(PromptInput).focus()
        await send(pilot, screen, "/retry")
        assert "/pick 1" in notes(screen)[-1]
        await write(pilot, "/pick 1")
        await wait_until(pilot, lambda: len(db.ratings()) == 3)
        earlier, new = db.ratings()[1:]
        assert (earlier.answer, earlier.rating, new.rating) == (reply.text, 1, -1)
        assert screen.session.messages[-1]["content"] == reply.text == screen.query(Reply).last().text
        await write(pilot, "/pick 2")
        assert "/retry a reply first" in notes(screen)[-1]
