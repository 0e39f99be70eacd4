"""Checkpoints read back from disk: every kind of damage (metadata, weights, tokenizer, lineage, trainer state) is a
one-line refusal for that checkpoint only, and the listing keeps working; writes that fail say why in one line.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError
from safetensors.torch import load_file

from core import atomic
from core.checkpoint import file_digest, load_checkpoint, save_checkpoint, save_file
from core.config import ModelConfig, TrainConfig
from core.errors import SLMError
from core.listing import list_checkpoints, read_meta, resolve_checkpoint
from core.tokenizer.bpe import Tokenizer
from core.train.trainer import Trainer
from core.workspace import Workspace
from tests.conftest import TINY_MODEL, TINY_TRAIN, make_text
from tests.core.merge.test_weights import write_checkpoint
from tui.cli import main

HOSTILE = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer_file) -> Path:
    """A workspace with one tiny trained run, `good` (best, final and a resumable latest), made once."""
    ws = Workspace.resolve(tmp_path_factory.mktemp("trained") / "ws")
    ws.ensure()
    (ws.data_dir / "a.txt").write_text(make_text(600, seed=1), encoding="utf-8")
    train = TrainConfig(**{**TINY_TRAIN, "max_steps": 2, "eval_interval": 2, "tokenizer": str(tokenizer_file)})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models train fastest on one thread
    Trainer(ws, "good", ModelConfig(**TINY_MODEL), train).run()
    torch.set_num_threads(threads)
    return ws.root


@pytest.fixture
def ws(trained, tmp_path) -> Workspace:
    """A copy of the trained workspace with a second run `bad`, a copy of `good` for each test to damage."""
    shutil.copytree(trained, tmp_path / "ws")
    ws = Workspace.resolve(tmp_path / "ws")
    shutil.copytree(ws.run_dir("good"), ws.run_dir("bad"))
    return ws


def edit_json(path: Path, change: Callable[[dict], object], raw: str | None = None) -> None:
    """Rewrite a JSON file through `change(value)`; the string "RAW" in the result becomes the text `raw`."""
    value = json.loads(path.read_text())
    change(value)
    text = json.dumps(value)
    path.write_text(text.replace('"RAW"', raw) if raw is not None else text)


def resave(ckpt: Path, change: Callable[[dict], object], name: str = "model.safetensors") -> None:
    """Rewrite a checkpoint's tensors through `change(tensors)`, with a matching checksum (the damage is inside)."""
    tensors = load_file(str(ckpt / name))
    change(tensors)
    save_file(tensors, str(ckpt / name))
    if name == "model.safetensors":
        edit_json(ckpt / "checkpoint.json", lambda m: m.update(weights_digest=file_digest(ckpt / name)))


def refusal(action: Callable[[], object]) -> str | None:
    """None when `action` works, else its SLMError's message, which must be one line (any other error fails)."""
    try:
        action()
    except SLMError as e:
        assert "\n" not in str(e) and str(e), repr(e)
        return str(e)
    return None


def entry_of(ws: Workspace, label: str):
    return next(e for e in list_checkpoints(ws, unreadable=True) if f"{e.run}/{e.kind}" == label)


# --- checkpoint.json --------------------------------------------------------------------------------------

BAD_META = [
    ("step", '"x"'), ("step", "true"), ("step", "-1"), ("step", "1e400"), ("step", "NaN"), ("step", "1.5"),
    ("step", "1" + "0" * 30), ("step", "1" + "0" * 5000), ("tokens_seen", "[]"), ("params", "-5"),
    ("created", "5"), ("run_id", "{}"), ("chat", '"yes"'), ("format", "2"), ("weights_digest", "7"),
    ("model", '"x"'), ("model", "[]"), ("model", "null"), ("metrics", "[]"), ("lineage", "{}"),
    ("lineage", '["x"]'), ("lineage", '[{"run_id": 5}]'), ("lineage", '[{"path": []}]'),
    ("lineage", '[{"step": -1}]'), ("lineage", '[{"step": "x"}]'), ("merge", '"x"'), ("merge", "{}"),
    ("merge", '{"method": "linear", "parents": ["a/final"], "weights": [1, 2]}'),
    ("merge", '{"method": "linear", "parents": ["a"], "weights": ["x"]}'),
    ("merge", '{"method": 3, "parents": ["a"], "weights": [1]}'), ("imported", '"x"'), ("imported", '{"from": 1}'),
    ("trainer", "[]"),
]  # fmt: skip
BAD_MODEL = [
    ("n_layer", '"x"'), ("n_layer", "true"), ("n_layer", "0"), ("n_layer", "-3"), ("n_layer", "1e400"),
    ("n_layer", "1000000000"), ("n_layer", "2.5"), ("vocab_size", "-1"), ("vocab_size", "99999999999"),
    ("n_embd", "31"), ("n_embd", "NaN"), ("n_head", "0"), ("n_kv_head", "0"), ("n_kv_head", "3"),
    ("mlp_hidden", "-5"), ("context", "Infinity"), ("rope_theta", "NaN"), ("rope_theta", "-1"),
    ("rope_theta", '"big"'), ("norm_eps", "0"), ("dropout", "1e400"), ("dropout", "1"), ("tie_embeddings", "1"),
    ("surprise", "1"),
]  # fmt: skip
BAD_METRICS = [("val_loss", '"x"'), ("val_loss", "NaN"), ("val_bpb", "Infinity"), ("train_loss", "[]")]


