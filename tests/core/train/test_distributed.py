"""Training under torchrun (2 CPU processes, gloo) matches one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from core.checkpoint import load_checkpoint
from tests.conftest import TINY_MODEL
from tui.cli import main
from tui.cli.train import drop_flags

STEPS = 6
FLAGS = [
    *(f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()),
    f"--max-steps={STEPS}",
    "--eval-interval=3",
    "--eval-tokens=256",
    "--sample-interval=3",
    "--sample-tokens=4",
    "--checkpoint-interval=3",
    "--warmup-steps=2",
    "--lr=3e-3",
    "--device=cpu",
    "--precision=fp32",
    "--threads=1",
]


def train(ws, capsys, *args: str) -> str:
    code = main(["--workspace", str(ws.root), "train", *FLAGS, *args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out + err


def losses(ws, run: str) -> list[float]:
    lines = (ws.run_dir(run) / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["event"] == "StepMetrics"]


def assert_same_weights(a, b, atol: float) -> None:
    assert a.state.keys() == b.state.keys()
    for name, tensor in a.state.items():
        torch.testing.assert_close(tensor, b.state[name], atol=atol, rtol=0, msg=name)


@pytest.fixture
def single(workspace, tokenizer_file, capsys):
    """One process, global batch 4."""
    train(workspace, capsys, "--name", "single", "--tokenizer", str(tokenizer_file), "--batch-size=4")
    return load_checkpoint(workspace.run_dir("single") / "final")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "shard"])
def test_two_ranks_match_one_process_and_resume_in_one(workspace, tokenizer_file, single, capsys, mode) -> None:
    extra = ["--shard"] if mode == "shard" else ["--grad-accum=2", "--batch-size=1"]
    if mode == "shard":
        extra.append("--batch-size=2")
    out = train(workspace, capsys, "--nproc", "2", "--name", mode, "--tokenizer", str(tokenizer_file), *extra)
    assert "running: torchrun --nproc-per-node=2" in out
    assert losses(workspace, mode) == pytest.approx(losses(workspace, "single"), abs=2e-5)
    assert_same_weights(load_checkpoint(workspace.run_dir(mode) / "final"), single, atol=1e-4)
    assert not any(workspace.run_dir(mode).glob("*.rank*"))  # rank 0 alone wrote the run folder

    code = main(["--workspace", str(workspace.root), "train", "--resume", mode, f"--max-steps={STEPS + 2}"])
    assert code == 0, capsys.readouterr()
    assert load_checkpoint(workspace.run_dir(mode) / "final").meta["step"] == STEPS + 2


@pytest.mark.slow
def test_ctrl_c_stops_the_ranks_with_a_checkpoint_and_one_line(workspace, tokenizer_file) -> None:
    """Ctrl-C reaches the whole process group, as from a terminal: one message, no traceback, resumable."""
    flags = [f for f in FLAGS if not f.startswith("--max-steps")] + ["--max-steps=100000", "--log-interval=1"]
    argv = ["--workspace", str(workspace.root), "train", *flags, "--nproc", "2", "--name", "stopped"]
    argv += ["--tokenizer", str(tokenizer_file)]
    job = subprocess.Popen(
        [sys.executable, "-m", "tui.cli", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    metrics = workspace.run_dir("stopped") / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while "StepMetrics" not in (metrics.read_text() if metrics.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, out + err
    assert "Traceback" not in err
    assert err.strip().endswith("error: stopped on request; resume with: slm train --resume stopped --nproc 2")
    assert load_checkpoint(workspace.run_dir("stopped") / "latest").meta["step"] >= 1


def test_launcher_passes_every_flag_but_its_own() -> None:
    argv = ["train", "--nproc", "2", "--nnodes=1", "--lr", "0.1", "--rdzv-endpoint", "h:1", "--shard"]
    assert drop_flags(argv, ("--nproc", "--nnodes", "--rdzv-endpoint")) == ["train", "--lr", "0.1", "--shard"]


def test_a_single_process_has_nothing_to_shard(workspace, tokenizer_file, capsys) -> None:
    assert "WORLD_SIZE" not in os.environ
    out = train(workspace, capsys, "--tokenizer", str(tokenizer_file), "--shard", "--max-steps=1")
    assert "nothing to shard" in out and "finished at step 1" in out
