"""`slm runs` and `slm compare` on run folders written by hand."""

from __future__ import annotations

import json

from tests.fake_runs import fake_run
from tui.cli import main


def slm(ws, *args: str) -> int:
    return main(["--workspace", str(ws.root), *args])


def test_runs_lists_every_run_with_its_status_kind_and_best_figure(workspace, capsys) -> None:
    fake_run(workspace.root, "base", created="2026-12-01T10:00:00")
    fake_run(workspace.root, "base-a", parent="base", data=["a.txt"], ended="nan", created="2026-12-01T11:00:00")
    (workspace.checkpoints_dir / "broken").mkdir()
    (workspace.checkpoints_dir / "broken" / "run.json").write_text("[]", encoding="utf-8")
    assert slm(workspace, "runs") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["status", "run", "kind"]
    rows = {line.split()[1]: line for line in lines[1:]}
    assert rows["base"].split()[:3] == ["finished", "base", "pretrain"] and "0.883" in rows["base"]
    assert rows["base-a"].split()[:3] == ["failed", "base-a", "branch"] and rows["base-a"].endswith("base")
    assert "unreadable: run.json does not hold a JSON object" in rows["broken"]


def test_runs_filters_sorts_and_prints_json(workspace, capsys) -> None:
    fake_run(workspace.root, "slow", loss=9.0)
    fake_run(workspace.root, "fast", loss=3.0, ended="stopped")
    assert slm(workspace, "runs", "--sort", "bpb") == 0
    assert [line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]] == ["fast", "slow"]
    assert slm(workspace, "runs", "--status", "stopped", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["fast"] and rows[0]["steps"] == 20 and rows[0]["config"]["train.lr"] == 3e-3
    assert slm(workspace, "runs", "--kind", "merge") == 0
    assert "no runs" in capsys.readouterr().out


def test_runs_tree_draws_the_lineage(workspace, capsys) -> None:
    fake_run(workspace.root, "base", created="2026-12-01T10:00:00")
    fake_run(workspace.root, "tuned", parent="base", created="2026-12-01T11:00:00")
    assert slm(workspace, "runs", "--tree") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("base (pretrain, finished") and out[1].startswith("└─ tuned (fine-tune, finished")


def test_compare_prints_figures_side_by_side_and_only_the_settings_that_differ(workspace, capsys) -> None:
    fake_run(workspace.root, "a", lr=1e-3, steps=20)
    fake_run(workspace.root, "b", lr=3e-3, steps=10)
    assert slm(workspace, "compare", "a", "b") == 0
    out = capsys.readouterr().out
    table = {line.split("  ")[0].strip(): line.split() for line in out.splitlines() if line.strip()}
    assert table["steps"][-2:] == ["20", "10"]
    assert table["train.lr"][-2:] == ["0.001", "0.003"]
    assert "train.batch_size" not in table and "model.n_layer" not in table  # the same in both


def test_compare_refuses_an_unknown_run_in_one_line(workspace, capsys) -> None:
    fake_run(workspace.root, "a")
    assert slm(workspace, "compare", "a", "nope") == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "no run 'nope'" in err
