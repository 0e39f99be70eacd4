"""The pipeline's rules, checked without training: names, skip/resume/clear, branch processes, stage settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.errors import SLMError
from core.merge.branches import Branch, plan_branches
from core.merge.pipeline import (
    CONTINUE_LR,
    HANDED_ON,
    BranchQueued,
    MergeRecipe,
    Pipeline,
    StageOverrides,
    StageRun,
    StageSkipped,
    branch_job,
    check_no_clash,
    continue_lr,
    discard_unstarted,
    prepare_stage,
    run_pipeline,
    stage_run,
    stage_state,
    train_branches,
    train_stage,
)
from core.train.events import RunEnded


def finish(run: Path) -> None:
    """Make `run` look like a run that finished."""
    (run / "final").mkdir(parents=True, exist_ok=True)
    (run / "final" / "checkpoint.json").write_text("{}")
    (run / "run.json").write_text("{}")


def save_latest(run: Path) -> None:
    (run / "latest").mkdir(parents=True, exist_ok=True)
    (run / "latest" / "checkpoint.json").write_text("{}")


# --- names -----------------------------------------------------------------------------------------


def test_stage_runs_and_a_branch_that_would_take_their_name(workspace) -> None:
    assert [stage_run("p", s) for s in ("base", "merge", "tune")] == ["p-base", "p-merged", "p-tuned"]
    check_no_clash("p", plan_branches(workspace, "p"))
    (workspace.data_dir / "tuned.txt").write_text("Once upon a time.\n", encoding="utf-8")
    check_no_clash("p", plan_branches(workspace, "p"))  # p-tuned.txt is not p-tuned
    (workspace.data_dir / "merged").mkdir()
    (workspace.data_dir / "merged" / "m.txt").write_text("Once upon a time.\n", encoding="utf-8")
    with pytest.raises(SLMError) as caught:
        check_no_clash("p", plan_branches(workspace, "p"))
    assert str(caught.value) == "the branch p-merged would take the name of a pipeline stage: rename that data entry"
    check_no_clash("q", [Branch("p-merged", "merged")])  # another pipeline's name is free


# --- skip, resume or clear -------------------------------------------------------------------------


def test_a_run_is_done_resumable_or_new(tmp_path) -> None:
    run = tmp_path / "run"
    assert stage_state(run) == "new"
    save_latest(run)
    assert stage_state(run) == "resume"
    with pytest.raises(SLMError, match="resume"):
        discard_unstarted(run)
    (run / "final").mkdir()
    (run / "final" / "checkpoint.json").write_text("{}")
    assert stage_state(run) == "resume"  # a final without run.json is not a finished run
    (run / "run.json").write_text("{}")
    assert stage_state(run) == "done"


def test_a_stage_is_skipped_resumed_or_cleared(tmp_path) -> None:
    done, stopped, died = tmp_path / "done", tmp_path / "stopped", tmp_path / "died"
    finish(done)
    save_latest(stopped)
    (stopped / "metrics.jsonl").write_text("{}\n")
    died.mkdir()
    (died / "run.json").write_text("{}")  # it crashed before its first checkpoint
    (died / "metrics.jsonl").write_text("{}\n")
    assert [prepare_stage(r) for r in (done, stopped, died, tmp_path / "never")] == ["done", "resume", "new", "new"]
    assert (done / "final").is_dir() and (stopped / "metrics.jsonl").exists()  # kept as they were
    assert not died.exists()  # cleared for a fresh start


# --- settings of each stage -------------------------------------------------------------------------


def test_a_stage_limits_and_learning_rate_replace_the_general_ones() -> None:
    settings = {"preset": "toy", "max_steps": 100, "max_minutes": 5.0, "lr": 1e-3, "seed": 3}
    assert StageOverrides().apply(settings) == settings
    assert StageOverrides(max_steps=7).apply(settings) == {**settings, "max_steps": 7}
    assert StageOverrides(max_minutes=0.5, lr=2e-4).apply(settings, lr=3e-4) == {
        **settings,
        "max_minutes": 0.5,
        "lr": 2e-4,
    }
    assert StageOverrides().apply(settings, lr=3e-4)["lr"] == 3e-4  # a stage's default beats the general lr
    assert settings["max_steps"] == 100  # the settings given are not changed


def test_pipeline_from_flag_settings() -> None:
    flags = {"name": "p", "base_steps": 4, "branch_minutes": 1.5, "tune_steps": 2, "tune_lr": 5e-4, "per": "file"}
    flags |= {"method": "ties", "density": 0.5, "weights": None, "parallel": 2, "max_steps": 50}
    pipeline = Pipeline.from_settings(flags)
    assert pipeline.name == "p" and pipeline.per == "file" and pipeline.parallel == 2
    assert pipeline.base == StageOverrides(max_steps=4)
    assert pipeline.branch == StageOverrides(max_minutes=1.5)
    assert pipeline.tune == StageOverrides(max_steps=2, lr=5e-4)
    assert pipeline.merge == MergeRecipe("ties", None, density=0.5)
    assert pipeline.branch.apply(flags)["max_steps"] == 50  # no --branch-steps: --max-steps
    assert Pipeline.from_settings({"name": "q"}) == Pipeline("q")


def test_branches_and_tuning_continue_at_a_fraction_of_the_learning_rate() -> None:
    from core.config import preset

    assert continue_lr({"preset": "toy", "lr": 0.01}) == pytest.approx(CONTINUE_LR * 0.01)
    assert continue_lr({"preset": "small", "lr": None}) == pytest.approx(CONTINUE_LR * preset("small").train["lr"])
    with pytest.raises(SLMError, match="unknown preset"):
        continue_lr({"preset": "nope"})


# --- branch processes ------------------------------------------------------------------------------

SLM = ["python", "-m", "slm"]


def test_a_branch_process_starts_from_the_base_or_resumes(workspace) -> None:
    settings = {"preset": "toy", "lr": 0.001, "max_steps": 3, "threads": 8, "data": ["stories"], "name": "p"}
    settings |= {"tokenizer": "tok", "init_from": "elsewhere", "seed": None, "decode_errors": "replace"}
    base, branch = workspace.run_dir("p-base") / "final", Branch("p-stories", "stories")
    job = branch_job(workspace, branch, base, SLM, settings)
    start = [*SLM, "--workspace", str(workspace.root), "train", "--from", str(base), "--name", "p-stories"]
    handed = ["--preset=toy", "--decode-errors=replace", "--lr=0.001", "--max-steps=3"]
    assert job.argv == [*start, "--data", "stories", *handed]
    assert job.name == "p-stories"
    assert job.log == workspace.run_dir("p-stories") / "train.log"
    assert job.done == workspace.run_dir("p-stories") / "final" / "checkpoint.json"
    resumed = branch_job(workspace, branch, base, SLM, settings, resume=True)
    assert resumed.argv[: len(SLM) + 5] == [*SLM, "--workspace", str(workspace.root), "train", "--resume", "p-stories"]
    assert "--from" not in resumed.argv and resumed.argv[len(SLM) + 5 : len(SLM) + 7] == ["--data", "stories"]


def test_every_setting_handed_on_is_a_flag_of_slm_train(workspace) -> None:
    from core.config import TrainConfig
    from tui.cli.parser import build_parser

    defaults = vars(TrainConfig())
    for switched in (False, True):  # a switch is handed on as --FLAG when on
        settings = {key: defaults.get(key, "toy") for key in HANDED_ON} | {"keep_duplicates": switched}
        job = branch_job(workspace, Branch("x-a", "a"), Path("base"), SLM, settings)
        parsed = vars(build_parser().parse_args(job.argv[len(SLM) :]))
        assert {key: parsed[key] for key in HANDED_ON} == settings | {"keep_duplicates": switched or None}  # unset
        assert parsed["init_from"] == "base" and parsed["name"] == "x-a" and parsed["data"] == ["a"]


# A stand-in for `slm`: `train` on data "bad.txt" fails; otherwise it leaves a finished run.
FAKE_SLM = """
import json, pathlib, sys
argv = sys.argv[1:]
value = lambda flag: argv[argv.index(flag) + 1]
name = value("--resume") if "--resume" in argv else value("--name")
run = pathlib.Path(value("--workspace")) / "checkpoints" / name
if value("--data") == "bad.txt":
    sys.exit("error: the training split is too short")
