"""Supervised fine-tuning: the loss mask, and a tiny model that learns to answer like its conversations."""

from __future__ import annotations

import json

import pytest
import torch

from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.checkpoint import load_checkpoint
from core.errors import SLMError
from core.tokenizer.bpe import Tokenizer
from core.tokenizer.chat_template import END, is_chat_model, render_chat, render_chat_masked
from core.train.events import SampleText
from core.train.objectives import resume_run
from core.train.sft import SFTTrainer, pad_rows
from core.train.trainer import Trainer

QA = [
    ("Who sees the moon?", "The cat sees the moon."),
    ("Who loves the sea?", "A dog loves the sea."),
    ("Who finds an apple?", "The queen finds a red apple."),
    ("Who hears a song?", "My friend hears a song."),
    ("Who keeps the garden?", "The old king keeps the garden."),
    ("Who leaves the road?", "A small bird leaves the road."),
    ("Who follows the river?", "The cat follows the river."),
]


pytestmark = pytest.mark.usefixtures("one_thread")


def write_conversations(workspace, name: str = "chat.jsonl") -> None:
    with open(workspace.data_dir / name, "w", encoding="utf-8") as f:
        for q, a in QA:
            messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": messages}) + "\n")


def test_targets_are_the_assistant_tokens_only(tokenizer_file) -> None:
    tok = Tokenizer.load(tokenizer_file)
    ids, mask = render_chat_masked([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}], tok)
    x, y = pad_rows([(ids, mask)], len(ids) + 3, tok.eot_id)
    assert x[0, : len(ids) - 1].tolist() == ids[:-1] and x[0, len(ids) - 1 :].eq(tok.eot_id).all()
    scored = [t for t in y[0].tolist() if t != -1]
    assert tok.decode(scored) == "Yo" + END


def test_sft_makes_greedy_answers_reproduce_the_trained_answers(workspace, tiny_configs) -> None:
    model, base_train = tiny_configs(max_steps=2)
    Trainer(workspace, "base", model, base_train).run()
    write_conversations(workspace)
    _, train = tiny_configs(
        init_from="base/final", tokenizer=None, data=["chat.jsonl"], batch_size=8, lr=1e-2, warmup_steps=5,
        max_steps=90, eval_interval=45, sample_interval=90, checkpoint_interval=1000,
    )  # fmt: skip
    events = []
    trainer = SFTTrainer(workspace, "sft", model, train, events.append)
    end = trainer.run()
    assert end.reason == "finished"
    held_out = {p[-1]["content"] for p in trainer.data.val_prompts}
    assert len(held_out) == 1
    assert any(isinstance(e, SampleText) and "→" in e.text for e in events)

    ckpt = workspace.run_dir("sft") / "final"
    generator = Generator.from_checkpoint(ckpt, "cpu")
    assert is_chat_model(generator.tokenizer, generator.checkpoint.meta)
    greedy = SamplingSettings(temperature=0, max_tokens=20, stop=[END])
    for question, answer in QA:
        if question not in held_out:
            prompt = render_chat([{"role": "user", "content": question}], generator.tokenizer)
            assert generator.generate(prompt, greedy) == answer

    run = json.loads((workspace.run_dir("sft") / "run.json").read_text())
    assert run["objective"] == "sft" and run["data"]["train_conversations"] == len(QA) - 1
    assert run["lineage"][0]["path"].endswith("base/final")
    assert isinstance(resume_run(workspace, "sft", {"max_steps": 121}), SFTTrainer)


def test_sft_needs_a_checkpoint_to_start_from(workspace, tiny_configs, tmp_path) -> None:
    write_conversations(workspace)
    model, train = tiny_configs(data=["chat.jsonl"])
    with pytest.raises(SLMError, match="give --from CKPT"):
        SFTTrainer(workspace, "nofrom", model, train).run()
    assert not workspace.run_dir("nofrom").exists()


def test_stopped_sft_resumes_to_the_same_weights(workspace, tiny_configs) -> None:
    from core.train.events import Control, StepMetrics

    model, base_train = tiny_configs(max_steps=2)
    Trainer(workspace, "base", model, base_train).run()
    write_conversations(workspace)
    _, train = tiny_configs(init_from="base/final", tokenizer=None, data=["chat.jsonl"], max_steps=8, eval_interval=4)
    SFTTrainer(workspace, "straight", model, train).run()
    control = Control()

    def stop_at_3(event) -> None:
        if isinstance(event, StepMetrics) and event.step == 3:
            control.stop()

    assert SFTTrainer(workspace, "stopped", model, train, stop_at_3, control).run().reason == "stopped"
    assert resume_run(workspace, "stopped").run().step == 8
    a = load_checkpoint(workspace.run_dir("straight") / "final").state
    b = load_checkpoint(workspace.run_dir("stopped") / "final").state
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(workspace.run_dir("stopped") / "final").meta["chat"] is True
