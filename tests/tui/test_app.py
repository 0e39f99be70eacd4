"""The studio shell: sections, help, palette, themes, worker failures, and random keys."""

from __future__ import annotations

import random

import pytest
from textual import events

from core.workspace import load_settings
from tests.tui.helpers import wait_until
from tui.app import StudioApp
from tui.screens.help import HelpScreen
from tui.sections import SECTIONS


async def test_number_keys_open_every_section(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        for mode, (key, _) in SECTIONS.items():
            await pilot.press("escape", key)
            await pilot.pause()
            assert app.current_mode == mode


async def test_help_lists_keys_and_slash_commands(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("f1")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.query_one("Markdown").source
        assert "Train" in text and "`s`" in text and "/help" in text and "ctrl+p" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


async def test_palette_switches_sections_and_themes_and_the_theme_is_remembered(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to checkpoints")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "checkpoints")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"theme: gothic")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.theme == "gothic")
    assert load_settings()["theme"] == "gothic"
    again = StudioApp(workspace)
    async with again.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert again.theme == "gothic"


async def test_a_failing_worker_is_shown_and_the_studio_goes_on(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        app.bridge.run_job("boom", lambda: 1 / 0)
        await wait_until(pilot, lambda: any("division by zero" in n.message for n in app._notifications))
        await pilot.press("3")
        await pilot.pause()
        assert app.current_mode == "train" and app.is_running


async def test_a_job_whose_screen_shows_its_error_raises_no_toast(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        quiet = app.bridge.run_job("quiet", lambda: 1 / 0, shown=True)
        await wait_until(pilot, lambda: quiet.is_finished)
        app.bridge.run_job("loud", lambda: 1 / 0)
        await wait_until(pilot, lambda: any("division by zero" in n.message for n in app._notifications))
        assert [n.title for n in app._notifications] == ["loud failed"]


def no_quitting(app: StudioApp) -> StudioApp:
    """The studio with its Quit action disarmed: random keys may pick "Quit" in the palette, and only a crash
    should end the app under them."""

    async def stay() -> None:
        app.quit_asked = True

    app.action_quit = stay
    return app


async def test_150_random_keys_raise_nothing(workspace) -> None:
    rng = random.Random(1234)
    keys = [*"123456", *"abcdgfprsxlyq ", "tab", "shift+tab", "enter", "escape", "up", "down", "left", "right",
            "space", "f1", "ctrl+p", "pageup", "pagedown", "home", "end", "backspace", "delete", "/"]  # fmt: skip
    app = no_quitting(StudioApp(workspace))
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(150):
            await pilot.press(rng.choice(keys))
        await pilot.pause()
        app.bridge.stop()
        app.bridge.stop_generation()
        await wait_until(pilot, lambda: not app.bridge.training, timeout=60)
        assert app.is_running


@pytest.mark.parametrize("size", [(40, 12), (200, 60)])
async def test_bursts_of_random_keys_at_small_and_large_sizes_raise_nothing(workspace, size) -> None:
    rng = random.Random(size[0])
    keys = [*"123456", *"abcdgfprsxlyq+-", "enter", "escape", "tab", "up", "down", "space", "f1", "f2", "ctrl+p"]
    app = no_quitting(StudioApp(workspace))
    async with app.run_test(size=size) as pilot:
        for _ in range(12):  # bursts of 10 keys, delivered faster than the studio handles them
            for key in rng.choices(keys, k=10):
                app.post_message(events.Key(key, key if len(key) == 1 else None))
            await pilot.pause(0.1)
        await pilot.pause()
        app.bridge.stop()
        app.bridge.stop_generation()
        await wait_until(pilot, lambda: not app.bridge.training, timeout=60)
        assert app.is_running
