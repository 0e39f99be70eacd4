from __future__ import annotations

import json

from core.train.events import EvalMetrics, RunEnded, RunStarted, StepMetrics, event_to_dict
from core.train.monitor import MetricsTail, RunHistory, downsample


def step(n: int, loss: float = 1.0) -> StepMetrics:
    return StepMetrics(n, loss, 1e-3, n * 10, 100.0, n * 0.1, n / 10, 1.0)


def test_history_folds_events_into_series() -> None:
    h = RunHistory()
    h.apply(RunStarted("r", "/x", 1000, "cpu", "fp32", 10, 100, 10, 64))
    for n in range(1, 6):
        h.apply(step(n, 5.0 - n))
    h.apply(EvalMetrics(5, 2.0, 7.4, 1.5, 2.0))
    h.apply(RunEnded(5, "finished", 2.0))
    snap = h.snapshot()
    assert snap.steps == [1, 2, 3, 4, 5] and snap.losses[-1] == 0.0
    assert snap.val_steps == [5] and snap.val_bpb == [1.5]
    assert snap.state == "ended" and snap.best_val_loss == 2.0
    assert any("finished" in line for line in snap.log)
    h.apply(step(6))
    assert snap.steps == [1, 2, 3, 4, 5]  # a snapshot does not change afterwards


def test_a_resumed_run_replaces_the_points_after_its_checkpoint() -> None:
    h = RunHistory()
    for n in range(1, 9):
        h.apply(step(n))
    h.apply(RunStarted("r", "/x", 1000, "cpu", "fp32", 10, 100, 10, 64, start_step=5))
    h.apply(step(6, 9.0))
    assert h.steps == [1, 2, 3, 4, 5, 6] and h.losses[-1] == 9.0


def test_tail_reads_only_new_complete_lines(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(path)
    assert tail.read() == []
    line = json.dumps(event_to_dict(step(1))) + "\n"
    path.write_text(line + line[:20])
    assert [e.step for e in tail.read()] == [1]
    with open(path, "a") as f:
        f.write(line[20:] + "not json\n")
    assert [e.step for e in tail.read()] == [1]
    assert tail.read() == []
    path.write_text(json.dumps(event_to_dict(step(7))) + "\n")  # rewritten shorter
    assert [e.step for e in tail.read()] == [7]


def test_tail_skips_damaged_lines_and_keeps_reading(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    good = event_to_dict(step(1))
    damaged = [
        [1, 2, 3],  # not an object
        "StepMetrics",
        {**good, "loss": "low"},  # a string where a number belongs
        {**good, "step": 1.5},
        {**good, "step": True},
        {**good, "loss": None},
        {key: value for key, value in good.items() if key != "loss"},  # a field missing
        {"event": "RunEnded", "step": 3, "reason": ["x"]},
    ]
    lines = [json.dumps(d) for d in damaged] + ["[" * 5000 + "]" * 5000, json.dumps(event_to_dict(step(2)))]
    path.write_text("".join(line + "\n" for line in lines))
    events = MetricsTail(path).read()
    assert [type(e).__name__ for e in events] == ["StepMetrics"] and events[0].step == 2
    history = RunHistory()
    for event in events:
        history.apply(event)
    assert history.steps == [2]


def test_downsample_keeps_shape_and_last_point() -> None:
    xs = list(range(1, 1001))
    ys = [float(x) for x in xs]
    dx, dy = downsample(xs, ys, 100)
    assert len(dx) == 100 and dx[-1] == 1000 and dy[-1] == 1000.0
    assert dx == sorted(dx) and dy == sorted(dy)
    assert downsample(xs[:50], ys[:50], 100) == (xs[:50], ys[:50])
