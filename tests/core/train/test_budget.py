"""Runs limited by minutes: evaluations follow the clock, and the end's cost is kept inside the budget."""

from __future__ import annotations

from core.train.budget import EVALS, Budget
from core.train.events import EvalMetrics, Notice
from core.train.trainer import Trainer


def test_evaluations_are_spread_over_the_budget() -> None:
    budget = Budget(minutes=1.0, eval_tokens=65536)  # one every 7.5 s
    due = [t for t in range(61) if budget.eval_due(float(t))]
    assert due == [8, 15, 23, 30, 38, 45, 53, 60]
    assert Budget(None, 65536).eval_due(1e9) is False and Budget(None, 65536).fraction(1e9) == 0.0


def test_a_resumed_budget_keeps_its_spacing_and_the_end_is_reserved() -> None:
    budget = Budget(minutes=1.0, eval_tokens=60000, elapsed=20.0)
    assert not budget.eval_due(21.0) and budget.eval_due(22.5)
    budget.measured(tokens=6000, seconds=0.1)  # 60,000 tokens a second: the last evaluation takes 1 s
    budget.sample_s, budget.save_s = 0.5, 0.25
    assert budget.fraction(57.0) == (57.0 + 1.0 + 0.5 + 0.75) / 60  # stops once what is left is what the end takes
    assert Budget(minutes=1.0, eval_tokens=60000, reserve=False).fraction(30.0) == 0.5


def test_a_run_limited_by_minutes_evaluates_by_the_clock_and_at_its_end(workspace, tiny_configs) -> None:
    evals = []
    model, train = tiny_configs(max_steps=100000, max_minutes=0.05, eval_interval=100000, sample_interval=100000)
    end = Trainer(
        workspace, "timed", model, train, lambda e: evals.append(e) if isinstance(e, EvalMetrics) else None
    ).run()
    assert end.reason == "finished" and len(evals) >= EVALS  # none by steps: all by the clock, and the last
    assert evals[-1].step == end.step and evals[-1].elapsed_s <= 0.05 * 60


def test_the_evaluations_the_clock_adds_stay_within_their_share_of_the_budget() -> None:
    budget = Budget(minutes=1.0, eval_tokens=65536)
    assert budget.eval_tokens() == 65536 // 8  # nothing measured yet
    budget.measured(tokens=8192, seconds=0.5)  # 16,384 tokens a second
    assert budget.eval_tokens() == int(16384 * 0.05 * 60 / 8)  # 0.375 s each, 3 s for all eight
    assert Budget(1.0, eval_tokens=1024).eval_tokens() == 1024 and Budget(None, 65536).eval_tokens() == 65536
    budget.measured(tokens=8192, seconds=100.0)
    assert budget.eval_tokens() == 2048  # never fewer


def test_a_budget_that_ends_inside_the_warmup_is_told_once(workspace, tiny_configs) -> None:
    budget = Budget(minutes=3.0, eval_tokens=65536)
    warning = budget.short_of_warmup(step=3, elapsed=7.5, step_time=2.5, warmup_steps=100)
    assert warning is not None and "about 72 steps, fewer than the 100 warmup steps" in warning
    assert budget.short_of_warmup(3, 7.5, 2.5, warmup_steps=72) is None
    assert Budget(None, 65536).short_of_warmup(3, 7.5, 2.5, 100) is None
    for warmup, told in ((1_000_000, 1), (1, 0)):
        events: list = []
        model, train = tiny_configs(max_steps=20, max_minutes=0.05, warmup_steps=warmup, eval_interval=100)
        Trainer(workspace, f"w{warmup}", model, train, events.append).run()
        assert sum(isinstance(e, Notice) and "warmup steps" in e.message for e in events) == told
