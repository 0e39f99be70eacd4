from __future__ import annotations

import errno
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from core import checkpoint as checkpoint_module
from core.checkpoint import load_checkpoint
from core.errors import SLMError
from core.listing import list_checkpoints, resolve_checkpoint
from core.train.events import Control, EvalMetrics, RunEnded, StepMetrics, event_from_dict
from core.train.objectives import resume_run
from core.train.trainer import Trainer


def collect():
    events = []
    return events, events.append


def test_training_lowers_the_loss_and_writes_checkpoints(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=30, eval_interval=10, lr=1e-2)
    events, on_event = collect()
    end = Trainer(workspace, "run1", model, train, on_event).run()
    assert end.reason == "finished" and end.step == 30
    losses = [e.loss for e in events if isinstance(e, StepMetrics)]
    evals = [e for e in events if isinstance(e, EvalMetrics)]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert len(evals) == 3 and all(math.isfinite(e.val_bpb) and e.val_bpb > 0 for e in evals)
    run_dir = workspace.run_dir("run1")
    for kind in ("latest", "best", "final"):
        assert (run_dir / kind / "model.safetensors").exists()
    assert (run_dir / "latest" / "trainer.safetensors").exists()
    assert not (run_dir / "final" / "trainer.safetensors").exists()
    meta = json.loads((run_dir / "final" / "checkpoint.json").read_text())
    assert meta["step"] == 30 and meta["tokens_seen"] == 30 * 4 * 32 and "val_bpb" in meta["metrics"]
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rebuilt = [event_from_dict(x) for x in lines]
    assert sum(isinstance(e, StepMetrics) for e in rebuilt) == 30
    assert isinstance(rebuilt[-1], RunEnded)
    assert resolve_checkpoint(workspace, "run1") == run_dir / "best"
    assert {e.kind for e in list_checkpoints(workspace)} == {"latest", "best", "final"}