@pytest.mark.parametrize("where", ["top", "model", "metrics"])
def test_each_damaged_entry_of_checkpoint_json_is_refused_in_one_line(ws, where) -> None:
    cases = {"top": BAD_META, "model": BAD_MODEL, "metrics": BAD_METRICS}[where]
    ckpt = ws.run_dir("bad") / "final"
    original = (ckpt / "checkpoint.json").read_text()
    for key, raw in cases:
        (ckpt / "checkpoint.json").write_text(original)
        section = (lambda m: m) if where == "top" else (lambda m: m[where])
        edit_json(ckpt / "checkpoint.json", lambda m, k=key, s=section: s(m).update({k: "RAW"}), raw)
        for action in (lambda: read_meta(ckpt), lambda: load_checkpoint(ckpt)):
            message = refusal(action)
            assert message and "bad/final" in message, (key, raw)
        assert entry_of(ws, "bad/final").error, (key, raw)
        assert entry_of(ws, "good/final").error is None
        assert resolve_checkpoint(ws, "bad/final") == ckpt  # found, then refused when loaded


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
FIELDS = [
    *[("", k) for k, _ in BAD_META], *[("model", k) for k in TINY_MODEL], ("model", "rope_theta"),
    ("model", "tie_embeddings"), ("metrics", "val_loss"), ("metrics", "val_bpb"), ("trainer", "step"),
    ("trainer", "elapsed_s"), ("trainer", "optimizers"), ("trainer", "best_val_loss"), ("trainer", "scaler"),
]  # fmt: skip


@HOSTILE
@given(field=st.sampled_from(FIELDS), value=JSON_VALUES)
def test_any_value_in_any_entry_loads_or_is_one_line(trained, tmp_path_factory, field, value) -> None:
    ws = Workspace.resolve(tmp_path_factory.mktemp("any") / "ws")
    shutil.copytree(trained / "checkpoints" / "good", ws.run_dir("good"))
    ckpt = ws.run_dir("good") / "latest"
    section, key = field
    edit_json(ckpt / "checkpoint.json", lambda m: (m[section] if section else m).update({key: value}))
    meta_refused = refusal(lambda: read_meta(ckpt))
    refusal(lambda: load_checkpoint(ckpt, with_trainer=True))
    assert (entry_of(ws, "good/latest").error is not None) == (meta_refused is not None)
    assert refusal(lambda: resolve_checkpoint(ws, None)) is None


@HOSTILE
@given(data=st.data())
def test_truncated_or_garbage_checkpoint_json_is_refused(trained, tmp_path_factory, data) -> None:
    ws = Workspace.resolve(tmp_path_factory.mktemp("garbage") / "ws")
    shutil.copytree(trained / "checkpoints" / "good", ws.run_dir("good"))
    file = ws.run_dir("good") / "final" / "checkpoint.json"
    text = file.read_bytes()
    damaged = data.draw(
        st.integers(0, len(text) - 2).map(lambda n: text[:n])
        | st.binary(max_size=200)
        | st.sampled_from([b"[" * 100_000, b"[]", b"7", b'"x"', b"\xff\xfe{}", b"{" + b'"a":' * 50_000])
    )
    file.write_bytes(damaged)
    assert refusal(lambda: load_checkpoint(file.parent))
    assert entry_of(ws, "good/final").error
    assert [e.error for e in list_checkpoints(ws, unreadable=True) if e.kind != "final"] == [None, None]


# --- weights and tokenizer --------------------------------------------------------------------------------


def nan_at(name: str, value: float = float("nan")) -> Callable[[dict], None]:
    return lambda t: t[name].view(-1).__setitem__(0, value)


