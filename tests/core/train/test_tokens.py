from __future__ import annotations

import json
import os

import numpy as np
import pytest

from core.data.corpus import Corpus
from core.tokenizer.bpe import Tokenizer
from core.train.token_cache import encode_corpus
from core.train.tokens import token_dtype
from tests.conftest import make_text


def test_encoding_writes_memmaps_and_reuses_the_cache(workspace, tokenizer_file) -> None:
    tok = Tokenizer.load(tokenizer_file)
    corpus = Corpus.scan(workspace.data_dir)
    stages = []
    data = encode_corpus(corpus, tok, workspace.cache_dir, 0.1, 0, on_progress=lambda s, d, t: stages.append(s))
    assert stages and stages[-1] == "encode"
    train = data.train.array()
    assert train.dtype == np.uint16 and len(train) == data.train.tokens > 0
    assert data.val.tokens > 0
    assert int((train == tok.eot_id).sum()) == 2  # one per document (both files are cut)
    assert tok.decode(train.tolist()) == expected_stream(corpus, "train")
    assert tok.decode(data.val.array().tolist()) == expected_stream(corpus, "val")
    again = encode_corpus(
        Corpus.scan(workspace.data_dir),
        tok,
        workspace.cache_dir,
        0.1,
        0,
        on_progress=lambda *a: pytest.fail("re-encoded unchanged data"),
    )
    assert again.train.path == data.train.path
    (workspace.data_dir / "b.md").write_text(make_text(300, seed=5))
    changed = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    assert changed.train.path != data.train.path


def expected_stream(corpus: Corpus, side: str) -> str:
    """Each document's part of `side`, followed by <|endoftext|>."""
    out, open_doc = [], False
    for s, text in corpus.split(0.1, 0):
        if s != side:
            continue
        if text:
            out.append(text)
            open_doc = True
        elif text is None and open_doc:
            out.append("<|endoftext|>")
            open_doc = False
    return "".join(out)


def test_token_dtype_widens_for_large_vocabularies() -> None:
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_two_encodings_of_one_entry_at_once_keep_the_first_whole_entry(workspace, tokenizer_file) -> None:
    """Two runs started together encode the same entry: neither removes the other's files, both read one entry."""
    tok = Tokenizer.load(tokenizer_file)
    inner: list = []

    def meanwhile(stage: str, done: int, total: int) -> None:
        if not inner:  # another process encodes the same entry and finishes first
            inner.append(encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0))
            inner.append(inner[0].train.path.stat().st_ino)

    outer = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0, on_progress=meanwhile)
    first, inode = inner
    assert outer.train.path == first.train.path and first.train.path.stat().st_ino == inode  # kept, not replaced
    assert outer.train.array().tolist() == first.train.array().tolist()
    assert [p.name for p in workspace.cache_dir.iterdir()] == [first.train.path.parent.name]  # no copy left


def test_a_half_built_entry_of_a_dead_process_is_cleared(workspace, tokenizer_file) -> None:
    import subprocess
    import sys

    tok = Tokenizer.load(tokenizer_file)
    done = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    key_dir = done.train.path.parent
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    abandoned = key_dir.with_name(f"{key_dir.name}.tmp-{dead.stdout.strip()}-abcd")
    working = key_dir.with_name(f"{key_dir.name}.tmp-{os.getppid()}-abcd")  # a live process: still at work
    for folder in (abandoned, working):
        folder.mkdir()
    (key_dir / "meta.json").unlink()  # a damaged entry: encoded again
    encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    assert not abandoned.exists() and working.exists() and (key_dir / "meta.json").exists()


def three_files(workspace) -> None:
    for i in range(3):
        (workspace.data_dir / f"c{i}.txt").write_text(make_text(200, seed=10 + i), encoding="utf-8")


def test_a_stopped_encoding_goes_on_from_its_last_finished_file(workspace, tokenizer_file, monkeypatch) -> None:
    from core.errors import Cancelled
    from core.train import token_cache

    tok = Tokenizer.load(tokenizer_file)
    three_files(workspace)
    whole = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.root / "fresh", 0.1, 0)
    monkeypatch.setattr(token_cache, "RESUME_CHARS", 0)  # a resume point at the end of every file
    monkeypatch.setattr(token_cache, "BATCH_CHARS", 1)  # a batch per piece
    events: list[int] = []
    with pytest.raises(Cancelled):
        encode_corpus(
            Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0,
            on_progress=lambda s, done, t: events.append(done), cancelled=lambda: len(events) >= 4,
        )  # fmt: skip
    (left,) = workspace.cache_dir.glob("*.tmp-*")  # kept: it has a resume point
    point = json.loads((left / "resume.json").read_text())
    assert 1 <= len(point["files"]) < 5
    with open(left / "train.bin", "ab") as f:  # a write after the resume point (killed mid-batch): cut off
        f.write(b"\x01\x02" * 50)
    resumed: list[int] = []
    again = encode_corpus(
        Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0, on_progress=lambda s, d, t: resumed.append(d)
    )
    corpus = Corpus.scan(workspace.data_dir)
    assert resumed[0] >= sum(f.bytes for f in corpus.files[: len(point["files"])])  # the finished files are skipped
    assert again.train.array().tolist() == whole.train.array().tolist()
    assert again.val.array().tolist() == whole.val.array().tolist() and again.files == whole.files
    assert list(workspace.cache_dir.glob("*.tmp-*")) == []


def test_a_resume_point_that_does_not_fit_is_encoded_from_the_start(workspace, tokenizer_file) -> None:
    from core.train.token_cache import cache_key

    tok = Tokenizer.load(tokenizer_file)
    whole = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.root / "fresh", 0.1, 0)
    key = cache_key(Corpus.scan(workspace.data_dir), tok, 0.1, 0)
    dead = workspace.cache_dir / f"{key}.tmp-999999999-abcd"
    dead.mkdir(parents=True)
    (dead / "train.bin").write_bytes(b"")
    (dead / "val.bin").write_bytes(b"")
    (dead / "resume.json").write_text(json.dumps({"dtype": "uint16", "files": [["b.md", 10**6, 0]]}))
    again = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    assert again.train.array().tolist() == whole.train.array().tolist() and not dead.exists()


def test_worker_processes_write_the_same_tokens(workspace, tokenizer_file, monkeypatch) -> None:
    from core.train import token_cache

    tok = Tokenizer.load(tokenizer_file)
    three_files(workspace)
    alone = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.root / "alone", 0.1, 0)
    monkeypatch.setattr(token_cache, "POOL_BYTES", 0)
    monkeypatch.setattr(token_cache, "BATCH_CHARS", 2000)
    monkeypatch.setattr(token_cache, "_workers", lambda: 2)
    pooled = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    assert pooled.train.array().tolist() == alone.train.array().tolist()
    assert pooled.val.array().tolist() == alone.val.array().tolist() and pooled.files == alone.files