def test_resume_is_bit_exact(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=16, eval_interval=5, checkpoint_interval=100)
    Trainer(workspace, "straight", model, train).run()

    control = Control()

    def stop_at_7(event):
        if isinstance(event, StepMetrics) and event.step == 7:
            control.stop()

    first = Trainer(workspace, "interrupted", model, train, stop_at_7, control).run()
    assert first.reason == "stopped" and first.step == 7
    end = resume_run(workspace, "interrupted").run()
    assert end.reason == "finished" and end.step == 16
    a = load_file(workspace.run_dir("straight") / "final" / "model.safetensors")
    b = load_file(workspace.run_dir("interrupted") / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [
        json.loads(x).get("step")
        for x in (workspace.run_dir("interrupted") / "metrics.jsonl").read_text().splitlines()
        if json.loads(x)["event"] == "StepMetrics"
    ]
    assert steps == list(range(1, 17))


def test_pause_and_stop_from_another_thread(workspace, tiny_configs) -> None:
    import threading

    model, train = tiny_configs(max_steps=10_000, eval_interval=1000)
    control = Control()
    states = []

    def on_event(event):
        if isinstance(event, StepMetrics) and event.step == 3:
            control.pause()
        if type(event).__name__ == "StateChanged":
            states.append(event.state)

    def unpause_then_stop():
        while not control.paused:
            pass
        control.resume()
        control.stop()

    thread = threading.Thread(target=unpause_then_stop)
    thread.start()
    end = Trainer(workspace, "paused", model, train, on_event, control).run()
    thread.join()
    assert states[0] == "paused"
    assert end.reason == "stopped"
    assert load_checkpoint(workspace.run_dir("paused") / "latest").step == end.step


def test_fine_tune_records_lineage_and_refuses_other_tokenizers(workspace, tiny_configs, tmp_path) -> None:
    model, train = tiny_configs(max_steps=4)
    Trainer(workspace, "base", model, train).run()
    _, child_train = tiny_configs(max_steps=4, init_from="base/final", tokenizer=None)
    Trainer(workspace, "child", model, child_train).run()
    meta = json.loads((workspace.run_dir("child") / "final" / "checkpoint.json").read_text())
    base_meta = json.loads((workspace.run_dir("base") / "final" / "checkpoint.json").read_text())
    assert meta["lineage"][0]["run_id"] == base_meta["run_id"]

    from core.tokenizer.bpe import train_tokenizer

    other = train_tokenizer(["completely different text " * 50], vocab_size=300)
    other.save(tmp_path / "other.json")
    _, bad = tiny_configs(max_steps=4, init_from="base/final", tokenizer=str(tmp_path / "other.json"))
    with pytest.raises(SLMError, match="does not match"):
        Trainer(workspace, "child2", model, bad).run()


def test_existing_run_name_is_refused(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=2)
    Trainer(workspace, "dup", model, train).run()
    with pytest.raises(SLMError, match="already exists"):
        Trainer(workspace, "dup", model, train).run()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workspace, tiny_configs, monkeypatch) -> None:
    model, train = tiny_configs(max_steps=20, checkpoint_interval=5)
    trainer = Trainer(workspace, "nan", model, train)
    original = Trainer._step

    def poisoned(self):
        if self.step == 8:
            with torch.no_grad():
                self.model.embed.weight.fill_(float("nan"))
        return original(self)

    monkeypatch.setattr(Trainer, "_step", poisoned)
    with pytest.raises(SLMError, match=r"loss became nan at step 9 \(not applied\).* is latest \(step 5, "):
        trainer.run()
    latest = load_checkpoint(workspace.run_dir("nan") / "latest")
    assert latest.step == 5
    assert all(torch.isfinite(t).all() for t in latest.state.values())
    last = json.loads((workspace.run_dir("nan") / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "RunEnded" and last["reason"] == "nan"


def test_out_of_memory_names_the_knobs(workspace, tiny_configs, monkeypatch) -> None:
    model, train = tiny_configs(max_steps=3)
    trainer = Trainer(workspace, "oom", model, train)
    trainer.prepare()

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_model", boom)
    with pytest.raises(SLMError, match="out of memory at batch size 4: lower --batch-size"):
        trainer._step()


def test_disk_full_while_saving_keeps_the_previous_checkpoint(workspace, tiny_configs, monkeypatch) -> None:
    model, train = tiny_configs(max_steps=12, checkpoint_interval=4)
    trainer = Trainer(workspace, "full", model, train)
    real_save = checkpoint_module.save_file

    def failing_save(tensors, path, *a, **k):
        if trainer.step >= 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(checkpoint_module, "save_file", failing_save)
    with pytest.raises(SLMError, match="disk full"):
        trainer.run()
    latest = load_checkpoint(workspace.run_dir("full") / "latest", with_trainer=True)
    assert latest.step == 4
    assert not list(workspace.run_dir("full").glob(".*tmp*"))


def test_corrupt_and_truncated_checkpoints_are_detected(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=2)
    Trainer(workspace, "c", model, train).run()
    weights = workspace.run_dir("c") / "final" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(SLMError, match="corrupt"):
        load_checkpoint(weights.parent)
    (workspace.run_dir("c") / "latest" / "checkpoint.json").write_text("{broken")
    with pytest.raises(SLMError, match="not valid JSON"):
        load_checkpoint(workspace.run_dir("c") / "latest")


def test_early_stopping_after_patience_evals_without_improvement(workspace, tiny_configs, monkeypatch) -> None:
    from core.evaluate import EvalResult
    from core.train import trainer as train_module

    losses = iter([3.0, 2.5, 2.6, 2.55, 2.7, 1.0])
    monkeypatch.setattr(train_module, "evaluate_sources", lambda *a, **k: EvalResult(next(losses), 1.0, 1.0, 10))
    model, train = tiny_configs(max_steps=200, eval_interval=2, patience=3)
    end = Trainer(workspace, "early", model, train).run()
    assert end.reason == "early_stop" and end.step == 10 and end.best_val_loss == 2.5
    assert load_checkpoint(workspace.run_dir("early") / "best").step == 4


def test_token_and_time_limits(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=1000, max_tokens=4 * 32 * 5)
    assert Trainer(workspace, "tokens", model, train).run().step == 5
    model, train = tiny_configs(max_steps=100_000, max_minutes=0.02, eval_interval=100_000)
    end = Trainer(workspace, "minutes", model, train).run()
    assert end.reason == "finished" and end.step < 100_000


def test_bf16_autocast_trains_on_cpu(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=3, precision="bf16", eval_interval=3)
    events, on_event = collect()
    end = Trainer(workspace, "bf16", model, train, on_event).run()
    assert end.reason == "finished"
    started = next(e for e in events if type(e).__name__ == "RunStarted")
    assert started.precision == "bfloat16"
    assert all(math.isfinite(e.loss) for e in events if isinstance(e, StepMetrics))


def test_fp16_needs_a_gpu(workspace, tiny_configs) -> None:
    model, train = tiny_configs(max_steps=3, precision="fp16", device="cpu")
    with pytest.raises(SLMError, match="fp16 training needs a CUDA GPU"):
        Trainer(workspace, "fp16", model, train).run()