BAD_WEIGHTS = {
    "wrong shape": lambda t: t.update({"embed.weight": torch.zeros(5, 5)}), "no weights": lambda t: t.clear(),
    "int dtype": lambda t: t.update({"norm.weight": t["norm.weight"].long()}),
    "bool dtype": lambda t: t.update({"norm.weight": t["norm.weight"] > 0}),
    "uint8 dtype": lambda t: t.update({"norm.weight": t["norm.weight"].to(torch.uint8)}),
    "unknown name": lambda t: t.update({"junk": torch.zeros(2)}),
    "missing weight": lambda t: t.pop("blocks.0.attn.qkv.weight"),
    "nan": nan_at("embed.weight"), "inf": nan_at("norm.weight", float("inf")),
    "-inf in bf16": lambda t: (t.update({k: v.bfloat16() for k, v in t.items()}), nan_at("embed.weight", -1e39)(t)),
}  # fmt: skip


@pytest.mark.parametrize("damage", BAD_WEIGHTS)
def test_damaged_weights_are_refused_by_every_command(ws, damage, capsys) -> None:
    resave(ws.run_dir("bad") / "best", BAD_WEIGHTS[damage])
    assert refusal(lambda: load_checkpoint(ws.run_dir("bad") / "best"))
    out = ws.root / "exports" / "x"
    for args in (
        ["generate", "bad/best", "--max-tokens", "2"],
        ["eval", "bad/best", "--file", str(ws.data_dir / "a.txt")],
        ["export", "bad/best", "--format", "gguf", "--out", str(out)],
        ["merge", "bad/best", "good/best", "--name", "m", "--force"],
    ):
        code = main(["--workspace", str(ws.root), *args])
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1 and err.startswith("error: ") and "bad/best" in err, (args, err)
    assert not out.exists() and not ws.run_dir("m").exists()


def test_half_precision_weights_still_load(ws) -> None:
    resave(ws.run_dir("bad") / "best", lambda t: t.update({k: v.half() for k, v in t.items()}))
    assert load_checkpoint(ws.run_dir("bad") / "best").state["norm.weight"].dtype == torch.float16


@HOSTILE
@given(data=st.data())
def test_truncated_weights_are_refused(trained, tmp_path_factory, data) -> None:
    ckpt = tmp_path_factory.mktemp("cut") / "final"
    shutil.copytree(trained / "checkpoints" / "good" / "final", ckpt)
    weights = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(weights[: data.draw(st.integers(0, len(weights) - 1))])
    if data.draw(st.booleans()):  # without the checksum the file's own structure must give it away
        edit_json(ckpt / "checkpoint.json", lambda m: m.pop("weights_digest"))
    assert refusal(lambda: load_checkpoint(ckpt))


@pytest.mark.parametrize(
    "model, message",
    [
        ({"n_layer": 3}, "lacks blocks.2"),
        ({"n_layer": 1}, "no place for"),
        ({"n_head": 1, "n_kv_head": 1}, "has shape"),
        ({"vocab_size": 400}, "has shape"),
        ({"n_layer": 1024, "n_embd": 65536, "n_head": 2, "n_kv_head": 1, "vocab_size": 2**24}, "parameters but"),
    ],
)
def test_a_config_that_does_not_fit_the_file_is_refused(ws, model, message) -> None:
    ckpt = ws.run_dir("bad") / "final"
    edit_json(ckpt / "checkpoint.json", lambda m: m["model"].update(model))
    assert message in refusal(lambda: load_checkpoint(ckpt))


def test_a_damaged_or_swapped_tokenizer_is_refused(ws) -> None:
    tokenizer = ws.run_dir("bad") / "best" / "tokenizer.json"
    edit_json(tokenizer, lambda t: t["model"]["merges"].pop())  # valid, but not the one the model learnt with
    assert "does not match the tokenizer" in refusal(lambda: load_checkpoint(tokenizer.parent))
    tokenizer.write_text('{"model": 1')
    assert "not a valid tokenizer.json" in refusal(lambda: load_checkpoint(tokenizer.parent))
    tokenizer.unlink()
    assert refusal(lambda: load_checkpoint(tokenizer.parent))
    assert entry_of(ws, "bad/best").error == "tokenizer.json is missing"


# --- the trainer state of latest ---------------------------------------------------------------------------

