from __future__ import annotations

import json
import subprocess
import sys

import pytest

from core.runs.curves import Curves, smooth
from core.runs.lineage import config_diff, lineage, tree_lines
from core.runs.table import list_runs, read_run
from core.train.live import Heartbeat
from tests.fake_runs import fake_run


def test_a_row_holds_what_the_run_files_say(workspace) -> None:
    run_dir = fake_run(workspace.root, "base", steps=20)
    row = read_run(run_dir)
    assert (row.name, row.status, row.kind, row.error) == ("base", "finished", "pretrain", None)
    assert (row.steps, row.tokens, row.seconds, row.params) == (20, 20 * 128, 10.0, 12345)
    assert row.best_bpb == pytest.approx((5.0 / 3 + 0.1) / 2)  # the eval at step 20 is the lowest
    assert row.shape == "2×32 2h/1kv ctx 32"


@pytest.mark.parametrize(
    ("ended", "status"), [("finished", "finished"), ("early_stop", "finished"), ("stopped", "stopped"),
                          ("nan", "failed"), ("error", "failed"), (None, "stopped")],
)  # fmt: skip
def test_the_status_follows_how_the_run_ended(workspace, ended, status) -> None:
    assert read_run(fake_run(workspace.root, "r", ended=ended)).status == status


def test_a_live_mark_reads_as_training_and_a_killed_process_as_stopped(workspace) -> None:
    run_dir = fake_run(workspace.root, "live", ended=None)
    with Heartbeat(run_dir, interval=60):
        assert read_run(run_dir).status == "training"
    code = f"from core.train.live import Heartbeat\nHeartbeat({str(run_dir)!r}).__enter__()\nprint('ok', flush=True)\nimport time; time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ok"
    assert read_run(run_dir).status == "training"
    process.kill()
    process.wait()
    assert read_run(run_dir).status == "stopped"


def test_kinds_and_parents_come_from_run_json(workspace) -> None:
    root = workspace.root
    fake_run(root, "base")
    fake_run(root, "base-a", parent="base", data=["a.txt"])
    fake_run(root, "tuned", parent="base")
    merge = {"merge": {"method": "ties", "parents": [str(root / "checkpoints/base-a/final"), "x/base-b/final"]}}
    fake_run(root, "merged", extra=merge, steps=0, ended=None)
    fake_run(root, "chat", parent="tuned", extra={"objective": "sft"})
    rows = {r.name: r for r in list_runs(workspace)}
    assert {n: r.kind for n, r in rows.items()} == {
        "base": "pretrain", "base-a": "branch", "tuned": "fine-tune", "merged": "merge", "chat": "sft",
    }  # fmt: skip
    assert rows["base-a"].parents == ["base"] and rows["merged"].parents == ["base-a", "base-b"]
    assert rows["merged"].status == "finished"  # made in one go, not trained
    assert rows["chat"].parents == ["tuned"]


def test_a_damaged_run_json_is_one_row_with_its_reason(workspace) -> None:
    fake_run(workspace.root, "good")
    bad = fake_run(workspace.root, "bad")
    (bad / "run.json").write_text(json.dumps({"model": {"n_layer": "four"}}), encoding="utf-8")
    rows = {r.name: r for r in list_runs(workspace)}
    assert rows["good"].error is None and rows["good"].best_bpb is not None
    assert rows["bad"].error.startswith("run.json:") and "n_layer" in rows["bad"].error
    (bad / "run.json").write_text("{not json", encoding="utf-8")
    assert "not valid JSON" in read_run(bad).error


def test_curves_read_only_what_the_file_gained_and_start_over_when_it_is_rewritten(workspace) -> None:
    run_dir = fake_run(workspace.root, "r", steps=10, ended=None)
    curves = Curves(run_dir / "metrics.jsonl")
    assert curves.update() and len(curves.series["loss"]) == 10 and len(curves.series["val_bpb"]) == 2
    assert not curves.update()  # nothing new
    step = {"event": "StepMetrics", "step": 11, "loss": 1.0, "lr": 0.1, "tokens_seen": 1408, "tokens_per_s": 1.0,
            "elapsed_s": 5.5, "progress": 1.0, "eta_s": 0.0}  # fmt: skip
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(step) + "\n")
    assert curves.update() and curves.series["loss"].steps[-1] == 11 and curves.tokens_seen == 1408
    assert curves.series["val_bpb"].xs("tokens") == [5 * 128, 10 * 128]
    assert curves.series["loss"].xs("time")[-1] == pytest.approx(5.5 / 60)
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()[:4]  # a resume trimmed it
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert curves.update() and curves.series["loss"].steps == [1, 2, 3]


