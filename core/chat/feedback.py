"""Ratings of chat answers, kept in a SQLite database in the workspace: `checkpoints/feedback.sqlite`.

A rating stores the conversation before the answer (JSON), its last user message (the prompt), the answer,
the rating (+1 good, -1 bad), the model, the sampling settings (JSON), the chat mode and the time. Two answers
to the same conversation, one rated good and one bad, make a preference pair for `slm dpo`.

The studio and the command line may write at the same moment: the database runs in WAL mode with a busy
timeout, every write is one `BEGIN IMMEDIATE … COMMIT` transaction, and `synchronous=FULL` makes a commit
durable. A crash or kill in the middle of a write leaves every committed rating readable and no half-written one.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core import atomic
from core.data.conversations import ROLES, Message, last_user_message
from core.errors import SLMError
from core.workspace import Workspace

FILE_NAME = "feedback.sqlite"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS ratings (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    model TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('chat', 'completion')),
    prompt TEXT NOT NULL,
    conversation TEXT NOT NULL,
    answer TEXT NOT NULL,
    rating INTEGER NOT NULL CHECK (rating IN (-1, 1)),
    sampling TEXT NOT NULL
)
"""
COLUMNS = "id, time, model, mode, prompt, conversation, answer, rating, sampling"


@dataclass
class Rating:
    """One rated answer. `conversation` holds the messages before the answer (the system prompt included)."""

    conversation: list[Message]
    answer: str
    rating: int  # +1 good, -1 bad
    model: str = ""
    sampling: dict[str, Any] = field(default_factory=dict)
    mode: str = "chat"  # chat | completion: how the conversation was shown to the model
    time: str = ""
    id: int | None = None

    def __post_init__(self) -> None:
        if self.rating not in (-1, 1):
            raise SLMError("a rating is +1 (good) or -1 (bad)")
        if self.mode not in ("chat", "completion"):
            raise SLMError("a rating's mode is chat or completion")

    @property
    def prompt(self) -> str:
        """The last user message: what the answer answers."""
        return last_user_message(self.conversation)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "prompt": self.prompt}


class FeedbackDB:
    """The ratings database. Each call opens its own connection, so any thread or process may use it."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    @classmethod
    def for_workspace(cls, workspace: Workspace) -> FeedbackDB:
        return cls(workspace.checkpoints_dir / FILE_NAME)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as e:
            raise SLMError(f"cannot open the ratings database {self.path} ({e})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                with self._transaction(conn):
                    conn.execute(SCHEMA)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            yield conn
        except sqlite3.DatabaseError as e:
            raise SLMError(f"the ratings database {self.path} cannot be used ({e})") from None
        finally:
            conn.close()

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        """BEGIN IMMEDIATE takes the write lock at once (waiting up to the busy timeout): no deadlock later."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def add(self, *ratings: Rating) -> list[int]:
        """Store ratings in one transaction (all or none); returns their ids."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        ids = []
        with self._connect() as conn, self._transaction(conn):
            for r in ratings:
                cursor = conn.execute(
                    "INSERT INTO ratings (time, model, mode, prompt, conversation, answer, rating, sampling) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        r.time or now,
                        r.model,
                        r.mode,
                        r.prompt,
                        json.dumps(r.conversation, ensure_ascii=False),
                        r.answer,
                        r.rating,
                        json.dumps(r.sampling, ensure_ascii=False),
                    ),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def set_rating(self, rating_id: int, rating: int) -> None:
        """Change a stored rating (a user who changed their mind)."""
        if rating not in (-1, 1):
            raise SLMError("a rating is +1 (good) or -1 (bad)")
        with self._connect() as conn, self._transaction(conn):
            if conn.execute("UPDATE ratings SET rating = ? WHERE id = ?", (rating, rating_id)).rowcount != 1:
                raise SLMError(f"no rating #{rating_id} in {self.path}")

    def export(self, path: Path, ratings: list[Rating] | None = None) -> Path:
        """Write ratings (default: all) to `path` as JSON lines, atomically."""
        rows = self.ratings() if ratings is None else ratings
        atomic.write_text(path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in rows))
        return path

    def ratings(self, problems: list[str] | None = None) -> list[Rating]:
        """Every readable rating, oldest first (an empty list when there is no database yet). A damaged row
        (bad JSON, wrong types, a rating other than ±1) is left out, and said why in `problems` if given."""
        if not self.path.exists():
            return []
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {COLUMNS} FROM ratings ORDER BY id").fetchall()
        ratings = []
        for row in rows:
            try:
                ratings.append(_rating(row))
            except (SLMError, ValueError, TypeError) as e:  # JSON errors are ValueErrors
                if problems is not None:
                    problems.append(f"rating #{row[0]} is unreadable ({str(e).splitlines()[0]})")
        return ratings


def _rating(row: tuple) -> Rating:
    """A stored row as a Rating, every column checked."""
    rid, stamp, model, mode, _prompt, conversation, answer, rating, sampling = row
    messages, settings = json.loads(conversation), json.loads(sampling)
    well_formed = isinstance(messages, list) and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
    )
    if not well_formed:
        raise SLMError("its conversation is not a list of messages")
    if not (isinstance(settings, dict) and all(isinstance(x, str) for x in (answer, model, mode, stamp))):
        raise SLMError("a column has the wrong type")
    if not isinstance(rating, int) or isinstance(rating, bool):
        raise SLMError(f"rating {rating!r} is not +1 or -1")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    return Rating(messages, answer, rating, model=model, sampling=settings, mode=mode, time=stamp, id=rid)


@dataclass
class Pair:
    """A good and a bad answer to the same conversation, shown to the model in `mode`."""

    conversation: list[Message]
    mode: str
    chosen: str
    rejected: str

    @property
    def key(self) -> str:
        return prompt_key(self.conversation, self.mode)


def prompt_key(conversation: list[Message], mode: str) -> str:
    return json.dumps([mode, conversation], sort_keys=True)


def preference_pairs(ratings: list[Rating]) -> list[Pair]:
    """Every (good, bad) combination of distinct answers to the same conversation in the same mode."""
    groups: dict[str, tuple[Rating, set[str], set[str]]] = {}
    for r in ratings:
        _, good, bad = groups.setdefault(prompt_key(r.conversation, r.mode), (r, set(), set()))
        (good if r.rating > 0 else bad).add(r.answer)
    return [
        Pair(first.conversation, first.mode, chosen, rejected)
        for first, good, bad in groups.values()
        for chosen, rejected in itertools.product(sorted(good), sorted(bad))
        if chosen != rejected
    ]
