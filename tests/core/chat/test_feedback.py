"""The ratings database: stored, listed, exported, safe against crashes and concurrent writers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.chat.feedback import FeedbackDB, Rating, preference_pairs
from core.errors import SLMError

ROOT = Path(__file__).resolve().parents[3]


def rating(question: str, answer: str, value: int, **kw) -> Rating:
    return Rating([{"role": "user", "content": question}], answer, value, model="run/best", **kw)


def test_ratings_are_stored_changed_listed_and_exported(tmp_path) -> None:
    db = FeedbackDB(tmp_path / "checkpoints" / "feedback.sqlite")
    assert db.ratings() == []
    ids = db.add(rating("Hi?", "Hello.", 1, sampling={"temperature": 0.8}), rating("Hi?", "Go away.", -1))
    db.set_rating(ids[1], 1)
    db.set_rating(ids[1], -1)
    stored = db.ratings()
    assert [(r.id, r.prompt, r.answer, r.rating) for r in stored] == [
        (ids[0], "Hi?", "Hello.", 1),
        (ids[1], "Hi?", "Go away.", -1),
    ]
    assert stored[0].sampling == {"temperature": 0.8} and stored[0].time and stored[0].mode == "chat"
    with sqlite3.connect(db.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    out = db.export(tmp_path / "ratings.jsonl")
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [x["answer"] for x in lines] == ["Hello.", "Go away."] and lines[0]["prompt"] == "Hi?"
    with pytest.raises(SLMError, match="no rating #99"):
        db.set_rating(99, 1)
    with pytest.raises(SLMError, match=r"\+1 \(good\) or -1"):
        rating("Hi?", "x", 0)


def test_pairs_are_good_against_bad_answers_to_the_same_conversation() -> None:
    pairs = preference_pairs(
        [
            rating("A?", "good1", 1),
            rating("A?", "bad", -1),
            rating("A?", "good2", 1),
            rating("B?", "only good", 1),
            rating("A?", "bad", -1, mode="completion"),  # another way of showing the conversation
        ]
    )
    assert [(p.conversation[0]["content"], p.chosen, p.rejected) for p in pairs] == [
        ("A?", "good1", "bad"),
        ("A?", "good2", "bad"),
    ]


WRITER = """
import json, sys, time
from core.chat import feedback

db = feedback.FeedbackDB(sys.argv[1])
make = lambda i, v: feedback.Rating([{"role": "user", "content": f"q{i}"}], f"a{i}", v)
if sys.argv[2] == "crash":
    db.add(*[make(i, 1) for i in range(3)])
    calls, dumps = [0], json.dumps

    def slow_dumps(*args, **kwargs):  # called twice per row: halfway through a 50-row transaction, wait to be killed
        calls[0] += 1
        if calls[0] == 50:
            print("mid-write", flush=True)
            time.sleep(60)
        return dumps(*args, **kwargs)

    feedback.json.dumps = slow_dumps
    db.add(*[make(i, -1) for i in range(50)])
else:
    for i in range(int(sys.argv[2])):
        db.add(make(i, 1))
"""


def writer(path: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), mode], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )


def test_a_writer_killed_mid_transaction_leaves_the_earlier_ratings_readable(tmp_path) -> None:
    path = tmp_path / "feedback.sqlite"
    process = writer(path, "crash")
    try:
        assert process.stdout.readline().strip() == "mid-write"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    db = FeedbackDB(path)
    assert [(r.answer, r.rating) for r in db.ratings()] == [("a0", 1), ("a1", 1), ("a2", 1)]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.add(rating("after", "the crash", 1))  # the killed writer's lock is gone
    assert len(db.ratings()) == 4


def test_concurrent_writers_lose_nothing(tmp_path) -> None:
    path = tmp_path / "feedback.sqlite"
    processes = [writer(path, "40") for _ in range(2)]
    db = FeedbackDB(path)
    for i in range(40):
        db.add(rating(f"main{i}", "x", -1))
    assert all(p.wait(timeout=60) == 0 for p in processes)
    assert len(db.ratings()) == 120


@pytest.mark.parametrize(
    "column, value",
    [
        ("conversation", "{not json"),
        ("conversation", '{"role": "user"}'),
        ("conversation", '[{"role": "robot", "content": "hi"}]'),
        ("conversation", b"\xff\xfe"),
        ("sampling", "[1, 2]"),
        ("answer", b"a blob"),
        ("rating", 0),
        ("mode", "shouting"),
    ],
)
def test_a_damaged_row_is_left_out_and_named(tmp_path, column, value, capsys) -> None:
    db = FeedbackDB(tmp_path / "checkpoints" / "feedback.sqlite")
    db.add(*[Rating([{"role": "user", "content": f"q{i}"}], f"a{i}", 1) for i in range(3)])
    with sqlite3.connect(db.path) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(f"UPDATE ratings SET {column} = ? WHERE id = 2", (value,))
    problems: list[str] = []
    assert [r.answer for r in db.ratings(problems)] == ["a0", "a2"]
    assert len(problems) == 1 and problems[0].startswith("rating #2 is unreadable")
    from tui.cli import main

    assert main(["--workspace", str(tmp_path), "feedback"]) == 0
    out, err = capsys.readouterr()
    assert "warning: rating #2 is unreadable" in err and "2 ratings" in out


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_a_damaged_database_is_one_line(tmp_path, damage, capsys) -> None:
    db = FeedbackDB(tmp_path / "checkpoints" / "feedback.sqlite")
    db.add(*[Rating([{"role": "user", "content": f"q{i}" * 500}], f"a{i}" * 500, 1) for i in range(50)])
    data = db.path.read_bytes()
    db.path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a database" * 100)
    for wal in db.path.parent.glob("feedback.sqlite-*"):
        wal.unlink()
    from tui.cli import main

    assert main(["--workspace", str(tmp_path), "feedback"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1
