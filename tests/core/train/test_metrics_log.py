"""A run's metrics on disk: metrics.jsonl always, TensorBoard scalars when it can be imported (a fake here)."""

from __future__ import annotations

import errno
import json
import sys
import types
from typing import Any

import pytest

from core.errors import SLMError
from core.train.events import (
    Control,
    EvalMetrics,
    PreferenceMetrics,
    Progress,
    RunEnded,
    RunStarted,
    StepMetrics,
    event_from_dict,
)
from core.train.metrics_log import MetricsLog, scalars
from core.train.objectives import resume_run
from core.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeWriter:
    """Records what a `SummaryWriter` is given."""

    made: list[FakeWriter] = []

    def __init__(self, log_dir: str, purge_step: int | None = None, flush_secs: int = 120) -> None:
        self.log_dir = log_dir
        self.purge_step = purge_step
        self.scalars: list[tuple[str, float, int]] = []
        self.closed = False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, global_step: int | None = None) -> None:
        self.scalars.append((tag, value, global_step))

    def close(self) -> None:
        self.closed = True


class FailingWriter(FakeWriter):
    def add_scalar(self, tag: str, value: float, global_step: int | None = None) -> None:
        super().add_scalar(tag, value, global_step)
        raise RuntimeError("event file gone")


@pytest.fixture(autouse=True)
def _tensorboard_on(monkeypatch) -> None:
    monkeypatch.delenv("SLM_TENSORBOARD", raising=False)
    FakeWriter.made = []


def fake_tensorboard(monkeypatch, writer: type = FakeWriter) -> None:
    module = types.ModuleType("torch.utils.tensorboard")
    module.SummaryWriter = writer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)


def tiny_run(workspace, tiny_configs, run: str = "run") -> list[Any]:
    model, train = tiny_configs(max_steps=8, eval_interval=4, sample_interval=100, checkpoint_interval=100)
    events: list[Any] = []
    end = Trainer(workspace, run, model, train, events.append).run()
    assert end.reason == "finished" and end.step == 8
    return events


