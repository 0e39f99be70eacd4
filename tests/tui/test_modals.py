"""Dialogs under bursts of keys: type-ahead never answers them, a second answer is harmless, and a studio
that closes while training stops its run."""

from __future__ import annotations

import asyncio

import pytest
from textual import events

from core.listing import list_checkpoints
from core.train.trainer import Trainer
from tests.tui.helpers import wait_for_dialog, wait_until
from tests.tui.test_train import fill_tiny_form
from tui.app import StudioApp
from tui.screens.help import HelpScreen
from tui.screens.modals import ConfirmScreen, Dialog, PickScreen


def typed(*keys: str) -> list[events.Key]:
    """Key events as the terminal delivers them, stamped now: before any dialog they may reach is shown."""
    return [events.Key(key, {"enter": "\r", "escape": "\x1b"}.get(key, key)) for key in keys]


async def burst(pilot, keys: list[events.Key]) -> None:
    for key in keys:
        pilot.app.post_message(key)
    await pilot.pause(0.3)


async def test_keys_typed_before_a_confirmation_do_not_answer_it(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=6)
    Trainer(workspace, "beta", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        before = len(list_checkpoints(workspace))
        await burst(pilot, typed("d", "enter", "y"))  # d, then Enter and y within milliseconds
        assert isinstance(app.screen, ConfirmScreen) and len(list_checkpoints(workspace)) == before
        await wait_for_dialog(pilot)
        await pilot.press("y")  # seen, then answered
        await pilot.pause()
        assert len(list_checkpoints(workspace)) == before - 1


async def test_a_burst_of_enters_in_a_picker_is_harmless(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=6)
    Trainer(workspace, "beta", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await burst(pilot, typed("5", "f2", "enter", "enter", "enter"))  # one burst: no crash
        await wait_until(pilot, lambda: isinstance(app.screen, PickScreen))
        await pilot.pause(0.3)
        assert isinstance(app.screen, PickScreen)  # the Enters came before it was on screen: not an answer
        await wait_for_dialog(pilot)
        picker, answers = app.screen, []
        picker._result_callbacks[-1].callback = answers.append  # count the answers it gives
        await pilot.press("enter", "enter", "enter")  # now seen: the first picks, the others do nothing
        await pilot.pause()
        assert not isinstance(app.screen, PickScreen) and len(answers) == 1
        picker.dismiss("again")  # a late second dismiss
        await pilot.pause()
        assert len(answers) == 1 and app.screen.is_attached


async def test_a_studio_that_closes_while_training_stops_its_run(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await fill_tiny_form(pilot, steps="100000")
        await pilot.press("s")
        await wait_until(pilot, lambda: len(app.bridge.history.steps) >= 2)
    # the app is gone (as after a crash); its training thread is not
    assert app.bridge.training
    assert await asyncio.to_thread(app.bridge.stop_and_wait, 60)
    latest = [e for e in list_checkpoints(workspace) if e.kind == "latest"]
    assert latest and latest[0].step >= 2


MODALS = {
    "confirm": lambda: ConfirmScreen("Delete it?", yes="Delete"),
    "pick": lambda: PickScreen("Which one?", [("a", "first"), ("b", "second")]),
    "help": HelpScreen,
}


@pytest.mark.parametrize("modal", MODALS)
async def test_every_dialog_ignores_type_ahead_and_answers_once(workspace, modal) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for keys in [("enter", "enter"), ("y", "enter"), ("escape", "escape"), ("enter", "escape", "y")]:
            answers: list = []
            early = typed(*keys)  # typed before the dialog appears
            app.push_screen(MODALS[modal](), answers.append)
            await burst(pilot, early)
            assert isinstance(app.screen, Dialog) and answers == [], keys
            await wait_for_dialog(pilot)
            await pilot.press(*keys)  # seen: the first key that answers does, the rest are harmless
            await pilot.press("escape", "escape")
            await pilot.pause()
            assert len(answers) == 1 and not isinstance(app.screen, Dialog) and app.screen.is_attached, keys
