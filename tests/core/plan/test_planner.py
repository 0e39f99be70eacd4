"""The planner: a depth that fits the budget at the measured speed, probes cached per machine, clear errors."""

from __future__ import annotations

import json
import math

import pytest

from core.config import ModelConfig, TrainConfig
from core.errors import SLMError
from core.plan.planner import make_plan
from core.plan.probe import Machine, Probe, ProbeOutOfMemory, measure, read_cache
from core.plan.rules import DROPOUT_FROM_EPOCHS, PROBE_DEPTHS, TOKENS_PER_PARAM
from core.plan.shape import compute_params, flops_per_token, model_shape

CPU = Machine("cpu", "auto", 2)


class FakeSpeed:
    """A machine doing `flops` FLOPs a second plus a fixed cost per token; counts what it was asked."""

    def __init__(self, flops: float = 2e10, too_big_from: int | None = None) -> None:
        self.flops, self.too_big_from, self.calls = flops, too_big_from, []

    def __call__(self, model: ModelConfig, train: TrainConfig, machine: Machine) -> float:
        self.calls.append(model.n_layer)
        if self.too_big_from and model.n_layer >= self.too_big_from:
            raise ProbeOutOfMemory("does not fit")
        return 1 / (2e-6 + flops_per_token(model) / self.flops)


def probe(tmp_path, speed: FakeSpeed) -> Probe:
    return Probe(CPU, tmp_path / "probe.json", measure=speed, waited=lambda: 0.0)  # a quiet machine


def test_a_bigger_budget_plans_a_bigger_model_near_the_fitted_tokens_per_parameter(tmp_path) -> None:
    speed = FakeSpeed()
    plans = [make_plan(50_000_000, probe(tmp_path, speed), minutes=m) for m in (0.2, 3, 30)]
    depths = [p.model.n_layer for p in plans]
    assert depths == sorted(depths) and depths[0] < depths[-1]
    for plan in plans:
        assert plan.model.n_layer in plan.probed  # the expected speed is measured at the chosen shape
        ratio = plan.tokens / compute_params(plan.model)
        if plan.model.n_layer > 1:  # the smallest model is the answer for any budget too short for it
            assert abs(math.log(ratio / TOKENS_PER_PARAM)) < math.log(4), ratio
        else:
            assert ratio < TOKENS_PER_PARAM
        TrainConfig(**plan.train)  # a valid recipe
        assert plan.train["max_minutes"] == pytest.approx(plan.seconds / 60 / 0.92, rel=0.01)
    assert set(PROBE_DEPTHS) <= set(speed.calls)


def test_a_token_budget_sets_the_steps_and_the_epochs_follow_the_corpus(tmp_path) -> None:
    plan = make_plan(200_000, probe(tmp_path, FakeSpeed()), max_tokens=2_000_000)
    rows, context = plan.train["batch_size"], plan.model.context
    assert plan.train["max_steps"] == 2_000_000 // (rows * context) and "max_minutes" not in plan.train
    roomy = make_plan(500_000_000, probe(tmp_path, FakeSpeed()), max_tokens=2_000_000)
    assert plan.epochs == pytest.approx(2_000_000 / (200_000 * 0.9 / 4), rel=0.01) and roomy.epochs < 0.1
    assert roomy.model.vocab_size > plan.model.vocab_size  # a big corpus gets a bigger vocabulary
    assert plan.epochs > 20 and plan.model.dropout == 0.1 and roomy.model.dropout == 0.0  # many epochs: dropout
    assert "dropout 0.1" in dict((s, v) for s, v, _ in plan.reasons)["regularisation"]
    train_tokens = 200_000 * 0.9 / 4
    for epochs, dropout in ((DROPOUT_FROM_EPOCHS - 0.5, 0.0), (DROPOUT_FROM_EPOCHS + 0.5, 0.1)):  # the threshold
        near = make_plan(200_000, probe(tmp_path, FakeSpeed()), max_tokens=int(epochs * train_tokens))
        assert near.model.dropout == dropout
    assert any(value.startswith(f"{plan.tokens:,} ({plan.epochs:.1f} epochs)") for _, value, _ in plan.reasons)