def logged(workspace, run: str = "run") -> list[Any]:
    lines = (workspace.run_dir(run) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [event_from_dict(json.loads(line)) for line in lines]


def logged_types(events: list[Any]) -> list[type]:
    """The types of the events metrics.jsonl keeps: all but progress, from the run's start (notices before it
    come while there is no run folder yet)."""
    started = next(i for i, e in enumerate(events) if isinstance(e, RunStarted))
    return [type(e) for e in events[started:] if not isinstance(e, Progress)]


def test_without_tensorboard_a_run_writes_metrics_jsonl_and_no_tensorboard_folder(
    workspace, tiny_configs, monkeypatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    events = tiny_run(workspace, tiny_configs)
    assert not (workspace.run_dir("run") / "tensorboard").exists()
    rebuilt = logged(workspace)
    assert [e.step for e in rebuilt if isinstance(e, StepMetrics)] == list(range(1, 9))
    assert isinstance(rebuilt[-1], RunEnded)
    assert not any(isinstance(e, Progress) for e in rebuilt) and any(isinstance(e, Progress) for e in events)
    assert [type(e) for e in rebuilt] == logged_types(events)


def test_scalars_match_the_runs_metrics_and_the_writer_is_closed(workspace, tiny_configs, monkeypatch) -> None:
    fake_tensorboard(monkeypatch)
    events = tiny_run(workspace, tiny_configs)
    (writer,) = FakeWriter.made
    assert writer.log_dir == str(workspace.run_dir("run") / "tensorboard") and writer.purge_step == 0
    expected = []
    for e in events:
        if isinstance(e, StepMetrics):
            expected += [(f"train/{k}", v, e.step) for k, v in (("loss", e.loss), ("lr", e.lr))]
            expected += [("train/grad_norm", e.grad_norm, e.step), ("train/tokens_per_s", e.tokens_per_s, e.step)]
        elif isinstance(e, EvalMetrics):
            expected += [("val/loss", e.val_loss, e.step), ("val/bits_per_byte", e.val_bpb, e.step)]
            expected += [("val/perplexity", e.val_ppl, e.step)]
            expected += [(f"val/bits_per_byte/{name}", bpb, e.step) for name, bpb in e.sources.items()]
    assert sum(tag == "train/loss" for tag, _, _ in expected) == 8
    assert sum(tag == "val/bits_per_byte/b.md" for tag, _, _ in expected) >= 2  # the fixture's two sources
    assert sum(tag == "val/loss" for tag, _, _ in expected) >= 2
    assert writer.scalars == expected
    assert writer.closed
    assert [e.step for e in logged(workspace) if isinstance(e, StepMetrics)] == list(range(1, 9))


def test_a_resumed_run_purges_what_it_logs_again(workspace, tiny_configs, monkeypatch) -> None:
    fake_tensorboard(monkeypatch)
    model, train = tiny_configs(max_steps=8, eval_interval=100, sample_interval=100, checkpoint_interval=100)
    control = Control()

    def stop_at_3(event: Any) -> None:
        if isinstance(event, StepMetrics) and event.step == 3:
            control.stop()

    assert Trainer(workspace, "run", model, train, stop_at_3, control).run().step == 3
    assert resume_run(workspace, "run").run().step == 8
    first, second = FakeWriter.made
    assert first.purge_step == 0 and second.purge_step == 3
    assert [s for tag, _, s in second.scalars if tag == "train/loss"] == [4, 5, 6, 7, 8]
    assert first.closed and second.closed


def test_a_failing_writer_does_not_stop_training(workspace, tiny_configs, monkeypatch) -> None:
    fake_tensorboard(monkeypatch, FailingWriter)
    events = tiny_run(workspace, tiny_configs)
    (writer,) = FakeWriter.made
    assert len(writer.scalars) == 1 and writer.closed  # dropped after its first failure, and closed
    assert [type(e) for e in logged(workspace)] == logged_types(events)


def test_slm_tensorboard_0_turns_it_off(workspace, tiny_configs, monkeypatch) -> None:
    fake_tensorboard(monkeypatch)
    monkeypatch.setenv("SLM_TENSORBOARD", "0")
    tiny_run(workspace, tiny_configs)
    assert FakeWriter.made == []
    assert (workspace.run_dir("run") / "metrics.jsonl").exists()


@pytest.mark.parametrize("broken", ["import", "writer"])
def test_a_broken_tensorboard_is_done_without(tmp_path, monkeypatch, broken: str) -> None:
    module = types.ModuleType("torch.utils.tensorboard")

    def fail(*args: Any, **kwargs: Any) -> None:
        raise ValueError("protobuf mismatch")

    if broken == "import":
        module.__getattr__ = lambda name: fail()  # type: ignore[attr-defined]
    else:
        module.SummaryWriter = fail  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", module)
    with MetricsLog(tmp_path) as log:
        log.write(StepMetrics(1, 2.0, 1e-3, 128, 10.0, 1.0, 0.1, 9.0))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1


def test_preference_metrics_are_scalars_too() -> None:
    assert scalars(PreferenceMetrics(step=10, margin=0.5, win_rate=0.75, pairs=4)) == {
        "val/dpo_margin": 0.5,
        "val/dpo_win_rate": 0.75,
    }
    assert scalars(Progress("scan", 1, 2)) == {}


def test_a_full_disk_is_a_one_line_error(tmp_path) -> None:
    class FullFile:
        def write(self, text: str) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            pass

    log = MetricsLog(tmp_path)
    log._file.close()
    log._file = FullFile()  # type: ignore[assignment]
    with pytest.raises(SLMError, match=r"disk full while writing .*metrics\.jsonl"):
        log.write(RunEnded(step=1, reason="finished"))
    log.close()
