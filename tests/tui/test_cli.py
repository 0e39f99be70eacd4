"""The `slm` command line, run the way a user runs it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_MODEL
from tui.cli import main

TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()] + [
    "--batch-size=4",
    "--eval-interval=5",
    "--eval-tokens=256",
    "--sample-interval=5",
    "--sample-tokens=8",
]


def run_slm(ws: Path, *args: str, capsys) -> tuple[int, str, str]:
    code = main(["--workspace", str(ws), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_does_not_import_torch() -> None:
    code = "import sys; from tui.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit: pass\nprint('torch' in sys.modules, 'textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_full_cli_journey(workspace, capsys) -> None:
    ws = workspace.root
    code, out, _ = run_slm(ws, "data", capsys=capsys)
    assert code == 0 and "stories/a.txt" in out and "2 usable of 2 files" in out

    code, out, _ = run_slm(ws, "tokenize", "--name", "tiny", "--vocab-size", "320", capsys=capsys)
    assert code == 0 and "bytes per token" in out

    code, out, err = run_slm(
        ws, "train", "--name", "cli", "--tokenizer", "tiny", "--max-steps", "10", *TINY_FLAGS, capsys=capsys
    )
    assert code == 0, err
    assert "finished at step 10" in out and "bits/byte" in out

    code, out, err = run_slm(
        ws, "generate", "cli", "--prompt", "The cat", "--max-tokens", "5", "--seed", "1", capsys=capsys
    )
    assert code == 0 and out.startswith("The cat")
    one = out.strip()

    args = ("--prompt", "The cat", "--max-tokens", "5", "--seed", "1", "--num-samples", "3")
    code, out, err = run_slm(ws, "generate", "cli", *args, capsys=capsys)
    assert code == 0, err
    batch = out.split("--- sample ")
    assert len(batch) == 4 and batch[1].split("\n", 1)[1].strip() == one  # sample 1 has the seed of a lone run

    code, out, _ = run_slm(ws, "eval", "cli/final", "--file", str(workspace.data_dir / "b.md"), capsys=capsys)
    assert code == 0 and "bits/byte" in out
    code, out, _ = run_slm(
        ws, "eval", "cli/final", "--file", str(workspace.data_dir / "b.md"), "--dtype", "q4_0", capsys=capsys
    )
    exact, quantized = (float(line.split(" bits/byte")[0].split()[-1]) for line in out.strip().splitlines()[1:3])
    change = float(out.split("bits/byte (")[1].split("%")[0])
    assert code == 0 and quantized != exact and abs(change - 100 * (quantized / exact - 1)) < 0.01
    code, out, _ = run_slm(
        ws, "eval", "cli/final", "--file", str(workspace.data_dir / "b.md"), "--dtype", "int8", capsys=capsys
    )
    assert code == 0 and "int8 (as `generate --dtype int8` runs it)" in out
    int8 = float(out.strip().splitlines()[2].split(" bits/byte")[0].split()[-1])
    assert int8 != exact and abs(int8 / exact - 1) < 0.02
    code, out, err = run_slm(
        ws, "generate", "cli", "--prompt", "The cat", "--max-tokens", "5", "--dtype", "int8", capsys=capsys
    )
    assert code == 0 and out.startswith("The cat"), err

    code, out, _ = run_slm(ws, "checkpoints", capsys=capsys)
    assert code == 0 and "cli/final" in out and "cli/best" in out

    code, out, err = run_slm(ws, "train", "--resume", "cli", "--max-steps", "14", capsys=capsys)
    assert code == 0, err
    assert "resumed at step 10" in out and "finished at step 14" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--preset", "auto"], "a plan needs a budget: give --max-minutes M or --max-tokens N"),
        (["plan", "--data", "nothing-here", "--max-minutes", "1"], "does not exist"),
        (["train", "--vocab-size", "100"], "too small"),
        (["generate", "missing-run"], "no checkpoint 'missing-run'"),
        (["eval", "--file", "x.txt"], "no checkpoints"),
        (["train", "--name", "../escape"], "invalid run name"),
        (["tokenize", "--name", "t", "--data", "nothing-here"], "does not exist"),
        (["sft"], "name the conversations with --data FILE"),
        (["dpo"], "no checkpoints"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(workspace, capsys, args, message) -> None:
    code, _, err = run_slm(workspace.root, *args, capsys=capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and message in lines[-1]


def test_plan_then_a_budget_without_a_preset_trains_the_plan(workspace, capsys) -> None:
    code, out, _ = run_slm(workspace.root, "plan", "--max-minutes", "0.05", capsys=capsys)
    assert code == 0 and out.startswith("plan for 0.05 minutes of training")
    shape = re.search(r"depth (\d+): (\d+) layers? x (\d+) wide", out)
    assert shape and "train it: slm train --preset auto --max-minutes 0.05" in out
    code, out, _ = run_slm(workspace.root, "train", "--max-minutes", "0.05", "--log-interval", "1000", capsys=capsys)
    assert code == 0 and "preset auto (a time budget and no --preset)" in out
    assert re.search(rf"depth {shape[1]}: ", out)  # the same plan: the speeds came from the cache
    (run,) = [p for p in (workspace.root / "checkpoints").iterdir() if p.name.startswith("auto-")]
    model = json.loads((run / "run.json").read_text())["model"]
    assert (model["n_layer"], model["n_embd"]) == (int(shape[2]), int(shape[3]))
    code, out, _ = run_slm(workspace.root, "train", "--max-minutes", "0.05", "--n-layer", "1", "--name", "mine",
                           "--log-interval", "1000", capsys=capsys)  # fmt: skip
    assert code == 0 and json.loads((workspace.root / "checkpoints/mine/run.json").read_text())["model"]["n_layer"] == 1


def test_empty_data_folder(tmp_path, capsys) -> None:
    (tmp_path / "data").mkdir()
    code, _, err = run_slm(tmp_path, "train", "--max-steps", "1", capsys=capsys)
    assert code == 1 and "slm data --add-sample" in err


def test_data_counts_duplicates_and_train_leaves_them_out(workspace, capsys) -> None:
    (workspace.data_dir / "copy").mkdir()
    (workspace.data_dir / "copy" / "b.md").write_bytes((workspace.data_dir / "b.md").read_bytes())
    code, out, _ = run_slm(workspace.root, "data", capsys=capsys)
    assert code == 0 and "(= a copy of b.md," in out and "left out of training" in out
    assert "1 exact duplicate documents" in out and "--keep-duplicates" in out
    code, out, err = run_slm(workspace.root, "train", *TINY_FLAGS, "--max-steps", "1", "--name", "d", capsys=capsys)
    assert code == 0 and "1 duplicate documents" in out + err and "copy/b.md (a copy of b.md)" in out + err


def test_a_mixture_draws_by_weight_validates_each_source_and_is_recorded(workspace, capsys) -> None:
    code, out, err = run_slm(workspace.root, "train", *TINY_FLAGS, "--max-steps", "5", "--mix", "news=1", capsys=capsys)
    assert code == 1 and "no file or folder news in data/" in last_error(err)
    assert not any(workspace.checkpoints_dir.glob("*/run.json"))  # nothing written
    (workspace.data_dir / "mix.json").write_text('{"stories": 0.9, "b.md": 0.1}', encoding="utf-8")
    code, out, _ = run_slm(workspace.root, "data", capsys=capsys)
    assert code == 0 and "drawn by the weights from" in out and re.search(r"stories +\S+ +90%", out)
    code, out, err = run_slm(workspace.root, "train", *TINY_FLAGS, "--max-steps", "5", "--name", "m", capsys=capsys)
    assert code == 0 and "mixture weights from" in out + err and "sources: b.md 10%" in out + err
    assert re.search(r"bits/byte by source: b\.md [\d.]+ · stories [\d.]+", out)
    assert json.loads((workspace.run_dir("m") / "run.json").read_text())["train"]["mix"] == {
        "stories": 0.9,
        "b.md": 0.1,
    }
    evals = [json.loads(line) for line in (workspace.run_dir("m") / "metrics.jsonl").read_text().splitlines()]
    assert {"b.md", "stories"} == set(next(e for e in evals if e["event"] == "EvalMetrics")["sources"])


def test_presets_table(capsys, tmp_path) -> None:
    code, out, _ = run_slm(tmp_path, "presets", capsys=capsys)
    assert code == 0
    for name in ("toy", "small", "base", "gpt2", "large", "1b", "auto"):
        assert f"\n{name} " in "\n" + out


def last_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ")
    return lines[-1]


def test_merge_refuses_incompatible_checkpoints_and_forces_unrelated_ones(workspace, tokenizer_file, capsys) -> None:
    from core.tokenizer.bpe import Tokenizer, train_tokenizer
    from tests.conftest import make_text
    from tests.core.merge.test_weights import write_checkpoint

    tok, root = Tokenizer.load(tokenizer_file), workspace.checkpoints_dir
    write_checkpoint(root / "a" / "final", "run-a", tok)
    write_checkpoint(root / "b" / "final", "run-b", tok, seed=1)
    write_checkpoint(root / "wide" / "final", "run-w", tok, n_embd=64)
    write_checkpoint(root / "other" / "final", "run-o", train_tokenizer([make_text(200, seed=9)], vocab_size=300))
    for pair, message in [
        (["a/final", "wide/final"], "their model configs differ (n_embd 32 vs 64"),
        (["a/final", "other/final"], "different tokenizers"),
        (["a/final", "b/final"], "share no ancestor"),
        (["a/final", "b/final", "--method", "ties"], "name it with --base"),
    ]:
        code, _, err = run_slm(workspace.root, "merge", *pair, capsys=capsys)
        assert code == 1 and message in last_error(err)
    args = ["merge", "a/final", "b/final", "--method", "slerp", "--weights", "1", "3", "--force", "--name", "s"]
    code, out, err = run_slm(workspace.root, *args, capsys=capsys)
    assert code == 0, err
    assert "merged 0.25 × a/final + 0.75 × b/final (slerp) into s/final" in out
    assert err.startswith("warning: forced: a/final and b/final share no ancestor")


def test_pipeline_reports_a_failed_branch_then_resumes(workspace, tokenizer_file, capsys) -> None:
    from core.checkpoint import load_checkpoint

    (workspace.data_dir / "tiny.txt").write_text("hi\n", encoding="utf-8")  # too short to train on: it fails
    stages = ["--base-steps=4", "--branch-steps=3", "--tune-steps=2", "--warmup-steps=1", "--method=ties"]
    flags = ["pipeline", "--name", "p", f"--tokenizer={tokenizer_file}", *stages, *TINY_FLAGS]
    code, out, err = run_slm(workspace.root, *flags, "--parallel=3", capsys=capsys)
    assert code == 1
    assert last_error(err).startswith("error: 1 of 3 branches failed: p-tiny.txt: the training split has only")
    assert "p-stories: finished in" in out and "p-b.md: finished in" in out  # the others ran to their end
    run = workspace.run_dir
    assert (run("p-stories") / "final").is_dir() and not run("p-merged").exists()

    code, out, err = run_slm(workspace.root, *flags, "--data", "stories", "b.md", capsys=capsys)
    assert code == 0, err
    assert "p-base: finished already" in out and "p-stories: finished already" in out
    assert "p-b.md: finished already" in out and "pipeline done: p-tuned/final" in out
    merged = load_checkpoint(run("p-merged") / "final")
    assert merged.meta["merge"]["method"] == "ties"
    assert merged.meta["merge"]["base"] == str(run("p-base") / "final")
    tuned = load_checkpoint(run("p-tuned") / "final")
    assert {load_checkpoint(run(n) / "final").meta["run_id"] for n in ("p-b.md", "p-stories")} <= set(tuned.ancestors())
    code, out, _ = run_slm(
        workspace.root, "eval", "p-merged", "--file", str(workspace.data_dir / "b.md"), capsys=capsys
    )
    assert code == 0 and "bits/byte" in out
    code, out, _ = run_slm(
        workspace.root, "generate", "p-merged", "--prompt", "The", "--max-tokens", "3", capsys=capsys
    )
    assert code == 0 and out.startswith("The")


@pytest.mark.usefixtures("one_thread")
def test_chat_model_journey(workspace, tokenizer_file, capsys) -> None:
    from tests.core.train.test_dpo import rate_pairs
    from tests.core.train.test_sft import write_conversations

    ws = workspace.root
    code, _, err = run_slm(
        ws,
        "train",
        "--name",
        "base",
        "--tokenizer",
        str(tokenizer_file),
        "--max-steps",
        "2",
        *TINY_FLAGS,
        capsys=capsys,
    )
    assert code == 0, err
    write_conversations(workspace)
    tune = ["--max-steps", "4", "--batch-size", "4", "--eval-interval", "2", "--sample-interval", "4"]
    code, out, err = run_slm(
        ws, "sft", "--from", "base", "--data", "chat.jsonl", "--name", "chat", *tune, capsys=capsys
    )
    assert code == 0, err
    assert "finished at step 4" in out and "slm generate chat --chat" in out and "→" in out

    code, out, _ = run_slm(ws, "generate", "chat", "--chat", "--prompt", "Who?", "--max-tokens", "4", capsys=capsys)
    assert code == 0 and not out.startswith("Who?")

    code, out, _ = run_slm(ws, "feedback", capsys=capsys)
    assert code == 0 and "no ratings yet" in out
    rate_pairs(workspace, 6)
    code, out, _ = run_slm(ws, "feedback", capsys=capsys)
    assert code == 0 and "12 ratings (6 good, 6 bad)" in out and "6 preference pairs over 6 prompts" in out
    code, out, _ = run_slm(ws, "feedback", "--export", str(ws / "ratings.jsonl"), capsys=capsys)
    assert code == 0 and len((ws / "ratings.jsonl").read_text().splitlines()) == 12

    code, out, err = run_slm(ws, "dpo", "--from", "chat", "--name", "tuned", "--beta", "0.2", *tune, capsys=capsys)
    assert code == 0, err
    assert "prefs     0 | held-out" in out and "held-out margin" in out and "win rate" in out
    assert "slm generate tuned --chat" in out  # preference tuning keeps a chat model a chat model
