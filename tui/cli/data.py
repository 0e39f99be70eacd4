"""`slm data` and `slm tokenize`: the corpus and its tokenizer."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tui.format import count, size


def cmd_data(args: argparse.Namespace, ws) -> None:
    from core.data.corpus import Corpus, FileStats, discover, file_stats
    from core.data.sample import write_sample_corpus

    if args.add_sample:
        files = write_sample_corpus(ws.data_dir)
        print(f"wrote the sample corpus: {', '.join(str(f.relative_to(ws.root)) for f in files)}")
    if not ws.data_dir.is_dir():
        print(f"no data folder at {ws.data_dir}: create it, or run `slm data --add-sample`")
        return
    errors = "replace" if args.decode_errors == "replace" else "strict"
    problems: list[FileStats] = []
    paths = discover(ws.data_dir, problems=problems)
    stats = [file_stats(p, ws.data_dir, errors) for p in paths]  # in corpus order: the first copy is the original
    corpus = Corpus(ws.data_dir, [f for f in stats if not f.error], [*problems, *(f for f in stats if f.error)])
    dups = corpus.duplicates
    rows = sorted([*stats, *problems], key=lambda r: Path(r.path).parts)
    if not rows:
        print(f"{ws.data_dir} holds no .txt, .md or .jsonl files: add some, or run `slm data --add-sample`")
        return
    print(f"{'file':<48} {'size':>9} {'lines':>9} {'docs':>6} {'~tokens':>9}")
    for r in rows:
        note = f"  ! {r.error}" if r.error else ""
        if r.skipped_records:
            note += f"  ({r.skipped_records} lines without text skipped)"
        if r.chat_records:
            note += f"  ({r.chat_records} chat records, kept for fine-tuning)"
        if dropped := dups.by_file.get(r.path):
            n = dropped.documents
            what = f"a copy of {dropped.of}" if dropped.of else f"{n} duplicate record{'s' * (n != 1)}"
            note += f"  (= {what}, {size(dropped.bytes)}: left out of training)"
        print(f"{r.path:<48} {size(r.bytes):>9} {r.lines:>9} {r.documents:>6} {count(r.est_tokens):>9}{note}")
    usable = [r for r in rows if not r.error]
    print(f"{len(usable)} usable of {len(rows)} files, {size(sum(r.bytes for r in usable))}")
    if dups.copies:
        print(f"{dups.documents} exact duplicate documents ({size(dups.bytes)}) are left out of training: "
              "--keep-duplicates (slm train) keeps them")  # fmt: skip
    if corpus.files:
        _print_sources(corpus, args.mix or {})


def _print_sources(corpus, weights: dict[str, float]) -> None:
    """Each source's share of training and the epochs of it a toy run sees."""
    from core.config import TrainConfig, preset_tokens
    from core.data.mixture import epochs_text, resolve_mixture

    sources, weights, origin = resolve_mixture(corpus, weights)
    run, val = preset_tokens("toy"), TrainConfig().val_fraction
    how = f"by the weights from {origin}" if origin else "by size (weights: --mix, or data/mix.json)"
    print(f"\nsources, drawn {how}:\n{'source':<38} {'~tokens':>9} {'share':>6} {'epochs/toy run':>15} {'weight':>7}")
    for s in sources:
        weight = f"{s.weight:g}" if s.weight is not None else "-"
        print(
            f"{s.name:<38} {count(s.est_tokens):>9} {s.share:>6.0%} {epochs_text(s.epochs(run, val)):>15} {weight:>7}"
        )
    print(f"(a toy run trains on {count(run)} tokens)")


def cmd_tokenize(args: argparse.Namespace, ws) -> None:
    from core.data.corpus import Corpus
    from core.tokenizer.named import measure, save_named, train_on_corpus

    corpus = Corpus.scan(ws.data_dir, args.data, args.decode_errors or "skip")
    _report_problems(corpus)
    print(f"training a {args.vocab_size}-token tokenizer on {size(corpus.total_bytes)} of text ...")
    tok = train_on_corpus(corpus, args.vocab_size, args.min_frequency, args.val_fraction, args.split_seed)
    bpt = measure(tok, corpus, args.val_fraction, args.split_seed)
    path = save_named(ws, args.name, tok, {"bytes_per_token": round(bpt, 4), "data": args.data or ["."]})
    print(f"saved {path}: {tok.vocab_size} tokens, {bpt:.2f} bytes per token on validation text")


def _report_problems(corpus) -> None:
    for p in corpus.problems:
        print(f"warning: skipped {p.path}: {p.error}", file=sys.stderr)