TRAINER, GROUP = (lambda m: m["trainer"]), (lambda m: m["trainer"]["optimizers"][0]["param_groups"][0])
BAD_TRAINER_JSON = {
    "no trainer": lambda m: m.pop("trainer"), "no step": lambda m: TRAINER(m).pop("step"),
    "step x": lambda m: TRAINER(m).update(step="x"), "tokens_seen -1": lambda m: TRAINER(m).update(tokens_seen=-1),
    "elapsed nan": lambda m: TRAINER(m).update(elapsed_s=float("nan")),
    "best_val_loss x": lambda m: TRAINER(m).update(best_val_loss="x"),
    "optimizers dict": lambda m: TRAINER(m).update(optimizers={}),
    "no optimizers": lambda m: TRAINER(m).update(optimizers=[]),
    "groups not a list": lambda m: TRAINER(m)["optimizers"][0].update(param_groups="x"),
    "group without params": lambda m: GROUP(m).pop("params"),
    "duplicate ids": lambda m: GROUP(m)["params"].append(0), "lr a string": lambda m: GROUP(m).update(lr="fast"),
    "scalars of nobody": lambda m: TRAINER(m)["optimizers"][0].update(scalars={"x": {}}),
    "scaler x": lambda m: TRAINER(m).update(scaler="x"),
}  # fmt: skip
BAD_TRAINER_TENSORS = {
    "no rng": lambda t: t.pop("rng.torch"), "rng as floats": lambda t: t.update({"rng.data": t["rng.data"].float()}),
    "short rng": lambda t: t.update({"rng.torch": t["rng.torch"][:10].clone()}),
    "junk": lambda t: t.update({"junk": torch.zeros(1)}),
    "optimizer 9": lambda t: t.update({"opt9.0.exp_avg": torch.zeros(1)}),
    "wrong shape": lambda t: t.update({"opt0.0.exp_avg": torch.zeros(3, 3)}),
    "nan moment": nan_at("opt0.0.exp_avg_sq"),
    "int moment": lambda t: t.update({"opt0.0.exp_avg": t["opt0.0.exp_avg"].long()}),
}  # fmt: skip


