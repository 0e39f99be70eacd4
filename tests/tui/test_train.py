"""The Train section: a tiny run started, paused, stopped and followed from the keyboard."""

from __future__ import annotations

import json
import socket
import time

from textual.widgets import Input

from core.listing import list_checkpoints
from core.train.trainer import Trainer
from tests.tui.helpers import type_into, wait_for_dialog, wait_until
from tui.app import StudioApp
from tui.screens.modals import ConfirmScreen, PickScreen
from tui.widgets.train.loss_plot import LossPlot

TINY_FORM = {
    "n_layer": "2",
    "n_head": "2",
    "n_kv_head": "1",
    "n_embd": "32",
    "context": "32",
    "vocab_size": "320",
    "batch_size": "4",
    "max_steps": "30",
    "eval_interval": "10",
}


async def fill_tiny_form(pilot, steps: str = "30") -> None:
    """Set the form's fields (typing is tested on one; typing them all takes seconds)."""
    await type_into(pilot, "#name", "studio-run")
    for name, value in {**TINY_FORM, "max_steps": steps}.items():
        pilot.app.screen.query_one(f"#f-{name}", Input).value = value
    await pilot.pause()
    await pilot.press("escape")


async def test_start_a_run_and_watch_it(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await fill_tiny_form(pilot)
        assert "parameters" in str(app.screen.query_one("#size").render())
        await pilot.press("s")
        await wait_until(pilot, lambda: app.bridge.history.state == "ended", timeout=60)
        await pilot.pause(0.3)
        plot = app.screen.query_one(LossPlot)
        assert plot._history is not None and len(plot._history.steps) == 30
        assert plot._history.val_steps == [10, 20, 30]
        status = str(app.screen.query_one("#status").render())
        assert "studio-run" in status and "step 30/30" in status
        kinds = {(e.run, e.kind) for e in list_checkpoints(workspace)}
        assert {("studio-run", "best"), ("studio-run", "final"), ("studio-run", "latest")} <= kinds
        await pilot.press("l", "b")  # log scale and bits per byte redraw without error
        assert plot.log_scale and plot.show_bpb


async def test_plot_options_before_any_run(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "escape", "l", "b")
        await pilot.pause()
        plot = app.screen.query_one(LossPlot)
        assert plot.log_scale and plot.show_bpb
        assert "no run yet" in str(plot.render())
        assert app.is_running


async def test_pause_resume_and_stop_with_keys(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await fill_tiny_form(pilot, steps="100000")
        await pilot.press("s")
        await wait_until(pilot, lambda: len(app.bridge.history.steps) >= 3)
        await pilot.press("p")
        await wait_until(pilot, lambda: app.bridge.history.state == "paused")
        paused_at = app.bridge.history.last_step.step
        await pilot.pause(0.3)
        assert app.bridge.history.last_step.step == paused_at
        await pilot.press("p")
        await wait_until(pilot, lambda: app.bridge.history.last_step.step > paused_at)
        await pilot.press("x")
        await wait_until(pilot, lambda: not app.bridge.training)
        assert app.bridge.history.end.reason == "stopped"
        latest = [e for e in list_checkpoints(workspace) if e.kind == "latest"]
        assert latest and latest[0].step == app.bridge.history.end.step
        await pilot.press("s")  # the form still holds the same name: a clear error, not a crash
        await wait_until(pilot, lambda: not app.bridge.training)
        assert app.bridge.history.end.reason == "error" and "already exists" in app.bridge.history.end.message


async def test_quitting_while_training_asks_and_saves(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await fill_tiny_form(pilot, steps="100000")
        await pilot.press("s")
        await wait_until(pilot, lambda: len(app.bridge.history.steps) >= 2)
        await pilot.press("ctrl+q")
        await wait_for_dialog(pilot)
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")  # cancel: the run goes on
        await pilot.pause()
        assert app.bridge.training
        await pilot.press("ctrl+q")
        await wait_for_dialog(pilot)
        await pilot.press("y")
        await wait_until(pilot, lambda: not app.bridge.training)
    latest = [e for e in list_checkpoints(workspace) if e.kind == "latest"]
    assert latest and latest[0].step >= 2


async def test_attach_follows_a_headless_run(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=40, eval_interval=10)
    Trainer(workspace, "headless", model, train).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "escape", "a")
        await wait_for_dialog(pilot)
        assert isinstance(app.screen, PickScreen)
        await pilot.press("enter")
        await wait_until(pilot, lambda: len(app.bridge.history.steps) == 40)
        await pilot.pause(0.3)
        assert app.screen.query_one(LossPlot)._history.val_steps == [10, 20, 30, 40]


async def test_an_attached_run_whose_process_died_reads_as_killed(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=40, eval_interval=10)
    Trainer(workspace, "headless", model, train).run()
    run_dir = workspace.run_dir("headless")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "metrics.jsonl").write_text("\n".join(line for line in lines if '"RunEnded"' not in line) + "\n")
    mark = {"pid": 2**22 + 1, "host": socket.gethostname(), "started": time.time(), "heartbeat": time.time()}
    (run_dir / "live.json").write_text(json.dumps(mark))  # as a killed trainer leaves it: no such process
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "escape", "a")
        await wait_for_dialog(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.bridge.history.end is not None)
        assert app.bridge.history.end.reason == "killed" and app.bridge.history.end.step == 40
        await pilot.pause(0.3)
        status = str(app.screen.query_one("#status").render())
        assert "killed" in status and "ETA" not in status


async def test_a_second_run_is_refused_while_one_trains(workspace) -> None:
    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await fill_tiny_form(pilot, steps="100000")
        await pilot.press("s")
        await wait_until(pilot, lambda: app.bridge.training and len(app.bridge.history.steps) >= 1)
        app.screen.query_one("#name").value = "second"
        await app.start_training()  # the palette action, while a run trains
        await pilot.pause()
        assert app.bridge.training and app.bridge.history.run == "studio-run"
        assert not workspace.run_dir("second").exists()
        await pilot.press("escape", "x")
        await wait_until(pilot, lambda: not app.bridge.training)


async def test_preset_auto_shows_the_plan_for_the_minutes_and_starts_it(workspace) -> None:
    from textual.widgets import Select

    app = StudioApp(workspace)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        screen = app.screen
        screen.query_one("#preset", Select).value = "auto"
        screen.query_one("#f-max_minutes", Input).value = "0.05"
        await wait_until(pilot, lambda: screen.plan is not None, timeout=60)
        size = str(screen.query_one("#size").render())
        assert f"plan: depth {screen.plan.model.n_layer}" in size and "done ≈" in size
        assert screen.query_one("#f-n_layer", Input).value == str(screen.plan.model.n_layer)
        screen.query_one("#f-max_minutes", Input).value = "x"
        await wait_until(pilot, lambda: "minutes must be a number" in str(screen.query_one("#size").render()))
        screen.query_one("#f-max_minutes", Input).value = "0.05"
        await wait_until(pilot, lambda: screen.plan is not None)
        await pilot.press("escape", "s")
        await wait_until(pilot, lambda: app.bridge.history.state == "ended", timeout=60)
        assert app.bridge.history.run.startswith("auto-")
