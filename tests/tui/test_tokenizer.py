"""The Tokenizer section: training a named tokenizer from the selection, using it for Train, trying it."""

from __future__ import annotations

import json
import shutil
import time

from textual.widgets import Static

from core.tokenizer.bpe import Tokenizer
from core.workspace import Workspace
from tests.tui.helpers import type_into, wait_for_dialog, wait_until
from tui.app import StudioApp
from tui.widgets.tokenizer.token_view import TokenView


def shown(app, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


async def train_from_selection(pilot, name: str) -> None:
    """Choose b.md in the Data section, then train a 300-token tokenizer called `name` in the Tokenizer section."""
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.press("down", "down", "space", "2")
    await type_into(pilot, "#tok-name", name)
    await type_into(pilot, "#tok-vocab", "300")
    await pilot.press("escape", "t")
    await wait_until(pilot, lambda: not pilot.app.screen.training)


async def test_training_from_the_selection_sets_the_tokenizer_for_train(workspace: Workspace) -> None:
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        app = pilot.app
        await train_from_selection(pilot, "mine")
        saved = workspace.tokenizers_dir / "mine" / "tokenizer.json"
        assert app.tokenizer_path == saved
        info = json.loads((saved.parent / "info.json").read_text())
        assert info["data"] == ["b.md"]
        vocab = Tokenizer.load(saved).vocab_size
        assert vocab <= 300
        result = shown(app, "#tok-result")
        assert f"mine: {vocab} tokens" in result and "bytes per token on the validation split" in result
        assert "b.md" in result
        assert "checkpoints/tokenizers/mine/tokenizer.json" in shown(app, "#tok-using")


async def test_try_it_shows_the_token_ids_of_typed_text(workspace: Workspace) -> None:
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        app = pilot.app
        await train_from_selection(pilot, "tried")
        await pilot.press("i", "ctrl+a", "ctrl+k", *"The cat sees the moon.")
        ids = Tokenizer.load(app.tokenizer_path).encode("The cat sees the moon.")
        view = app.screen.query_one(TokenView)
        assert [p.id for p in view.pieces] == ids
        rendered = str(view.render())
        assert f"{len(ids)} tokens" in rendered
        assert " ".join(f" {i} " for i in ids) in rendered
        assert "".join(p.text for p in view.pieces) == "The·cat·sees·the·moon."  # spaces made visible


async def test_a_saved_tokenizer_can_be_loaded_and_unset(workspace: Workspace, tokenizer_file) -> None:
    named = workspace.tokenizers_dir / "fixture" / "tokenizer.json"
    named.parent.mkdir(parents=True)
    shutil.copy(tokenizer_file, named)
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        app = pilot.app
        await pilot.press("2", "l")
        await wait_for_dialog(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.tokenizer_path == named)
        await wait_until(pilot, lambda: "fixture: 320 tokens" in shown(app, "#tok-result"))
        await pilot.press("c")
        assert app.tokenizer_path is None
        assert "each run trains its own tokenizer" in shown(app, "#tok-using")


async def test_a_bad_vocab_size_is_refused_before_training(workspace: Workspace) -> None:
    async with StudioApp(workspace).run_test(size=(120, 40), notifications=True) as pilot:
        await pilot.press("2")
        await type_into(pilot, "#tok-vocab", "100")
        await pilot.press("enter")
        await pilot.pause()
        assert not pilot.app.screen.training
        assert any("vocab size must be at least" in str(toast.render()) for toast in pilot.app.screen.query("Toast"))
        assert pilot.app.tokenizer_path is None
        assert not workspace.tokenizers_dir.exists()


async def test_cancel_stops_training_and_keeps_nothing(workspace: Workspace, monkeypatch) -> None:
    import core.tokenizer.named as engine

    real = engine.train_tokenizer

    def slow(texts, vocab_size, min_frequency, cancelled):
        while not cancelled():  # stands for a long training run, until x is pressed
            time.sleep(0.01)
        return real(texts, vocab_size, min_frequency, cancelled=cancelled)

    monkeypatch.setattr(engine, "train_tokenizer", slow)
    async with StudioApp(workspace).run_test(size=(120, 40)) as pilot:
        await pilot.press("2", "t")
        assert pilot.app.screen.training
        await pilot.press("x")
        await wait_until(pilot, lambda: not pilot.app.screen.training)
        assert "training cancelled" in shown(pilot.app, "#tok-result")
        assert pilot.app.tokenizer_path is None
        assert not (workspace.tokenizers_dir / "studio").exists()
