"""Exact duplicate documents: found across files and records, left out of training, never on both sides."""

from __future__ import annotations

import json

from core.data.corpus import Corpus
from core.data.duplicates import TextDigest, digest_of
from core.tokenizer.bpe import Tokenizer
from core.train.token_cache import encode_corpus
from tests.conftest import make_text


def test_the_digest_ignores_line_endings_whitespace_and_how_the_text_was_cut() -> None:
    assert digest_of("The cat\r\nsees  the moon.\n") == digest_of("The cat\nsees the moon.")
    assert digest_of("the cat") != digest_of("thecat") and digest_of("a") != digest_of("b")
    pieces = TextDigest()
    for piece in ("The c", "at sees", " the", " moon", "."):
        pieces.update(piece)
    assert pieces.digest() == digest_of("The cat sees the moon.")


def write(ws, name: str, text: str) -> None:
    path = ws.data_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def side_texts(corpus: Corpus) -> dict[str, str]:
    out = {"train": "", "val": ""}
    for side, text in corpus.split(0.1, 0):
        out[side] += text or ""
    return out


def test_a_copied_file_and_repeated_records_are_left_out_of_the_split(workspace) -> None:
    records = [{"text": "One small record."}, {"text": "Another one."}]
    write(workspace, "notes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    unique = side_texts(Corpus.scan(workspace.data_dir))
    story = (workspace.data_dir / "stories" / "a.txt").read_text(encoding="utf-8")
    write(workspace, "zz/a-again.txt", story.replace("\n", "\r\n"))  # the same text, other line endings
    records.insert(1, {"text": "One  small record.\n"})
    write(workspace, "notes.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    corpus = Corpus.scan(workspace.data_dir)
    dups = corpus.duplicates
    assert dups.copies == {("zz/a-again.txt", 0), ("notes.jsonl", 1)}
    assert dups.by_file["zz/a-again.txt"].of == "stories/a.txt" and dups.by_file["notes.jsonl"].documents == 1
    assert dups.bytes == len(story.replace("\n", "\r\n").encode()) + len(b"One  small record.\n")
    assert side_texts(corpus) == unique  # the same training and validation text as without the copies


def test_kept_duplicates_train_every_copy_and_validate_none(workspace) -> None:
    records = [{"text": make_text(3, seed=s)} for s in range(300)] + [{"text": make_text(3, seed=7)}] * 2
    write(workspace, "many.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    kept = Corpus.scan(workspace.data_dir, ["many.jsonl"], keep_duplicates=True)
    assert len(kept.duplicates.copies) == 2
    texts = side_texts(kept)
    repeated = make_text(3, seed=7)
    assert texts["train"].count(repeated) == 3 and repeated not in texts["val"]
    dropped = side_texts(Corpus.scan(workspace.data_dir, ["many.jsonl"]))
    assert (dropped["train"] + dropped["val"]).count(repeated) == 1


def test_a_copy_adds_no_training_tokens(workspace, tokenizer_file) -> None:
    tok = Tokenizer.load(tokenizer_file)
    alone = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    write(workspace, "zz/b-copy.md", (workspace.data_dir / "b.md").read_text(encoding="utf-8"))
    with_copy = encode_corpus(Corpus.scan(workspace.data_dir), tok, workspace.cache_dir, 0.1, 0)
    assert (with_copy.train.tokens, with_copy.val.tokens) == (alone.train.tokens, alone.val.tokens)
    kept = encode_corpus(Corpus.scan(workspace.data_dir, keep_duplicates=True), tok, workspace.cache_dir, 0.1, 0)
    assert kept.train.tokens > alone.train.tokens and kept.train.path != with_copy.train.path


def test_the_other_spaces_are_every_space_python_knows_but_space_and_line_break() -> None:
    from core.data.duplicates import ASCII_OTHER_SPACE, OTHER_SPACE, has_other_space

    spaces = {chr(c) for c in range(0x110000) if chr(c).isspace()} - {" ", "\n"}
    assert {chr(c) for c in range(0x110000) if OTHER_SPACE.fullmatch(chr(c))} == spaces
    assert set(ASCII_OTHER_SPACE) == {c for c in spaces if c.isascii()}
    assert (
        all(has_other_space(f"a b\n{c}") for c in spaces)
        and not has_other_space("a b\nc")
        and not has_other_space("é ")
    )


def test_whitespace_is_normalised_as_split_and_join_would() -> None:
    import random

    from core.data.duplicates import normalised

    rng = random.Random(0)
    for _ in range(300):
        text = "".join(
            rng.choice(["a", "bc", " ", "  ", "\n", "\n\n", "   \n ", "\t", "\u3000", "é"]) for _ in range(30)
        )
        assert normalised(text) == " ".join(text.split())