def test_the_second_plan_measures_nothing_and_a_damaged_cache_is_measured_again(tmp_path) -> None:
    speed = FakeSpeed()
    first = make_plan(1_000_000, probe(tmp_path, speed), minutes=1)
    asked = len(speed.calls)
    again = probe(tmp_path, speed)
    assert make_plan(1_000_000, again, minutes=1).model == first.model
    assert len(speed.calls) == asked and again.measured == 0
    (tmp_path / "probe.json").write_text("{not json", encoding="utf-8")
    assert make_plan(1_000_000, probe(tmp_path, speed), minutes=1).model == first.model
    assert len(speed.calls) > asked and read_cache(tmp_path / "probe.json")  # measured again, written back


def test_a_speed_measured_on_a_busy_machine_serves_its_plan_and_is_not_cached(tmp_path) -> None:
    clock = iter(range(0, 10**6, 10))  # each reading: 10 s more waiting for a CPU than the probe took
    busy = Probe(CPU, tmp_path / "probe.json", measure=FakeSpeed(), waited=lambda: float(next(clock)))
    plan = make_plan(1_000_000, busy, minutes=1)
    assert busy.measured and busy.busy and not read_cache(tmp_path / "probe.json")
    assert "not kept: plan again when quiet" in dict((s, w) for s, _, w in plan.reasons)["speed"]
    quiet = Probe(CPU, tmp_path / "probe.json", measure=FakeSpeed(), waited=lambda: 0.0)
    assert make_plan(1_000_000, quiet, minutes=1).model == plan.model and quiet.measured and not quiet.busy
    assert len(read_cache(tmp_path / "probe.json")) == quiet.measured  # measured again, and kept this time


def test_the_cache_keeps_only_positive_finite_speeds(tmp_path) -> None:
    path = tmp_path / "probe.json"
    path.write_text(json.dumps({"a": 10.0, "b": -1, "c": True, "d": "9", "e": 1e400, "f": 3}), encoding="utf-8")
    assert read_cache(path) == {"a": 10.0, "f": 3.0}
    path.write_text("[1, 2]", encoding="utf-8")
    assert read_cache(path) == {}


def test_a_shape_that_does_not_fit_caps_the_depth(tmp_path) -> None:
    plan = make_plan(1_000_000_000, probe(tmp_path, FakeSpeed(flops=1e15, too_big_from=5)), minutes=60)
    assert plan.model.n_layer == 4
    with pytest.raises(SLMError, match=r"smallest model does not fit: .* use --device cpu"):
        make_plan(1_000_000, probe(tmp_path, FakeSpeed(too_big_from=1)), minutes=1)


def test_no_budget_or_too_small_a_budget_is_one_line(tmp_path) -> None:
    with pytest.raises(SLMError, match="--max-minutes M or --max-tokens N"):
        make_plan(1_000_000, probe(tmp_path, FakeSpeed()))
    with pytest.raises(SLMError, match=r"give at least .* minutes"):
        make_plan(1_000_000, probe(tmp_path, FakeSpeed(flops=1e7)), minutes=0.01)
    with pytest.raises(SLMError, match="--max-tokens 20480"):
        make_plan(1_000_000, probe(tmp_path, FakeSpeed()), max_tokens=1000)


def test_a_real_probe_measures_a_positive_speed() -> None:
    model = model_shape(1, 256, context=16)
    speed = measure(model, TrainConfig(batch_size=2), Machine("cpu", "auto"))
    assert math.isfinite(speed) and speed > 0
    assert CPU.key(model, 2) != CPU.key(model_shape(2, 256, context=16), 2)