def test_a_resumed_run_replaces_the_steps_it_logs_again(workspace) -> None:
    run_dir = fake_run(workspace.root, "r", steps=10, ended="stopped")
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        started = {"event": "RunStarted", "run": "r", "run_dir": "", "params": 1, "device": "cpu",
                   "precision": "fp32", "max_steps": 20, "train_tokens": 1, "val_tokens": 1,
                   "tokens_per_step": 128, "start_step": 6}  # fmt: skip
        f.write(json.dumps(started) + "\n")
    curves = Curves(run_dir / "metrics.jsonl")
    curves.update()
    assert curves.series["loss"].steps == [1, 2, 3, 4, 5, 6] and curves.ended is None
    assert curves.series["val_bpb"].steps == [5]


def test_smoothing_is_tensorboards_debiased_moving_average() -> None:
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards zero at the start
    assert smooth([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    out = smooth([0.0, 10.0], 0.5)
    assert out == pytest.approx([0.0, 10 * 0.5 / (1 - 0.25)])
    with pytest.raises(ValueError):
        smooth([1.0], 1.0)


def test_the_diff_shows_only_the_settings_that_differ(workspace) -> None:
    fake_run(workspace.root, "a", lr=1e-3)
    fake_run(workspace.root, "b", lr=3e-3)
    rows = sorted(list_runs(workspace), key=lambda r: r.name)
    assert config_diff(rows) == {"train.lr": [1e-3, 3e-3]}
    assert config_diff(rows[:1]) == {}
    train = {"lr": 3e-3, "batch_size": 4, "data": [], "init_from": None, "mix": {"books": 0.5, "wiki": 0.2}}
    fake_run(workspace.root, "c", extra={"train": train})
    rows = sorted(list_runs(workspace), key=lambda r: r.name)
    assert config_diff(rows[1:]) == {"train.mix": ["by size", "books=0.5, wiki=0.2"]}


def test_the_lineage_is_a_tree_from_base_to_branches_merge_and_fine_tune(workspace) -> None:
    root = workspace.root
    fake_run(root, "base", created="2026-12-01T10:00:00")
    fake_run(root, "base-a", parent="base", data=["a"], created="2026-12-01T10:01:00")
    fake_run(root, "base-b", parent="base", data=["b"], created="2026-12-01T10:02:00")
    parents = [str(root / "checkpoints" / n / "final") for n in ("base-a", "base-b")]
    fake_run(root, "merged", extra={"merge": {"method": "ties", "parents": parents}}, created="2026-12-01T10:03:00")
    fake_run(root, "tuned", parent="merged", created="2026-12-01T10:04:00")
    fake_run(root, "other", created="2026-12-01T09:00:00")
    lines = tree_lines(lineage(list_runs(workspace)))
    names = [line.split(" (")[0].lstrip("│├└─ ") for line in lines]
    assert names == ["other", "base", "base-a", "merged", "tuned", "base-b"]
    assert lines[1].startswith("base (pretrain") and lines[2].startswith("├─ base-a (branch")
    assert lines[3].startswith("│  └─ merged (merge of base-a + base-b")
    assert lines[4].startswith("│     └─ tuned (fine-tune") and lines[5].startswith("└─ base-b")


def test_a_loop_of_parents_does_not_hang_the_lineage(workspace) -> None:
    fake_run(workspace.root, "a", parent="b")
    fake_run(workspace.root, "b", parent="a")
    lines = tree_lines(lineage(list_runs(workspace)))
    assert sorted(line.split(" (")[0].lstrip("│├└─ ") for line in lines) == ["a", "b"]
