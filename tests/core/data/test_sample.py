from __future__ import annotations

import json

from core.data.corpus import Corpus
from core.data.sample import (
    docstring_documents,
    sample_conversations,
    topic_documents,
    write_sample_chat,
    write_sample_corpus,
)


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


def test_sample_conversations_ask_about_sections_and_docstrings(tmp_path) -> None:
    topic = {
        "title": "for",
        "text": 'The "for" statement\n*******************\n\n   for_stmt ::= "for" target_list\n\n'
        "The for statement is used to iterate over the elements of a sequence.  More text follows here.\n",
    }
    docs = {
        "title": "json",
        "text": "Module json\n\nJSON is a lightweight data interchange format used by many programs.\n\n"
        "json.dumps (function)\n\nSerialize ``obj`` to a JSON formatted :class:`str`.\n\n"
        "json._private (function)\n\nNot for users: private helpers are left out of the set.",
    }
    found = [(c["messages"][0]["content"], c["messages"][1]["content"]) for c in sample_conversations([topic], [docs])]
    assert [answer for _, answer in found] == [
        "The for statement is used to iterate over the elements of a sequence.",
        "JSON is a lightweight data interchange format used by many programs.",
        "Serialize obj to a JSON formatted str.",
    ]
    assert 'the "for" statement' in found[0][0] and "json module" in found[1][0] and "json.dumps" in found[2][0]

    out = tmp_path / "data" / "sample"
    out.mkdir(parents=True)
    (out / "python-topics.jsonl").write_text(json.dumps(topic) + "\n", encoding="utf-8")
    (out / "python-docstrings.jsonl").write_text(json.dumps(docs) + "\n", encoding="utf-8")
    path = write_sample_chat(tmp_path / "data")
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert Corpus.scan(tmp_path / "data").files[0].chat_records == 3  # not pretraining text
