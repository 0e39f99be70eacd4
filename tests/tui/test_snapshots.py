"""Snapshots of every section and the help screen at 80x24 and 160x48.

After a deliberate change of look, review and accept the new pictures with
`python -m pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

import pytest
from textual.widgets import Input

from tui.app import StudioApp
from tui.sections import SECTIONS

SIZES = {"80x24": (80, 24), "160x48": (160, 48)}
VIEWS = [*SECTIONS, "help"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("view", VIEWS)
def test_view_looks_as_accepted(snap_compare, workspace, view: str, size: str) -> None:
    app = StudioApp(workspace)

    async def open_view(pilot) -> None:
        app.sub_title = "~/workspace"  # the real path is a temporary folder that changes per run
        await pilot.press("f1" if view == "help" else SECTIONS[view][0])
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        for field in app.screen.query(Input):
            field.cursor_blink = False  # a blinking cursor would differ from run to run
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_view)


@pytest.mark.parametrize("size", SIZES)
def test_runs_view_with_runs_overlaid_looks_as_accepted(snap_compare, workspace, size: str) -> None:
    from tests.fake_runs import fake_run

    fake_run(workspace.root, "base", steps=40, created="2026-12-01T10:00:00")
    fake_run(workspace.root, "base-a", parent="base", data=["a"], loss=4.0, steps=30, created="2026-12-01T11:00:00")
    fake_run(workspace.root, "lr-high", lr=1e-2, loss=6.0, steps=40, ended="nan", created="2026-12-01T12:00:00")
    app = StudioApp(workspace)

    async def open_view(pilot) -> None:
        app.sub_title = "~/workspace"
        await pilot.press("7")
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        await pilot.press("space", "down", "down", "space")
        await pilot.pause(0.3)

    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_view)
