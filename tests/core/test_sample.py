from __future__ import annotations

import json

from core.data import Corpus
from core.sample import docstring_documents, topic_documents, write_sample_corpus


def test_topics_are_english_documents() -> None:
    docs = list(topic_documents())
    assert len(docs) > 50
    assert all(len(d["text"]) >= 200 for d in docs)
    assert any("for" in d["title"] for d in docs)


def test_docstrings_are_read_without_importing(tmp_path) -> None:
    pkg = tmp_path / "lib"
    pkg.mkdir()
    (pkg / "boom.py").write_text(
        '"""' + "A module that would explode if imported. " * 10 + '"""\nraise SystemExit(1)\n'
    )
    docs = list(docstring_documents(pkg))
    assert [d["title"] for d in docs] == ["boom"]


def test_written_corpus_is_usable(tmp_path) -> None:
    files = write_sample_corpus(tmp_path / "data")
    assert all(f.exists() for f in files)
    first = json.loads(files[0].read_text().splitlines()[0])
    assert set(first) == {"title", "text"}
    corpus = Corpus.scan(tmp_path / "data")
    assert corpus.total_bytes > 2_000_000 and not corpus.problems
    assert corpus.hash_small_docs()
