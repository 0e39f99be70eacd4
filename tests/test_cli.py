"""The `slm` command line, run the way a user runs it."""

from __future__ import annotations

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

    code, out, _ = run_slm(ws, "eval", "cli/final", "--file", str(workspace.data_dir / "b.md"), capsys=capsys)
    assert code == 0 and "bits/byte" in out

    code, out, _ = run_slm(ws, "checkpoints", capsys=capsys)
    assert code == 0 and "cli/final" in out and "cli/best" in out

    code, out, err = run_slm(ws, "train", "--resume", "cli", "--max-steps", "14", capsys=capsys)
    assert code == 0, err
    assert "resumed at step 10" in out and "finished at step 14" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--preset", "nope"], "unknown preset"),
        (["train", "--vocab-size", "100"], "too small"),
        (["generate", "missing-run"], "no checkpoint 'missing-run'"),
        (["eval", "--file", "x.txt"], "no checkpoints"),
        (["train", "--name", "../escape"], "invalid run name"),
        (["tokenize", "--name", "t", "--data", "nothing-here"], "does not exist"),
    ],
)
def test_errors_are_one_line_with_a_non_zero_exit(workspace, capsys, args, message) -> None:
    code, _, err = run_slm(workspace.root, *args, capsys=capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and message in lines[-1]


def test_empty_data_folder(tmp_path, capsys) -> None:
    (tmp_path / "data").mkdir()
    code, _, err = run_slm(tmp_path, "train", "--max-steps", "1", capsys=capsys)
    assert code == 1 and "slm data --add-sample" in err


def test_presets_table(capsys, tmp_path) -> None:
    code, out, _ = run_slm(tmp_path, "presets", capsys=capsys)
    assert code == 0
    for name in ("toy", "small", "base", "gpt2", "large", "1b"):
        assert f"\n{name} " in "\n" + out
