from __future__ import annotations

import json

import pytest

from core.data.corpus import Corpus, discover, file_stats
from core.errors import SLMError
from tests.conftest import make_text


def test_discover_is_recursive_and_skips_hidden(workspace) -> None:
    (workspace.data_dir / ".cache").mkdir()
    (workspace.data_dir / ".cache" / "x.txt").write_text("hidden")
    (workspace.data_dir / "deep" / "er").mkdir(parents=True)
    (workspace.data_dir / "deep" / "er" / "c.jsonl").write_text('{"text": "hi"}\n')
    (workspace.data_dir / "image.png").write_bytes(b"\x89PNG")
    names = [p.relative_to(workspace.data_dir).as_posix() for p in discover(workspace.data_dir)]
    assert names == ["b.md", "deep/er/c.jsonl", "stories/a.txt"]


def test_stats_count_lines_chars_and_records(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("héllo\nworld\n", encoding="utf-8")
    lines = [{"text": "one"}, {"messages": [{"role": "user", "content": "hi"}]}, {"other": 1}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    a = file_stats(tmp_path / "a.txt", tmp_path)
    assert (a.bytes, a.lines, a.chars, a.documents, a.error) == (13, 2, 12, 1, None)
    b = file_stats(tmp_path / "b.jsonl", tmp_path)
    assert (b.documents, b.chat_records, b.skipped_records) == (1, 1, 2)
    chat = [{"messages": [{"role": "user", "content": "a long question " * 50}]}] * 20
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(x) for x in [*chat, {"text": "x" * 400}]) + "\n")
    mixed = file_stats(tmp_path / "chat.jsonl", tmp_path)
    assert mixed.est_tokens == len(json.dumps({"text": "x" * 400})) // 4  # chat records are not pretraining text


def test_undecodable_files_are_reported_and_skipped(workspace) -> None:
    (workspace.data_dir / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    (workspace.data_dir / "binary.txt").write_bytes(b"\x00\x01\x02")
    corpus = Corpus.scan(workspace.data_dir)
    problems = {p.path: p.error for p in corpus.problems}
    assert "not UTF-8" in problems["latin1.txt"]
    assert "binary" in problems["binary.txt"]
    assert [f.path for f in corpus.files] == ["b.md", "stories/a.txt"]


def test_replace_mode_keeps_damaged_text(workspace) -> None:
    (workspace.data_dir / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    corpus = Corpus.scan(workspace.data_dir, decode_errors="replace")
    assert "latin1.txt" in [f.path for f in corpus.files]
    text = "".join(corpus.texts("train", 0.1, 0)) + "".join(corpus.texts("val", 0.1, 0))
    assert "caf\ufffd au" in text


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda d: None, "no .txt, .md or .jsonl files"),
        (lambda d: (d / "x.txt").write_bytes(b"\xff\xfe\x00bin"), "no usable text"),
        (lambda d: (d / "x.txt").write_text(""), "empty"),
    ],
)
def test_bad_corpora_give_one_line_errors(tmp_path, setup, message) -> None:
    data = tmp_path / "data"
    data.mkdir()
    setup(data)
    with pytest.raises(SLMError, match=message) as info:
        Corpus.scan(data)
    assert "\n" not in str(info.value)


def test_missing_data_folder(tmp_path) -> None:
    with pytest.raises(SLMError, match="does not exist"):
        Corpus.scan(tmp_path / "nope")


def test_split_is_deterministic_and_disjoint_for_many_documents(tmp_path) -> None:
    records = [{"text": f"document number {i}. " + make_text(3, seed=i)} for i in range(200)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    corpus = Corpus.scan(tmp_path)
    val = list(corpus.texts("val", 0.2, seed=1))
    train = list(corpus.texts("train", 0.2, seed=1))
    assert val == list(Corpus.scan(tmp_path).texts("val", 0.2, seed=1))
    assert not set(val) & set(train)
    assert len(val) + len(train) == 200
    assert 20 <= len(val) <= 60
    assert val != list(corpus.texts("val", 0.2, seed=2))


def test_a_single_file_gives_its_tail_to_validation(tmp_path) -> None:
    text = make_text(3000, seed=3)  # > 64 KiB, read in several chunks
    (tmp_path / "book.txt").write_text(text)
    corpus = Corpus.scan(tmp_path)
    train = "".join(corpus.texts("train", 0.1, 0))
    val = "".join(corpus.texts("val", 0.1, 0))
    assert train + val == text
    assert train.endswith("\n")
    assert 0.08 < len(val) / len(text) < 0.12
