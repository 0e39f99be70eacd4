from __future__ import annotations

import numpy as np
import pytest

from core.data.corpus import Corpus
from core.tokenizer.bpe import Tokenizer
from core.train.tokens import encode_corpus, token_dtype
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
