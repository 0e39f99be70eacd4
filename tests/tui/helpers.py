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