@pytest.mark.parametrize("damage", [*BAD_TRAINER_JSON, *BAD_TRAINER_TENSORS])
def test_damaged_trainer_state_is_refused_before_resuming(ws, damage, capsys) -> None:
    latest = ws.run_dir("bad") / "latest"
    if damage in BAD_TRAINER_JSON:
        edit_json(latest / "checkpoint.json", BAD_TRAINER_JSON[damage])
    else:
        resave(latest, BAD_TRAINER_TENSORS[damage], "trainer.safetensors")
    assert refusal(lambda: load_checkpoint(latest, with_trainer=True))
    code = main(["--workspace", str(ws.root), "train", "--resume", "bad", "--max-steps", "3"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert load_checkpoint(latest).step == 2  # its weights still load (generate, export…)


def test_the_resume_state_of_a_gpu_run_is_accepted(ws) -> None:
    """A CUDA run also saves its GPU's RNG, and under fp16 the GradScaler's state."""
    latest = ws.run_dir("bad") / "latest"
    resave(latest, lambda t: t.update({"rng.cuda": torch.zeros(16, dtype=torch.uint8)}), "trainer.safetensors")
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000}
    edit_json(latest / "checkpoint.json", lambda m: m["trainer"].update(scaler={**scaler, "_growth_tracker": 3}))
    assert load_checkpoint(latest, with_trainer=True).trainer_tensors["rng.cuda"].shape == (16,)


# --- listing: one bad checkpoint leaves the rest usable -------------------------------------------------


def test_slm_checkpoints_lists_a_bad_checkpoint_beside_good_ones(ws, capsys) -> None:
    edit_json(ws.run_dir("bad") / "final" / "checkpoint.json", lambda m: m.update(step="x"))
    (ws.run_dir("bad") / "best" / "checkpoint.json").write_text("{garbage")
    assert main(["--workspace", str(ws.root), "checkpoints"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(lines) == [f"{run}/{kind}" for run in ("bad", "good") for kind in ("best", "final", "latest")]
    assert "unreadable: checkpoint.json: step must be a whole number, not 'x'" in lines["bad/final"]
    assert "unreadable: checkpoint.json is not valid JSON" in lines["bad/best"]
    assert "unreadable" not in lines["bad/latest"] + lines["good/final"]
    assert [e.run for e in list_checkpoints(ws)] == ["bad", "good", "good", "good"]  # pickers skip it
    assert main(["--workspace", str(ws.root), "merge", "good/final", "bad/latest", "--name", "m"]) == 0


def test_a_checkpoint_left_aside_by_a_crash_is_listed_and_loads(ws, capsys) -> None:
    final = ws.run_dir("bad") / "final"
    os.rename(final, final.with_name(".final.old"))  # a crash between replace_dir's two renames
    entry = entry_of(ws, "bad/final")
    assert entry.error is None and entry.step == 2 and entry.path == final
    assert not final.exists()  # listing leaves it aside: a save may be in progress
    assert main(["--workspace", str(ws.root), "checkpoints"]) == 0 and "bad/final" in capsys.readouterr().out
    assert load_checkpoint(final).step == 2 and final.exists()
    assert [e.kind for e in list_checkpoints(ws) if e.run == "bad"] == ["best", "final", "latest"]


# --- writing: full disks, file-size limits, permissions ---------------------------------------------------

LIMITED = """
import resource, sys
from tui.cli import main
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
for kib, *args in {calls}:
    resource.setrlimit(resource.RLIMIT_FSIZE, (kib * 1024, hard))
    code = main(["--workspace", {ws!r}, *args])
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    print("exit", code, file=sys.stderr, flush=True)
"""


def test_a_file_size_limit_is_one_line_for_every_writer(ws, tokenizer_file) -> None:
    """Under `ulimit -f` (RLIMIT_FSIZE, in a subprocess: SIGXFSZ would kill it unless slm ignores it)."""
    shutil.rmtree(ws.cache_dir)  # the token files are written again
    tiny = [f"--{k.replace('_', '-')}={v}" for k, v in TINY_MODEL.items()] + ["--eval-interval=2", "--batch-size=4"]
    train = ["train", "--name", "new", "--tokenizer", str(tokenizer_file), "--max-steps", "2", *tiny]
    calls = [
        (4, *train),  # the token files are the first thing over 4 KiB
        (100, *train),  # then the checkpoint weights (about 180 KB)
        (100, "export", "good", "--format", "gguf", "--out", str(ws.root / "x.gguf")),
        (100, "export", "good", "--format", "hf", "--out", str(ws.root / "x-hf")),
    ]
    script = textwrap.dedent(LIMITED).format(calls=calls, ws=str(ws.root))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in done.stderr + done.stdout and done.returncode == 0, done.stderr
    assert done.stderr.count("exit 1") == 4, done.stderr
    for error, what in zip(errors, ["token cache", "new/", "x.gguf", "x-hf"], strict=True):
        assert "file too large while writing" in error and what in error and "previous version is intact" in error
    assert not (ws.root / "x.gguf").exists() and not (ws.root / "x-hf").exists()
    assert not list(ws.root.rglob("*.tmp")) and not list(ws.root.rglob(".*.tmp"))


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "disk full"), (errno.EFBIG, "file too large")])
def test_a_full_disk_while_saving_keeps_the_previous_version(ws, monkeypatch, code, words) -> None:
    import safetensors.torch

    from core.export.formats import export_checkpoint

    final = ws.run_dir("bad") / "final"
    before = load_checkpoint(final)

    def full(*args, **kwargs):
        raise SafetensorError(f"Error while serializing: I/O error: {os.strerror(code)} (os error {code})")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(SLMError, match=f"^{words} while writing .*bad/final: .*the previous version is intact$"):
        save_checkpoint(final, before.state, before.meta, before.tokenizer)
    with pytest.raises(SLMError, match=f"^{words} while writing"):
        export_checkpoint(final, "hf", ws.root / "out-hf")
    assert load_checkpoint(final).step == before.step and not (ws.root / "out-hf").exists()


@pytest.mark.parametrize("umask, file, folder", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_follow_the_umask(ws, tokenizer_file, umask, file, folder) -> None:
    from core.export.formats import export_checkpoint

    before = os.umask(umask)
    try:
        path = write_checkpoint(ws.root / "perm" / "final", "r", Tokenizer.load(tokenizer_file))
        atomic.write_json(ws.root / "perm" / "run.json", {})
        export_checkpoint(ws.run_dir("good") / "final", "gguf", ws.root / "x.gguf")
        export_checkpoint(ws.run_dir("good") / "final", "hf", ws.root / "x-hf")
    finally:
        os.umask(before)
    written = [*path.iterdir(), ws.root / "perm" / "run.json", ws.root / "x.gguf", *(ws.root / "x-hf").iterdir()]
    modes = {str(p.relative_to(ws.root)): oct(p.stat().st_mode & 0o777) for p in written}
    assert modes == dict.fromkeys(modes, oct(file))
    assert oct(path.stat().st_mode & 0o777) == oct(folder) == oct((ws.root / "x-hf").stat().st_mode & 0o777)
