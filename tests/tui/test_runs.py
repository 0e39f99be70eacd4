"""The Runs section: every run in a table, live ones found by themselves, curves overlaid, the diff and the tree."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from textual.widgets import DataTable, Static, Tree

from core.train.trainer import Trainer
from tests.fake_runs import fake_run
from tests.tui.helpers import wait_until
from tui.app import StudioApp
from tui.widgets.runs.overlay import OverlayPlot


def table_rows(app) -> dict[str, list[str]]:
    table = app.screen.query_one("#runs", DataTable)
    cells = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
    return {row[2]: row for row in cells}


def status(app, run: str) -> str | None:
    row = table_rows(app).get(run)
    return row[1] if row else None


async def open_runs(pilot) -> None:
    await pilot.press("7")
    await wait_until(pilot, lambda: pilot.app.current_mode == "runs" and pilot.app.screen.rows)


async def test_a_run_trained_by_another_process_shows_as_training_then_stopped_when_killed(workspace) -> None:
    fake_run(workspace.root, "done")
    run_dir = fake_run(workspace.root, "elsewhere", ended=None)
    code = f"from core.train.live import Heartbeat\nHeartbeat({str(run_dir)!r}).__enter__()\nprint('ok', flush=True)\nimport time; time.sleep(60)"
    app = StudioApp(workspace)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot)
        assert status(app, "elsewhere") == "stopped" and status(app, "done") == "finished"
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        try:
            assert process.stdout.readline().strip() == "ok"
            await wait_until(pilot, lambda: status(app, "elsewhere") == "training", timeout=10)
            step = {"event": "StepMetrics", "step": 21, "loss": 1.0, "lr": 0.1, "tokens_seen": 2688,
                    "tokens_per_s": 1.0, "elapsed_s": 11.0, "progress": 1.0, "eta_s": 0.0}  # fmt: skip
            with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(step) + "\n")
            await wait_until(pilot, lambda: table_rows(app)["elsewhere"][6] == "21", timeout=10)  # it keeps up
        finally:
            process.kill()
            process.wait()
        await wait_until(pilot, lambda: status(app, "elsewhere") == "stopped", timeout=10)


async def test_marked_runs_are_overlaid_and_the_keys_change_axis_metric_and_smoothing(workspace) -> None:
    fake_run(workspace.root, "a", lr=1e-3, created="2026-12-01T10:00:00")
    fake_run(workspace.root, "b", lr=3e-3, created="2026-12-01T11:00:00")
    fake_run(workspace.root, "c", created="2026-12-01T12:00:00")
    app = StudioApp(workspace)
    async with app.run_test(size=(160, 48)) as pilot:
        await open_runs(pilot)
        plot = app.screen.query_one(OverlayPlot)
        assert [name for name, _ in plot.runs] == ["c"]  # nothing marked: the run under the cursor
        await pilot.press("down", "space", "down", "space")
        await pilot.pause()
        assert [name for name, _ in plot.runs] == ["b", "a"]
        assert table_rows(app)["b"][0] == "●" and table_rows(app)["c"][0] == " "
        diff = str(app.screen.query_one("#runs-diff", Static).render())
        assert "train.lr" in diff and "0.001" in diff and "0.003" in diff and "batch_size" not in diff
        assert (plot.axis, plot.metric, plot.smoothing) == ("step", "val_bpb", 0.0)
        await pilot.press("x")
        assert plot.axis == "tokens"
        await pilot.press("x")
        assert plot.axis == "time"
        await pilot.press("m")
        assert plot.metric == "val_loss"
        await pilot.press("m")
        assert plot.metric == "loss"
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert plot.smoothing == 0.6
        await pilot.press("left_square_bracket")
        assert plot.smoothing == 0.3
        await pilot.pause()
        assert plot.build_seconds > 0  # it drew
        await pilot.press("up", "space")  # unmark b
        await pilot.pause()
        assert [name for name, _ in plot.runs] == ["a"]


async def test_the_tree_shows_the_lineage_and_filters_and_sorting_narrow_the_table(workspace) -> None:
    fake_run(workspace.root, "base", loss=9.0, created="2026-12-01T10:00:00")
    fake_run(workspace.root, "base-a", parent="base", data=["a"], loss=3.0, created="2026-12-01T11:00:00")
    (workspace.checkpoints_dir / "bad").mkdir()
    (workspace.checkpoints_dir / "bad" / "run.json").write_text("{", encoding="utf-8")
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_runs(pilot)
        assert "unreadable: run.json is not valid JSON" in table_rows(app)["bad"][-1]
        await pilot.press("t")
        tree = app.screen.query_one("#runs-lineage", Tree)
        assert tree.display
        base = tree.root.children[0]
        assert str(base.label).startswith("base (pretrain") and str(base.children[0].label).startswith("base-a (branch")
        await pilot.press("o", "o", "o")  # created -> name -> status -> best bits/byte
        await pilot.pause()
        assert list(table_rows(app))[:2] == ["base-a", "base"]
        await pilot.press("slash", *"branch", "enter")
        await pilot.pause()
        assert list(table_rows(app)) == ["base-a"]


async def test_a_runs_checkpoints_actions_work_from_its_row(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=4, eval_interval=2)
    Trainer(workspace, "alpha", model, train).run()
    fake_run(workspace.root, "empty", created="2000-01-01T00:00:00")  # no checkpoint at all
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_runs(pilot)
        assert status(app, "alpha") == "finished" and table_rows(app)["alpha"][6] == "4"
        await pilot.press("f")
        await wait_until(pilot, lambda: app.current_mode == "train")
        assert app.screen.init_from.endswith("alpha/best")
        await pilot.press("escape", "7")
        await wait_until(pilot, lambda: app.current_mode == "runs")
        await pilot.press("k")
        await wait_until(pilot, lambda: app.current_mode == "checkpoints")
        await pilot.press("7", "down", "c")
        await wait_until(pilot, lambda: any("no checkpoint" in n.message for n in app._notifications))
        assert app.current_mode == "runs"


async def test_s_stops_a_run_training_in_another_process_as_ctrl_c_does(workspace) -> None:
    from tests.tui.helpers import wait_for_dialog

    run_dir = fake_run(workspace.root, "elsewhere", ended=None)
    stopped = workspace.root / "stopped"
    code = (
        "import signal, sys, time\nfrom core.train.live import Heartbeat\n"
        f"signal.signal(signal.SIGINT, lambda *a: (open({str(stopped)!r}, 'w').write('saved latest'), sys.exit(0)))\n"
        f"with Heartbeat({str(run_dir)!r}):\n    print('ok', flush=True)\n    time.sleep(60)"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "ok"
        app = StudioApp(workspace)
        async with app.run_test(size=(160, 48)) as pilot:
            await open_runs(pilot)
            await wait_until(pilot, lambda: status(app, "elsewhere") == "training", timeout=10)
            await pilot.press("s")
            await wait_for_dialog(pilot)
            await pilot.press("y")
            assert process.wait(timeout=10) == 0 and stopped.read_text() == "saved latest"
            await wait_until(pilot, lambda: status(app, "elsewhere") == "stopped", timeout=10)
            await pilot.press("s")  # no longer training: a warning, no dialog
            await pilot.pause()
            assert app.screen is app.screen_stack[-1] and app.current_mode == "runs"
    finally:
        process.kill()
        process.wait()


async def test_stopping_the_studio_stops_branches_it_trains(workspace) -> None:
    """Branches started from the studio stop (train_branches SIGINTs each process: it saves latest) when the studio
    stops its work, as quitting does; the Merge section says so."""
    polled = []

    def train(on_event, on_poll):
        while True:
            polled.append(1)
            on_poll()  # raises once the studio asks to stop
            time.sleep(0.01)

    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await wait_until(pilot, lambda: app.current_mode == "merge")
        app.bridge.start_branches(train)
        await wait_until(pilot, lambda: app.bridge.training and polled)
        app.bridge.stop()
        assert app.bridge.wait_for_training(timeout=5)
        verdict = app.screen.query_one("#merge-verdict")
        await wait_until(pilot, lambda: "the branches were stopped" in str(verdict.render()))
