"""A run never applies or saves nan or inf, always has a way to go on, and fails in one line when memory runs out."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from core.checkpoint import all_finite, load_checkpoint
from core.errors import SLMError
from core.model import GPT
from core.train import failures
from core.train import trainer as trainer_module
from core.train.events import Notice, RunStarted, StepMetrics
from core.train.objectives import resume_run
from core.train.trainer import Trainer


def saved_tensors(run_dir):
    """Every tensor of every checkpoint in a run folder, by file."""
    return {str(f): load_file(f) for f in sorted(run_dir.glob("*/*.safetensors"))}


def assert_all_finite(run_dir) -> None:
    files = saved_tensors(run_dir)
    assert files
    for name, tensors in files.items():
        assert all_finite(tensors.values()), f"{name} holds nan or inf"


def inf_gradient_at(monkeypatch, steps: set[int], trainer_of) -> None:
    """Models the trainer builds get an inf embedding gradient on the steps in `steps` (counted from 1); the loss
    stays finite, so only a check of the gradients can see it."""

    def poisoned(config):
        model = GPT(config)
        model.embed.weight.register_hook(
            lambda g: torch.full_like(g, math.inf) if trainer_of().step + 1 in steps else g
        )
        return model

    monkeypatch.setattr(trainer_module, "GPT", poisoned)


def steps_logged(run_dir) -> list[int]:
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [x["step"] for x in lines if x["event"] == "StepMetrics"]


def test_an_inf_gradient_is_never_applied_nor_saved_and_the_named_checkpoint_resumes(
    workspace, tiny_configs, monkeypatch, one_thread
) -> None:
    model, train = tiny_configs(max_steps=12, checkpoint_interval=3, eval_interval=4)
    trainer = Trainer(workspace, "inf", model, train)
    inf_gradient_at(monkeypatch, {8}, lambda: trainer)
    with pytest.raises(SLMError) as failure:
        trainer.run()
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("the gradient norm became inf at step 8 (not applied): lower --lr;")
    assert "the last good checkpoint is latest (step 6, train loss " in message and "--resume inf" in message
    run_dir = workspace.run_dir("inf")
    assert_all_finite(run_dir)
    assert all_finite(trainer.model.parameters())  # the bad step was not applied in memory either
    adam = trainer.optimizers[0]
    assert {int(s["step"]) for s in adam.state.values()} == {7}
    last = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "RunEnded" and last["reason"] == "nan"

    monkeypatch.undo()
    events = []
    end = resume_run(workspace, "inf", on_event=events.append).run()
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == 6
    assert end.reason == "finished" and end.step == 12
    assert_all_finite(run_dir)
    assert steps_logged(run_dir) == list(range(1, 13))


def test_a_huge_learning_rate_stops_with_every_checkpoint_finite(workspace, tiny_configs, one_thread) -> None:
    """The report's repro (`--preset toy --lr 1e2 --checkpoint-interval 1`) on a model of toy's shape: the gradients
    turn nan while the loss is still finite; the run stops there and `latest`, the step before, is finite."""
    model, train = tiny_configs(lr=1e2, checkpoint_interval=1, max_steps=50, eval_interval=1000, sample_interval=1000)
    model = replace(model, n_layer=4, n_head=4, n_kv_head=4, n_embd=128, tie_embeddings=False)
    with pytest.raises(SLMError, match=r"the gradient norm became nan at step \d+ \(not applied\)") as failure:
        Trainer(workspace, "huge", model, train).run()
    run_dir = workspace.run_dir("huge")
    assert_all_finite(run_dir)
    latest = load_checkpoint(run_dir / "latest", with_trainer=True)
    assert f"at step {latest.step + 1} " in str(failure.value)
    assert f"the last good checkpoint is latest (step {latest.step}," in str(failure.value)
    resumed = resume_run(workspace, "huge", {"lr": 1e-3})
    resumed.prepare()
    assert resumed.step == latest.step and all_finite(resumed.model.parameters())


def test_weights_with_nan_are_refused_not_saved(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=4)
    trainer = Trainer(workspace, "refused", model, train)
    trainer.prepare()
    trainer.save("latest")
    with torch.no_grad():
        trainer.model.blocks[0].mlp.down.weight[0, 0] = math.nan
    trainer.step = 3
    for kind in ("latest", "best"):
        with pytest.raises(SLMError, match=f"the weights hold nan or inf at step 3 \\({kind} not saved\\)"):
            trainer.save(kind)
    assert load_checkpoint(workspace.run_dir("refused") / "latest").step == 0
    assert not (workspace.run_dir("refused") / "best").exists()
    assert_all_finite(workspace.run_dir("refused"))


def test_a_loss_scaler_skips_inf_gradients_itself(workspace, tiny_configs, monkeypatch, one_thread) -> None:
    """fp16's GradScaler (CUDA only; its CPU twin here) meets inf gradients as a matter of course: it skips the
    step and lowers its scale, and the run goes on without an error."""
    model, train = tiny_configs(max_steps=8, checkpoint_interval=4)
    trainer = Trainer(workspace, "scaled", model, train)
    inf_gradient_at(monkeypatch, {3}, lambda: trainer)
    build = Trainer._build_model

    def with_scaler(self):
        build(self)
        self.scaler = torch.amp.GradScaler("cpu")

    monkeypatch.setattr(Trainer, "_build_model", with_scaler)
    end = trainer.run()
    assert end.reason == "finished" and end.step == 8
    assert {int(s["step"]) for s in trainer.optimizers[0].state.values()} == {7}  # one step skipped
    assert_all_finite(workspace.run_dir("scaled"))
    assert failures.not_finite(1.0, math.inf, scaled=True) is None
    assert failures.not_finite(math.nan, 1.0, scaled=True) == "the loss became nan"
    assert failures.not_finite(1.0, math.nan, scaled=False) == "the gradient norm became nan"


def test_a_run_that_died_before_its_first_checkpoint_starts_over(workspace, tiny_configs, one_thread) -> None:
    model, train = tiny_configs(max_steps=10, lr=1e-2, seed=7, eval_interval=4, checkpoint_interval=500)
    Trainer(workspace, "straight", model, train).run()

    def killed_at_6(event):
        if isinstance(event, StepMetrics) and event.step == 6:
            raise KeyboardInterrupt  # a kill, an out-of-memory or a full disk before the first `latest`

    with pytest.raises(KeyboardInterrupt):
        Trainer(workspace, "early", model, train, killed_at_6).run()
    run_dir = workspace.run_dir("early")
    assert not (run_dir / "latest").exists() and (run_dir / "best").exists()
    with pytest.raises(SLMError) as taken:
        Trainer(workspace, "early", model, train).run()
    assert str(taken.value) == (
        "run 'early' has no checkpoint to resume from: resume it with --resume early (it starts over) "
        "or choose another --name"
    )

    events = []
    end = resume_run(workspace, "early", on_event=events.append).run()
    notice = next(e for e in events if isinstance(e, Notice) and "starts over" in e.message)
    assert notice.message == (
        "run early saved no checkpoint to resume from: it starts over from step 0 with its recorded settings "
        "(its metrics.jsonl is replaced; its best checkpoint is kept as early/best-before-restart)"
    )
    assert next(e for e in events if isinstance(e, RunStarted)).start_step == 0
    assert end.reason == "finished" and end.step == 10
    assert load_checkpoint(run_dir / "best-before-restart").step == 4  # the failed attempt's best is kept
    a = load_file(workspace.run_dir("straight") / "final" / "model.safetensors")
    b = load_file(run_dir / "final" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the recorded settings (lr, seed...), bit for bit
    assert steps_logged(run_dir) == list(range(1, 11))


def test_nan_before_the_first_checkpoint_says_none_was_saved(workspace, tiny_configs, monkeypatch) -> None:
    model, train = tiny_configs(max_steps=8, checkpoint_interval=500, eval_interval=500)
    trainer = Trainer(workspace, "nothing", model, train)
    inf_gradient_at(monkeypatch, {2}, lambda: trainer)
    with pytest.raises(SLMError, match="no checkpoint to resume from was saved yet: --resume nothing starts it over"):
        trainer.run()
    assert not list(workspace.run_dir("nothing").glob("*/model.safetensors"))
    monkeypatch.undo()
    assert resume_run(workspace, "nothing").run().step == 8


def test_out_of_memory_while_building_the_model_is_one_line(workspace, tiny_configs, monkeypatch) -> None:
    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model, train = tiny_configs(max_steps=3, grad_checkpoint=True)
    for target, name in ((trainer_module, "GPT"), (GPT, "to")):
        with monkeypatch.context() as patch:
            patch.setattr(target, name, no_memory)
            with pytest.raises(SLMError) as failure:
                Trainer(workspace, "big", model, train).run()
        message = str(failure.value)
        assert message == "out of memory building the model: pick a smaller --preset or shard it (--nproc N --shard)"
        assert not (workspace.run_dir("big") / "run.json").exists()  # nothing to clean up: the name stays free


def test_out_of_memory_advice_names_only_what_would_help(workspace, tiny_configs, monkeypatch) -> None:
    model, train = tiny_configs(max_steps=3, grad_checkpoint=True)
    trainer = Trainer(workspace, "oom", model, train)
    trainer.prepare()

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_model", no_memory)
    with pytest.raises(SLMError) as failure:
        trainer._step()
    assert str(failure.value) == (
        "out of memory at batch size 4: lower --batch-size (raise --grad-accum to keep the tokens per step), "
        "lower --context, or pick a smaller --preset"
    )
    _, tuned = tiny_configs(batch_size=1, init_from="base/final")
    assert failures.out_of_memory_advice(tuned, "sft") == (
        "out of memory at batch size 1: start from a smaller --from checkpoint"
    )


def test_a_tuning_run_starts_over_with_its_recorded_dialog(workspace, tiny_configs, one_thread) -> None:
    from core.data.conversations import DialogFormat
    from core.train.sft import SFTTrainer

    model, base_train = tiny_configs(max_steps=2)
    Trainer(workspace, "base", model, base_train).run()
    dialogs = [f"Q: Who sees the moon {i}?\nA: The cat sees the moon {i}.\n" for i in range(12)]
    (workspace.data_dir / "talk.txt").write_text("\n".join(dialogs), encoding="utf-8")
    _, train = tiny_configs(init_from="base/final", tokenizer=None, data=["talk.txt"], max_steps=6, eval_interval=3)

    def killed_at_2(event):
        if isinstance(event, StepMetrics) and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SFTTrainer(workspace, "tune", model, train, killed_at_2, dialog=DialogFormat("Q:", "A:")).run()
    end = resume_run(workspace, "tune").run()
    assert end.reason == "finished" and end.step == 6
    run = json.loads((workspace.run_dir("tune") / "run.json").read_text())
    assert run["objective"] == "sft" and run["dialog"]["user"] == "Q:" and run["data"]["train_conversations"] > 0


@pytest.mark.parametrize("damage", [{"model": None}, {"train": [1]}, {"objective": ["lm"]}])
def test_a_damaged_run_json_is_one_line_on_resume(workspace, tiny_configs, damage) -> None:
    model, train = tiny_configs(max_steps=6)
    Trainer(workspace, "hurt", model, train).run()
    path = workspace.run_dir("hurt") / "run.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **damage}))
    with pytest.raises(SLMError, match=r"run\.json is damaged|does not know"):
        resume_run(workspace, "hurt")


def test_out_of_memory_while_evaluating_is_one_line(workspace, tiny_configs, monkeypatch) -> None:
    def full(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer_module, "evaluate_sources", full)
    model, train = tiny_configs(max_steps=6)
    with pytest.raises(SLMError, match=r"^out of memory at batch size 4") as e:
        Trainer(workspace, "oom-eval", model, train).run()
    assert "\n" not in str(e.value)
