"""Mixture weights: parsing, the sources they make, their shares, and the batches and evaluations that follow them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.data.corpus import Corpus
from core.data.mixture import MIX_FILE, mixture, parse_mix, read_mix_file, resolve_mixture, write_mix_file
from core.errors import SLMError
from core.tokenizer.bpe import Tokenizer
from core.train.token_cache import encode_corpus
from core.train.tokens import MixedBatches
from tests.conftest import make_text


def shares(sources) -> dict[str, float]:
    return {s.name: round(s.share, 6) for s in sources}


def test_weights_parse_from_the_flag_and_bad_ones_are_refused() -> None:
    assert parse_mix("books=0.5,wiki=0.2") == {"books": 0.5, "wiki": 0.2}
    assert parse_mix("./books/=1 notes.txt=0") == {"books": 1.0, "notes.txt": 0.0}
    for bad, said in [
        ("books", "is not NAME=WEIGHT"),
        ("books=lots", "must be a number"),
        ("books=-1", "is negative"),
        ("books=nan", "finite"),
        ("books=0,wiki=0", "sum to zero"),
        ("../x=1", "not a file or folder under data/"),
    ]:
        with pytest.raises(SLMError, match=said):
            parse_mix(bad)


def test_shares_follow_size_the_weights_given_and_split_the_rest_by_size() -> None:
    files = {"books/a.txt": 600, "books/poems/p.txt": 200, "wiki/w.txt": 100, "notes.txt": 100}
    assert shares(mixture(files, {})) == {"books": 0.8, "wiki": 0.1, "notes.txt": 0.1}
    weighted = mixture(files, {"wiki": 0.5})  # the other half by size: books 8/9 of it, notes 1/9
    assert shares(weighted) == {"books": round(0.5 * 8 / 9, 6), "wiki": 0.5, "notes.txt": round(0.5 / 9, 6)}
    nested = mixture(files, {"books/poems": 2, "books": 1, "wiki": 1, "notes.txt": 0})  # all weighted: relative
    assert shares(nested) == {"books": 0.25, "books/poems": 0.5, "wiki": 0.25, "notes.txt": 0.0}
    assert [s.files for s in nested][:2] == [["books/a.txt"], ["books/poems/p.txt"]]


def test_weights_that_cannot_be_met_are_one_line_errors() -> None:
    files = {"books/a.txt": 600, "wiki/w.txt": 100, "empty.txt": 0}
    for weights, said in [
        ({"news": 0.5}, "there is no file or folder news in data/"),
        ({"books": 0.8, "wiki": 0.7}, "sum to 1.5, leaving nothing for empty.txt"),
        ({"empty.txt": 1}, "empty.txt has no usable text"),
        ({"bad.txt": 1}, "bad.txt has no usable text"),
        ({"books": 0, "wiki": 0, "empty.txt": 0}, "leave every source at zero"),
    ]:
        with pytest.raises(SLMError, match=said):
            mixture(files, weights, known=["bad.txt"])


def test_the_weights_file_round_trips_and_a_damaged_one_is_refused(tmp_path) -> None:
    assert read_mix_file(tmp_path) == {}
    write_mix_file(tmp_path, {"wiki": 0.2, "books": 0.5})
    assert read_mix_file(tmp_path) == {"books": 0.5, "wiki": 0.2}
    write_mix_file(tmp_path, {})
    assert not (tmp_path / MIX_FILE).exists()
    for damaged, said in [("{oops", "not valid JSON"), ("[1, 2]", "object of weights"), ('{"a": "x"}', "finite")]:
        (tmp_path / MIX_FILE).write_text(damaged, encoding="utf-8")
        with pytest.raises(SLMError, match=said):
            read_mix_file(tmp_path)


def three_sources(ws) -> None:
    for name, seed, n in (("books/a.txt", 1, 900), ("wiki/w.txt", 2, 300), ("notes.md", 3, 200)):
        path = ws.data_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make_text(n, seed=seed), encoding="utf-8")


@pytest.fixture
def mixed(tmp_path, tokenizer_file):
    from core.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "mixed")
    ws.ensure()
    three_sources(ws)
    corpus = Corpus.scan(ws.data_dir)
    data = encode_corpus(corpus, Tokenizer.load(tokenizer_file), ws.cache_dir, 0.1, 0)
    return ws, corpus, data


def test_the_token_files_know_where_each_source_lies(mixed, tokenizer_file) -> None:
    ws, corpus, data = mixed
    sources, _, _ = resolve_mixture(corpus, {})
    tok = Tokenizer.load(tokenizer_file)
    for side, file in (("train", data.train), ("val", data.val)):
        spans = data.spans(side, sources)
        assert sum(end - start for found in spans.values() for start, end in found) == file.tokens
        text = tok.decode(file.array()[slice(*spans["wiki"][0])].tolist()).removesuffix("<|endoftext|>")
        assert len(text) > 100 and text in (ws.data_dir / "wiki" / "w.txt").read_text(encoding="utf-8")
    meta = json.loads(next(ws.cache_dir.glob("*/meta.json")).read_text(encoding="utf-8"))
    assert [row[0] for row in meta["files"]] == ["books/a.txt", "notes.md", "wiki/w.txt"]


def test_mixed_batches_draw_each_source_in_its_share(mixed) -> None:
    _, corpus, data = mixed
    sources, _, _ = resolve_mixture(corpus, {"books": 0.75, "wiki": 0.25, "notes.md": 0})
    spans = data.spans("train", sources)
    batches = MixedBatches(data.train, spans, {s.name: s.share for s in sources}, 4000, 16, 0, torch.device("cpu"))
    starts = batches.starts(data.train.tokens - 16)
    inside = {name: sum(((starts >= a) & (starts < b)).sum() for a, b in found) for name, found in spans.items()}
    assert inside["notes.md"] == 0 and abs(inside["books"] / 4000 - 0.75) < 0.03
    assert inside["books"] + inside["wiki"] == 4000
    again = MixedBatches(data.train, spans, {s.name: s.share for s in sources}, 4000, 16, 0, torch.device("cpu"))
    assert np.array_equal(again.starts(data.train.tokens - 16), starts)  # the seed is the data position


def test_each_source_validates_on_its_own_text_and_the_overall_pools_them(mixed, tiny_configs) -> None:
    from core.evaluate import evaluate_sources, evaluate_tokens, first_tokens
    from core.model import GPT

    _, corpus, data = mixed
    model_cfg, _ = tiny_configs()
    torch.manual_seed(0)
    model = GPT(model_cfg)
    lengths = torch.tensor(Tokenizer.load(tiny_configs()[1].tokenizer).byte_lengths())
    sources, _, _ = resolve_mixture(corpus, {})
    spans, val = data.spans("val", sources), data.val.array()
    result = evaluate_sources(model, val, spans, lengths, 4, 300)
    assert set(result.sources) == {"books", "notes.md", "wiki"}
    alone = evaluate_tokens(model, first_tokens(val, spans["wiki"], 100 + 33), lengths, 4, 100)
    assert result.sources["wiki"] == pytest.approx(alone.bpb)
    assert min(result.sources.values()) <= result.bpb <= max(result.sources.values())
    single = evaluate_sources(model, val, {"all": [(0, data.val.tokens)]}, lengths, 4, 300)
    assert single.sources == {} and single.bpb == evaluate_tokens(model, val, lengths, 4, 300).bpb


def test_a_tokenizer_learns_from_every_source_a_bounded_share_each(tmp_path, monkeypatch) -> None:
    import core.tokenizer.named as named
    from core.workspace import Workspace

    ws = Workspace.resolve(tmp_path / "tok")
    ws.ensure()
    texts = {}
    for name, seed, records in (("wiki", 1, 3000), ("mine", 2, 30)):  # one source 100 times the other
        (ws.data_dir / name).mkdir()
        texts[name] = {make_text(2, seed=seed * 10_000 + i) for i in range(records)}
        lines = [json.dumps({"text": text}) for text in sorted(texts[name])]
        (ws.data_dir / name / "r.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    seen: list[str] = []
    monkeypatch.setattr(named, "TRAIN_CHARS", 20_000)
    monkeypatch.setattr(named, "train_tokenizer", lambda texts, *a, **k: seen.extend(texts))
    corpus = Corpus.scan(ws.data_dir)
    # by size, `mine` gives its 1% of the 20k characters; weighted 0.5, all its training text (~1.5k) and `wiki`
    # its half, 10k: each source at most its share
    for weights, mine_chars, wiki_chars in (
        ({}, (100, 400), (19_000, 20_100)),
        ({"mine": 0.5}, (1_000, 2_000), (10_000, 10_100)),
    ):
        seen.clear()
        named.train_on_corpus(corpus, 320, 2, 0.1, 0, sources=resolve_mixture(corpus, weights)[0])
        mine = sum(len(t) for t in seen if t in texts["mine"])
        wiki = sum(len(t) for t in seen if t in texts["wiki"])
        assert mine_chars[0] <= mine <= mine_chars[1] and wiki_chars[0] <= wiki <= wiki_chars[1], (weights, mine, wiki)