(run / "final").mkdir(parents=True, exist_ok=True)
(run / "final" / "checkpoint.json").write_text("{}")
(run / "run.json").write_text(json.dumps(argv))
"""


def test_failed_branches_are_reported_and_only_they_run_again(workspace) -> None:
    (workspace.data_dir / "bad.txt").write_text("hi\n", encoding="utf-8")
    save_latest(workspace.run_dir("x-b.md"))  # stopped earlier: it resumes
    branches, base = plan_branches(workspace, "x"), workspace.run_dir("x-base") / "final"
    settings = {"preset": "toy", "device": "cpu", "threads": 2, "max_steps": 3}
    events: list = []
    run = [sys.executable, "-c", FAKE_SLM]
    with pytest.raises(SLMError) as caught:
        train_branches(workspace, base, branches, settings, run, on_event=events.append)
    assert str(caught.value) == (
        "1 of 3 branches failed: x-bad.txt: the training split is too short; "
        "the others are kept: fix the cause and run the same command again to train only the failed ones"
    )
    queued = [e for e in events if isinstance(e, BranchQueued)]
    assert [(e.name, e.data, e.resume) for e in queued] == [
        ("x-b.md", "b.md", True),
        ("x-bad.txt", "bad.txt", False),
        ("x-stories", "stories", False),
    ]
    assert "--resume" in json.loads((workspace.run_dir("x-b.md") / "run.json").read_text())
    assert "--max-steps=3" in json.loads((workspace.run_dir("x-stories") / "run.json").read_text())

    (workspace.data_dir / "bad.txt").unlink()
    events.clear()
    finals = train_branches(workspace, base, branches[:1] + branches[2:], settings, run, on_event=events.append)
    assert finals == [workspace.run_dir("x-b.md") / "final", workspace.run_dir("x-stories") / "final"]
    assert events == [StageSkipped("x-b.md", "branch"), StageSkipped("x-stories", "branch")]


# --- stages trained in this process ----------------------------------------------------------------


class FakeTrain:
    """A `train` callable that records what it was asked and ends as told."""

    def __init__(self, ws, reason: str = "finished") -> None:
        self.ws, self.reason, self.runs = ws, reason, []

    def __call__(self, stage: StageRun) -> RunEnded:
        self.runs.append(stage)
        if self.reason == "finished":
            finish(self.ws.run_dir(stage.name))
        return RunEnded(step=3, reason=self.reason)


def test_a_stage_trains_resumes_or_is_skipped_and_a_stop_ends_the_pipeline(workspace) -> None:
    train, events = FakeTrain(workspace), []
    final = train_stage(workspace, "base", "p-base", {"lr": 1.0}, train, events.append)
    assert final == workspace.run_dir("p-base") / "final"
    assert train.runs == [StageRun("p-base", False, {"lr": 1.0})] and events == []
    assert train_stage(workspace, "base", "p-base", {}, train, events.append) == final
    assert len(train.runs) == 1 and events == [StageSkipped("p-base", "base")]

    save_latest(workspace.run_dir("p-tuned"))
    stopped = FakeTrain(workspace, reason="stopped")
    with pytest.raises(SLMError) as caught:
        train_stage(workspace, "tune", "p-tuned", {}, stopped)
    assert str(caught.value) == "p-tuned stopped at step 3: run the same command again to resume the pipeline"
    assert stopped.runs[0].resume
    assert train_stage(workspace, "tune", "p-tuned", {}, FakeTrain(workspace, "early_stop")) == (
        workspace.run_dir("p-tuned") / "final"
    )


def test_a_resumed_pipeline_skips_what_finished_and_tunes_the_merge(workspace) -> None:
    for name in ("p-base", "p-b.md", "p-stories", "p-merged"):
        finish(workspace.run_dir(name))
    settings = {"name": "p", "preset": "toy", "lr": 0.01, "max_steps": 9, "tokenizer": "tok", "tune_steps": 2}
    train, events = FakeTrain(workspace), []
    tuned = run_pipeline(workspace, Pipeline.from_settings(settings), settings, SLM, train, events.append)
    assert tuned == workspace.run_dir("p-tuned") / "final"
    assert events == [
        StageSkipped("p-base", "base"),
        StageSkipped("p-b.md", "branch"),
        StageSkipped("p-stories", "branch"),
        StageSkipped("p-merged", "merge"),
    ]
    (tune,) = train.runs
    assert tune.name == "p-tuned" and not tune.resume
    assert tune.settings["init_from"] == str(workspace.run_dir("p-merged") / "final")
    assert tune.settings["tokenizer"] is None  # the merge's own
    assert tune.settings["max_steps"] == 2 and tune.settings["lr"] == pytest.approx(CONTINUE_LR * 0.01)


def test_a_pipeline_trains_its_base_unless_given_one_and_refuses_a_clash(workspace) -> None:
    (workspace.data_dir / "base").mkdir()
    (workspace.data_dir / "base" / "x.txt").write_text("Once upon a time.\n", encoding="utf-8")
    settings = {"name": "p", "preset": "toy", "init_from": "somewhere", "base_steps": 4, "tokenizer": "tok"}
    train, fresh = FakeTrain(workspace), {**settings, "init_from": None}
    with pytest.raises(SLMError, match="p-base would take the name of a pipeline stage"):
        run_pipeline(workspace, Pipeline.from_settings(fresh), fresh, SLM, train)
    (base,) = train.runs
    assert base.name == "p-base" and base.settings["max_steps"] == 4 and base.settings["init_from"] is None
    assert base.settings["tokenizer"] == "tok"
    with pytest.raises(SLMError, match="no checkpoint 'somewhere'"):
        run_pipeline(workspace, Pipeline.from_settings(settings), settings, SLM, train)
    assert len(train.runs) == 1
