from __future__ import annotations

import itertools

import pytest

from core.config import TrainConfig
from core.optim import lr_factor


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_lr_schedule_warms_up_and_decays(schedule) -> None:
    cfg = TrainConfig(warmup_steps=10, schedule=schedule, min_lr_ratio=0.1, max_steps=100)
    assert lr_factor(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_factor(20, 0.2, cfg) == pytest.approx(1.0, abs=0.1)
    assert lr_factor(99, 1.0, cfg) == pytest.approx(0.1)
    values = [lr_factor(s, s / 100, cfg) for s in range(10, 100)]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(values))
