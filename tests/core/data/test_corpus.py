from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.data.corpus import Corpus, discover, file_stats
from core.data.files import CHUNK_BYTES, RECORD_CHARS, decoded, line_blocks, text_pieces
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
        (lambda d: (d / "x.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), "no usable text"),
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


# --- hostile data folders --------------------------------------------------------------------------


def finishes(call: Callable[[], Any], timeout: float = 30.0) -> Any:
    """call(), failing the test instead of hanging when it does not return within `timeout` seconds."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = call()
        except BaseException as e:
            result["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s"
    if "error" in result:
        raise result["error"]
    return result.get("value")


def hostile_folder(data: Path) -> None:
    """A name that is not UTF-8, a pipe, a link to /dev/zero, a broken link, a link to a folder."""
    (data / "good.txt").write_text("Fine text.\n")
    raw = os.fsencode(data)
    with open(os.path.join(raw, b"bad\xff.txt"), "wb") as f:
        f.write(b"text under a bad name\n")
    os.mkdir(os.path.join(raw, b"dir\xfe"))
    with open(os.path.join(raw, b"dir\xfe", b"in.txt"), "wb") as f:
        f.write(b"text in a badly named folder\n")
    os.mkfifo(data / "pipe.txt")
    (data / "zero.txt").symlink_to("/dev/zero")
    (data / "gone.md").symlink_to(data / "nowhere.md")
    (data / "real").mkdir()
    (data / "real" / "r.txt").write_text("Real text.\n")
    (data / "link.txt").symlink_to(data / "real" / "r.txt")  # a link to a regular file is read
    (data / "linked").symlink_to(data / "real")


def test_what_cannot_be_read_as_text_is_named_and_nothing_hangs(tmp_path) -> None:
    hostile_folder(tmp_path)
    corpus = finishes(lambda: Corpus.scan(tmp_path))
    assert [f.path for f in corpus.files] == ["good.txt", "link.txt", "real/r.txt"]
    problems = {p.path: p.error for p in corpus.problems}
    assert problems == {
        "bad\ufffd.txt": "its name is not valid UTF-8: rename it",
        "dir\ufffd": "its name is not valid UTF-8: rename it",
        "gone.md": "not a regular file (a pipe, device or broken link)",
        "linked": "a link to a folder, which is not followed: link the files in it instead",
        "pipe.txt": "not a regular file (a pipe, device or broken link)",
        "zero.txt": "not a regular file (a pipe, device or broken link)",
    }
    assert all(p.path.encode("utf-8") for p in corpus.problems)  # printable
    assert corpus.fingerprint() and "".join(corpus.texts("train", 0.5, 0))  # the cache key and the split work
    assert [p.name for p in discover(tmp_path)] == ["good.txt", "link.txt", "r.txt"]  # merge's branches: as before


def test_a_selected_pipe_is_named_not_opened(tmp_path) -> None:
    hostile_folder(tmp_path)
    with pytest.raises(SLMError, match=r"no usable text .*pipe\.txt \(not a regular file") as info:
        finishes(lambda: Corpus.scan(tmp_path, ["pipe.txt"]))
    assert "decode-errors" not in str(info.value)  # no hint that cannot help
    stats = finishes(lambda: file_stats(tmp_path / "zero.txt", tmp_path))
    assert stats.error.startswith("not a regular file") and stats.bytes == 0


def test_a_folder_that_cannot_be_listed_is_named(workspace, monkeypatch) -> None:
    locked = workspace.data_dir / "locked"
    locked.mkdir()
    (locked / "secret.txt").write_text("unseen\n")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # what chmod 000 does, for root too
    corpus = Corpus.scan(workspace.data_dir)
    assert [(p.path, p.error) for p in corpus.problems] == [("locked", "folder cannot be read (Permission denied)")]
    assert [f.path for f in corpus.files] == ["b.md", "stories/a.txt"]


def unreadable_folder_problems(base: Path) -> dict[str, str | None]:
    """The problems Corpus.scan names in `base`, as a user who cannot read a chmod 000 folder sees them: root
    reads it anyway, so as root the scan runs in a forked child that has become `nobody` first."""
    if os.geteuid() != 0:
        return {p.path: p.error for p in Corpus.scan(base).problems}
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: drop root, scan, report, leave without running pytest's teardown
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            problems = {p.path: p.error for p in Corpus.scan(base).problems}
            os.write(write, json.dumps(problems).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read()
    os.waitpid(child, 0)
    return json.loads(answer)


def test_an_unreadable_folder_is_named() -> None:
    base = Path(tempfile.mkdtemp(prefix="slm-locked-"))  # in /tmp, where the user `nobody` can reach it
    try:
        base.chmod(0o755)
        (base / "a.txt").write_text("readable\n")
        (base / "a.txt").chmod(0o644)
        locked = base / "locked"
        locked.mkdir()
        (locked / "secret.txt").write_text("unseen\n")
        locked.chmod(0)
        assert unreadable_folder_problems(base) == {"locked": "folder cannot be read (Permission denied)"}
    finally:
        (base / "locked").chmod(0o755)
        shutil.rmtree(base)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_decoded(tmp_path, encoding) -> None:
    text = "Grüße aus Köln, 漢字 and 🙂.\n" * 2000 + "The end, no newline"
    raw = ("\ufeff" if encoding == "utf-16-be" else "") + text
    (tmp_path / "wide.txt").write_bytes(raw.encode(encoding))
    stats = file_stats(tmp_path / "wide.txt", tmp_path)
    assert (stats.error, stats.chars, stats.lines, stats.documents) == (None, len(text), 2000, 1)
    assert stats.sha == hashlib.blake2b(raw.encode(encoding), digest_size=16).hexdigest()  # the bytes' hash
    assert abs(stats.est_tokens - len(text.encode("utf-8")) // 4) <= 1  # (UTF-8 counts its mark)
    corpus = Corpus.scan(tmp_path)
    assert "".join(corpus.texts("train", 0.1, 0)) + "".join(corpus.texts("val", 0.1, 0)) == text


def test_utf16_across_block_boundaries_and_jsonl(tmp_path) -> None:
    text = "a🙂b é\n" * 10
    (tmp_path / "x.txt").write_text(text, encoding="utf-16")
    for size in (1, 3, 5, 7):  # cuts inside code units and surrogate pairs
        assert "".join(decoded(tmp_path / "x.txt", chunk_bytes=size)) == text
    records = [{"text": f"record {i} ü"} for i in range(5)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), "utf-32")
    stats = file_stats(tmp_path / "r.jsonl", tmp_path)
    assert (stats.error, stats.documents, stats.lines) == (None, 5, 5)
    texts = [next(chunks) for path, _, chunks in Corpus.scan(tmp_path).documents() if path == "r.jsonl"]
    assert texts == [r["text"] for r in records]


def test_nul_bytes_without_a_byte_order_mark_are_still_binary(tmp_path) -> None:
    (tmp_path / "u16.txt").write_bytes("no mark".encode("utf-16-le"))
    (tmp_path / "nul.txt").write_bytes("\ufeffmark, then NUL: \0".encode("utf-16"))
    assert file_stats(tmp_path / "u16.txt", tmp_path).error == "binary file (contains NUL bytes)"
    assert file_stats(tmp_path / "nul.txt", tmp_path).error == "binary file (contains NUL bytes)"
    (tmp_path / "bad.txt").write_bytes(codecs.BOM_UTF16_LE + b"a\x00\x00\xdcb\x00")  # a lone surrogate
    assert file_stats(tmp_path / "bad.txt", tmp_path).error == "not UTF-16 text (bad byte at offset 4)"


def test_a_long_line_is_read_in_bounded_pieces(tmp_path) -> None:
    text = "word " * 700_000 + "x" * (3 * CHUNK_BYTES)  # 3.5 MB of words, then 3 MB without a space
    (tmp_path / "line.txt").write_text(text)
    pieces = [p for _, _, chunks in Corpus.scan(tmp_path).documents() for p in chunks]
    assert "".join(pieces) == text
    assert max(map(len, pieces)) <= CHUNK_BYTES
    assert all(p.endswith("word") for p in pieces[:3])  # cut before a space
    assert file_stats(tmp_path / "line.txt", tmp_path).documents == 1


def test_pieces_end_after_a_line_break_or_before_a_space() -> None:
    assert list(text_pieces(["ab\ncd", "ef\n", "g"], size=100)) == ["ab\n", "cdef\n", "g"]
    assert list(text_pieces(["one two  three four"], size=8)) == ["one two", "  three", " four"]
    assert list(text_pieces(["abcdefgh", "ij"], size=4)) == ["abcd", "efgh", "ij"]  # no space: cut anywhere
    assert list(line_blocks(["{}\n{", "}\nxxxxxxxx", "xx", "x\n{}\n"], limit=5)) == ["{}\n", "{}\n", None, "{}\n"]


def test_a_jsonl_line_too_long_to_read_is_skipped(tmp_path) -> None:
    lines = [
        json.dumps({"text": "short"}),
        json.dumps({"text": "x" * (RECORD_CHARS + 2 * CHUNK_BYTES)}),
        json.dumps({"text": "after"}),
    ]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    stats = file_stats(tmp_path / "r.jsonl", tmp_path)
    assert (stats.documents, stats.skipped_records) == (2, 1)
    texts = [next(chunks) for _, _, chunks in Corpus.scan(tmp_path).documents()]
    assert texts == ["short", "after"]


def test_cutting_before_a_space_keeps_the_tokens() -> None:
    from core.tokenizer.bpe import train_tokenizer
    from core.train.token_cache import _pieces

    line = make_text(400, seed=5).replace("\n", " ") + "  two spaces,\tand a tab. 12345 67890!"
    tok = train_tokenizer([make_text(300, seed=4)], vocab_size=300)
    whole = tok.encode(line)
    for pieces in (list(text_pieces([line], size=50)), list(_pieces(line, size=50))):
        assert len(pieces) > 10 and "".join(pieces) == line
        assert [i for p in pieces for i in tok.encode(p)] == whole
    blind = [line[i : i + 50] for i in range(0, len(line), 50)]  # cut anywhere: the tokens change
    assert [i for p in blind for i in tok.encode(p)] != whole
