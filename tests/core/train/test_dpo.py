"""Preference tuning from ratings: the held-out margin grows."""

from __future__ import annotations

import json

import pytest

from core.chat.feedback import FeedbackDB, Rating
from core.checkpoint import load_checkpoint
from core.errors import SLMError
from core.train.dpo import DPOTrainer
from core.train.events import PreferenceMetrics
from core.train.trainer import Trainer
from tests.conftest import OBJECTS, SUBJECTS

pytestmark = pytest.mark.usefixtures("one_thread")


def rate_pairs(workspace, n: int) -> None:
    """Rated answers to n questions: a polite refusal (unlike the training text) beats a likely sentence."""
    ratings = []
    for i in range(n):
        conversation = [{"role": "user", "content": f"Who sees {OBJECTS[i % len(OBJECTS)]}?"}]
        likely = f"{SUBJECTS[i % len(SUBJECTS)].capitalize()} sees {OBJECTS[i % len(OBJECTS)]}."
        ratings += [Rating(conversation, "No idea, sorry.", 1, "base"), Rating(conversation, likely, -1, "base")]
    FeedbackDB.for_workspace(workspace).add(*ratings)


def test_dpo_grows_the_held_out_margin(workspace, tiny_configs) -> None:
    model, base_train = tiny_configs(max_steps=2)
    Trainer(workspace, "base", model, base_train).run()
    _, train = tiny_configs(init_from="base/final", tokenizer=None, data=[])
    with pytest.raises(SLMError, match="at least 2 different prompts"):
        DPOTrainer(workspace, "none", model, train).run()

    rate_pairs(workspace, 12)
    _, train = tiny_configs(
        init_from="base/final", tokenizer=None, data=[], lr=3e-3, warmup_steps=2, max_steps=20, eval_interval=10,
        val_fraction=0.25,
    )  # fmt: skip
    events = []
    DPOTrainer(workspace, "dpo", model, train, events.append, beta=0.1).run()
    prefs = [e for e in events if isinstance(e, PreferenceMetrics)]
    assert [e.step for e in prefs] == [0, 10, 20]
    before, after = prefs[0], prefs[-1]
    assert before.margin < 0 and before.win_rate == 0.0  # the base prefers the sentence it was trained on
    assert after.margin > 0 and after.win_rate == 1.0
    assert before.pairs == after.pairs >= 1

    run = json.loads((workspace.run_dir("dpo") / "run.json").read_text())
    assert run["objective"] == "dpo" and run["dpo"]["beta"] == 0.1
    assert run["dpo"]["before"]["margin"] == pytest.approx(before.margin)
    final = load_checkpoint(workspace.run_dir("dpo") / "final")
    assert final.meta["metrics"]["dpo_margin"] == pytest.approx(after.margin)
    logged = [json.loads(x) for x in (workspace.run_dir("dpo") / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged if x["event"] == "PreferenceMetrics"] == [0, 10, 20]
