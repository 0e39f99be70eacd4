"""A run limited by minutes: when it evaluates, and when it stops so that its end (the last evaluation, sample
and checkpoints) lands on the budget instead of after it.

The budget is the run's own clock (`elapsed`: steps, evaluations and saves; not preparation, not pauses).
Evaluations follow it: EVALS of them spread over the budget whatever the step rate, besides those every
`eval_interval` steps, each scoring only as many tokens as keep them all within CLOCK_SHARE of the budget. The
loop stops early by what the end will cost, from the evaluation speed, the sample and the saves measured so far.
"""

from __future__ import annotations

EVALS = 8  # validation points a budgeted run gets at the least, the last at its very end
CLOCK_SHARE = 0.05  # of the budget, at most, for the evaluations the clock adds
MIN_TOKENS = 2048  # the fewest validation tokens such an evaluation scores
SPEED_KNOWN_AT = 3  # the step whose time tells whether the budget outlasts the warmup (earlier ones warm up)


class Budget:
    """`reserve`: stop early by what the end will cost. Under torchrun it is off: each rank measures its own
    costs, and the ranks must agree on when to stop (they do on `elapsed`)."""

    def __init__(self, minutes: float | None, eval_tokens: int, elapsed: float = 0.0, reserve: bool = True) -> None:
        self.seconds = minutes * 60 if minutes else None
        self.full, self.reserve = eval_tokens, reserve
        self.every = self.seconds / EVALS if self.seconds else None
        self.next_eval = self._after(elapsed)
        self.eval_rate = 0.0  # validation tokens a second, measured on the last evaluation
        self.sample_s = self.save_s = 0.0  # what the last sample and the last checkpoint save took

    def _after(self, elapsed: float) -> float:
        """The first evaluation time past `elapsed` (a resumed run keeps the spacing)."""
        if self.every is None:
            return float("inf")
        return (int(elapsed // self.every) + 1) * self.every

    def fraction(self, elapsed: float) -> float:
        """How much of the budget is gone, counting what the end will take; 0 without a budget."""
        if self.seconds is None:
            return 0.0
        evaluation = self.full / self.eval_rate if self.eval_rate else 0.0
        end = evaluation + self.sample_s + 3 * self.save_s if self.reserve else 0.0  # best, latest and final
        return (elapsed + end) / self.seconds

    def eval_due(self, elapsed: float) -> bool:
        """Whether the clock calls for an evaluation now (each time is answered once)."""
        if elapsed < self.next_eval:
            return False
        self.next_eval = self._after(elapsed)
        return True

    def eval_tokens(self) -> int:
        """Validation tokens for an evaluation the clock added (the run's own, and the last one, score all)."""
        if self.seconds is None:
            return self.full
        fit = int(self.eval_rate * CLOCK_SHARE * self.seconds / EVALS) if self.eval_rate else self.full // EVALS
        return min(self.full, max(MIN_TOKENS, fit))

    def measured(self, tokens: int, seconds: float) -> None:
        """An evaluation scored `tokens` in `seconds`."""
        self.eval_rate = tokens / seconds if seconds > 0 else self.eval_rate

    def short_of_warmup(self, step: int, elapsed: float, step_time: float, warmup_steps: int) -> str | None:
        """A warning when the budget, at `step_time` seconds a step, ends before the learning-rate warmup does
        (a preset too big for the minutes on this machine: `small` on a CPU makes a few dozen steps in three)."""
        if self.seconds is None or step_time <= 0:
            return None
        steps = step + int(max(0.0, self.seconds - elapsed) / step_time)
        if steps >= warmup_steps:
            return None
        return (
            f"at {step_time:.2g} s a step, {self.seconds / 60:g} minutes make about {steps} steps, fewer than the "
            f"{warmup_steps} warmup steps: the model will barely learn (--preset auto sizes it to the minutes)"
        )
