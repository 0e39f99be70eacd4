"""The Checkpoints section: the table, and chat / fine-tune / resume / delete from the keyboard."""

from __future__ import annotations

import json
import shutil

from textual.widgets import DataTable

from core.train.trainer import Trainer
from tests.tui.helpers import wait_for_dialog, wait_until
from tui.app import StudioApp
from tui.screens.modals import ConfirmScreen
from tui.widgets.merge.picker import CheckpointPicker


def rows(app) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def test_table_lists_checkpoints_and_actions_open_sections(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=6, eval_interval=3)
    Trainer(workspace, "alpha", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        assert sorted(rows(app)) == ["alpha/best", "alpha/final", "alpha/latest"]
        table = app.screen.query_one(DataTable)
        assert str(table.get_row_at(0)[1]) == "6"

        await pilot.press("f")
        await wait_until(pilot, lambda: app.current_mode == "train")
        assert app.screen.init_from and "alpha" in app.screen.init_from

        await pilot.press("escape", "6")
        await pilot.pause()
        latest = rows(app).index("alpha/latest")
        app.screen.query_one(DataTable).move_cursor(row=latest)
        await pilot.press("r")
        await wait_until(pilot, lambda: app.current_mode == "train")
        assert app.screen.resume_name == "alpha"

        await pilot.press("escape", "6")
        await pilot.pause()
        await pilot.press("c")
        await wait_until(pilot, lambda: app.current_mode == "chat")
        await wait_until(pilot, lambda: app.bridge.generator is not None)


async def test_delete_asks_first(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=3)
    Trainer(workspace, "beta", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        before = rows(app)
        await pilot.press("d")
        await wait_for_dialog(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert rows(app) == before
        await pilot.press("d")
        await wait_for_dialog(pilot)
        await pilot.press("y")
        await pilot.pause()
        assert len(rows(app)) == len(before) - 1
        assert not (workspace.run_dir("beta") / before[0].split("/")[1]).exists()


async def test_empty_workspace_says_how_to_start(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        assert "no checkpoints yet" in str(app.screen.query_one("#checkpoints-detail").render())
        await pilot.press("d", "c", "r", "f")  # nothing selected: warnings, no crash
        await pilot.pause()
        assert app.current_mode == "checkpoints"


async def test_export_writes_the_chosen_format_to_exports(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=2, eval_interval=2)
    Trainer(workspace, "alpha", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        app.screen.query_one(DataTable).move_cursor(row=rows(app).index("alpha/final"))
        await pilot.press("e")
        await pilot.pause()
        await pilot.press("down", "enter")  # the second format: GGUF f16
        out = workspace.root / "exports" / "alpha-final-f16.gguf"
        await wait_until(pilot, lambda: out.exists() and not app.workers)
        assert out.read_bytes()[:4] == b"GGUF"
        assert any("exported to" in n.message for n in app._notifications)


async def test_an_unreadable_checkpoint_has_its_row_and_the_rest_stay_usable(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=2, eval_interval=2)
    Trainer(workspace, "good", model, train).run()
    shutil.copytree(workspace.run_dir("good"), workspace.run_dir("bad"))
    meta_path = workspace.run_dir("bad") / "final" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    meta["model"]["n_layer"] = "x"
    meta_path.write_text(json.dumps(meta))
    app = StudioApp(workspace)
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.press("6")
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        cells = {str(table.get_row_at(i)[0]): [str(c) for c in table.get_row_at(i)] for i in range(table.row_count)}
        assert len(cells) == 6 and "unreadable: checkpoint.json: invalid model config" in cells["bad/final"][-1]
        table.move_cursor(row=list(cells).index("bad/final"))
        await pilot.press("c")  # chatting with it is refused in a notification; the section stays
        await pilot.pause()
        assert app.current_mode == "checkpoints"
        await pilot.press("4")
        await pilot.pause()
        picker = app.screen.query_one(CheckpointPicker)
        options = [picker.get_option_at_index(i) for i in range(picker.option_count)]
        bad = [o for o in options if o.value.endswith("bad/final")]
        assert len(options) == 6 and bad[0].disabled and "unreadable" in str(bad[0].prompt)
        assert not any(o.disabled for o in options if o not in bad)
