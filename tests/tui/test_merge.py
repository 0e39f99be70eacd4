"""The Merge section: pick checkpoints with the keyboard, see whether they merge, merge, compare."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from core.tokenizer.bpe import Tokenizer
from core.train.trainer import Trainer
from tests.core.merge.test_weights import write_checkpoint
from tests.tui.helpers import type_into, wait_until
from tui.app import StudioApp
from tui.widgets.merge.comparison import ComparisonTable
from tui.widgets.merge.picker import CheckpointPicker


@pytest.fixture
def branched(workspace, tiny_configs):
    """A base run and two runs branched from it."""
    Trainer(workspace, "base", *tiny_configs(max_steps=4)).run()
    for name in ("b1", "b2"):
        Trainer(workspace, name, *tiny_configs(max_steps=4, init_from="base/final", tokenizer=None)).run()
    return workspace


async def pick(pilot, *names: str) -> None:
    """Open the Merge section and pick checkpoints (RUN/KIND) with the arrow keys and space, in this order."""
    await pilot.press("4")
    picker = pilot.app.screen.query_one(CheckpointPicker)
    picker.focus()
    for name in names:
        target = next(i for i in range(picker.option_count) if picker.get_option_at_index(i).value.endswith(name))
        await pilot.press("home", *["down"] * target, "space")


def verdict(app) -> str:
    return str(app.screen.query_one("#merge-verdict").render())


def numbers(table: ComparisonTable) -> list[list[str]]:
    return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]


async def test_merge_two_branches_and_compare(branched) -> None:
    app = StudioApp(branched)
    async with app.run_test(size=(120, 40)) as pilot:
        await pick(pilot, "b1/final", "b2/final")
        await wait_until(pilot, lambda: "compatible" in verdict(app))
        assert "0.50 × b1/final + 0.50 × b2/final" in str(app.screen.query_one("#merge-plan").render())
        await type_into(pilot, "#merge-weights", "1, 2, 3")
        assert "3 weights for 2 checkpoints" in str(app.screen.query_one("#merge-plan").render())
        await type_into(pilot, "#merge-weights", "3, 1")
        await type_into(pilot, "#merge-name", "blend")
        await pilot.press("enter")
        table = app.screen.query_one(ComparisonTable)
        await wait_until(pilot, lambda: table.row_count == 4)
        assert "merged into blend/final" in verdict(app)
        rows = numbers(table)
        assert [r[0] for r in rows] == ["base base/final", "b1/final", "b2/final", "= blend/final"]  # with their base
        assert [r[1] for r in rows] == ["-", "0.75", "0.25", "-"]
        assert rows[0][4] == "-" and len(rows[0]) == 5  # no per-entry columns: both trained on all the data
        assert all(float(r[2]) > 0 and float(r[3]) > 0 for r in rows)
        meta = json.loads((branched.run_dir("blend") / "final" / "checkpoint.json").read_text())
        assert meta["merge"]["weights"] == [0.75, 0.25]
        picker = app.screen.query_one(CheckpointPicker)
        assert any(picker.get_option_at_index(i).value.endswith("blend/final") for i in range(picker.option_count))


async def test_incompatible_checkpoints_are_refused_and_m_does_nothing(branched, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=2)
    Trainer(branched, "wide", replace(model, n_embd=64), train).run()
    app = StudioApp(branched)
    async with app.run_test(size=(120, 40)) as pilot:
        await pick(pilot, "b1/final", "wide/final")
        await wait_until(pilot, lambda: "✗" in verdict(app))
        assert "n_embd 32 vs 64" in verdict(app)
        before = sorted(p.name for p in branched.checkpoints_dir.iterdir())
        await pilot.press("m", "f", "m")  # forcing does not help either: the shapes differ
        await app.workers.wait_for_complete()
        await wait_until(pilot, lambda: "✗" in verdict(app))
        assert sorted(p.name for p in branched.checkpoints_dir.iterdir()) == before
        assert app.screen.check_action("merge", ()) is None  # shown, but disabled


async def test_unrelated_runs_merge_only_when_forced(branched, tiny_configs) -> None:
    Trainer(branched, "solo", *tiny_configs(max_steps=2)).run()
    app = StudioApp(branched)
    async with app.run_test(size=(120, 40)) as pilot:
        await pick(pilot, "b1/final", "solo/final")
        await wait_until(pilot, lambda: "share no ancestor" in verdict(app))
        await pilot.press("m")
        assert not branched.run_dir("forced").exists()
        await pilot.press("f")
        await wait_until(pilot, lambda: verdict(app).startswith("! forced"))
        await type_into(pilot, "#merge-name", "forced")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "merged into forced/final" in verdict(app))
        meta = json.loads((branched.run_dir("forced") / "final" / "checkpoint.json").read_text())
        assert "share no ancestor" in meta["merge"]["warnings"][0]
        await app.workers.wait_for_complete()


@pytest.fixture
def rooted(workspace, tokenizer_file):
    """Untrained checkpoints made instantly: a base run and two runs whose lineage names it."""
    tokenizer = Tokenizer.load(tokenizer_file)
    base = write_checkpoint(workspace.run_dir("base") / "final", "base-id", tokenizer)
    ref = [{"run_id": "base-id", "path": str(base), "step": 1}]
    for seed, name in enumerate(("b1", "b2"), start=1):
        write_checkpoint(workspace.run_dir(name) / "final", f"{name}-id", tokenizer, ref, seed=seed)
    for name in ("base", "b1", "b2"):
        (workspace.run_dir(name) / "run.json").write_text("{}")
    return workspace


async def test_a_ties_merge_shows_the_base_field_and_uses_the_shared_base(rooted) -> None:
    app = StudioApp(rooted)
    async with app.run_test(size=(120, 40)) as pilot:
        await pick(pilot, "b1/final", "b2/final")
        await wait_until(pilot, lambda: "compatible" in verdict(app))
        base_field = app.screen.query_one("#merge-base-field")
        assert not base_field.display  # linear needs no base
        await pilot.click("#merge-method")
        await pilot.press("down", "down", "down", "enter")  # linear, slerp, task-arithmetic, ties
        await wait_until(pilot, lambda: app.screen.method == "ties")
        assert base_field.display and "trimmed" in str(app.screen.query_one("#merge-method-about").render())
        await type_into(pilot, "#merge-name", "tied")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "merged into tied/final" in verdict(app))
        meta = json.loads((rooted.run_dir("tied") / "final" / "checkpoint.json").read_text())
        assert meta["merge"]["method"] == "ties" and meta["merge"]["base"] == str(rooted.run_dir("base") / "final")
        await app.workers.wait_for_complete()


async def test_branch_train_merge_from_the_studio(workspace, tiny_configs) -> None:
    """Pick a base, b plans a branch per folder of data/, the branches train in processes and show live in the
    Runs section, come back picked, merge, and are compared with the base on each branch's own data."""
    from tests.tui.helpers import wait_for_dialog
    from tui.screens.branch import BranchDialog

    Trainer(workspace, "base", *tiny_configs(max_steps=4)).run()
    app = StudioApp(workspace)
    async with app.run_test(size=(140, 44)) as pilot:
        await pick(pilot, "base/final")
        await pilot.press("b")
        await wait_for_dialog(pilot)
        dialog = app.screen
        assert isinstance(dialog, BranchDialog)
        assert "base-b.md  ← b.md" in str(dialog.query_one("#branch-plan").render())
        await type_into(pilot, "#branch-steps", "3")
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.current_mode == "runs")
        runs = app.screen
        assert runs.marked == ["base-b.md", "base-stories"]
        await wait_until(pilot, lambda: {r.name for r in runs.rows} >= {"base-b.md", "base-stories"}, timeout=60)
        await wait_until(pilot, lambda: not app.bridge.training, timeout=120)
        statuses = {"base-b.md": "finished", "base-stories": "finished"}  # within a refresh of the table
        await wait_until(pilot, lambda: {r.name: r.status for r in runs.rows if r.name.startswith("base-")} == statuses)
        await pilot.press("4")
        merge = app.screen
        await wait_until(pilot, lambda: sorted(merge.picks) == sorted(
            str(workspace.run_dir(n) / "final") for n in ("base-b.md", "base-stories")
        ))  # fmt: skip
        await wait_until(pilot, lambda: "compatible" in verdict(app))
        await type_into(pilot, "#merge-name", "joined")
        await pilot.press("enter")
        table = merge.query_one(ComparisonTable)
        await wait_until(pilot, lambda: table.row_count == 4, timeout=60)
        rows = numbers(table)
        assert [r[0] for r in rows] == ["base base/final", "base-b.md/final", "base-stories/final", "= joined/final"]
        assert [str(c.label) for c in table.columns.values()][-2:] == ["b.md b/B", "stories b/B"]
        assert all(float(x) > 0 for r in rows for x in r[-2:])
