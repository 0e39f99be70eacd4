"""Helpers for driving the studio in tests the way a user does."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def type_into(pilot, selector: str, text: str) -> None:
    """Focus an input by clicking it, clear it with backspace and type `text`."""
    await pilot.click(selector)
    widget = pilot.app.screen.query_one(selector)
    await pilot.press("end", *["backspace"] * len(widget.value))
    await pilot.press(*list(text))


async def wait_until(pilot, condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Let the app run until `condition()` holds; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the studio")
        await pilot.pause(0.05)


async def wait_for_dialog(pilot) -> None:
    """Wait until a dialog is on screen and painted: only then do keys answer it (earlier ones are type-ahead)."""
    import math

    from tui.screens.modals import Dialog

    await wait_until(pilot, lambda: isinstance(pilot.app.screen, Dialog) and pilot.app.screen.shown_at < math.inf)
