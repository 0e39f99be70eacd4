"""Mixture weights: how much of each source of `data/` training batches draw from.

A source is a top-level entry of `data/` (a folder such as `books/`, or a file such as `notes.txt`), or any
file or folder below one that is given a weight of its own (`books/poems`): a file belongs to the longest
weighted path that holds it, else to its top-level entry. Without weights, sources are drawn in proportion to
their size (every training window equally likely, as a corpus without sources). Weights come from the
`--mix books=0.5,wiki=0.2` flag, else from `data/mix.json` (`{"books": 0.5, "wiki": 0.2}`, which the
studio's Data section writes). A weight is a share of the training tokens: sources left unweighted split what
the given weights leave (1 - their sum) in proportion to their size; when every source is weighted, the
weights are relative and need not sum to 1. A weight of 0 leaves a source out of training (it still validates).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core import atomic
from core.data.corpus import Corpus
from core.errors import SLMError

MIX_FILE = "mix.json"


@dataclass
class Source:
    """One source of the training mixture: its files (paths under data/), their size and its share of batches."""

    name: str
    files: list[str] = field(default_factory=list)
    est_tokens: int = 0  # the tokens of its text (duplicates left out), estimated from its size
    weight: float | None = None  # as given; None: by size
    share: float = 0.0  # of the training tokens, once the weights are resolved

    def epochs(self, run_tokens: int, val_fraction: float) -> float:
        """How many times a run of `run_tokens` training tokens sees this source's training text (estimated)."""
        return self.share * run_tokens / max(1.0, self.est_tokens * (1 - val_fraction))


def clean_name(name: str) -> str:
    """A source name as a path under data/: forward slashes, no `./` or trailing slash."""
    parts = PurePosixPath(name.strip().replace("\\", "/")).parts
    if not parts or parts[0] in ("/", "..") or ".." in parts:
        raise SLMError(f"mix: {name!r} is not a file or folder under data/")
    return "/".join(p for p in parts if p != ".")


def parse_mix(text: str) -> dict[str, float]:
    """Weights from `books=0.5,wiki=0.2` (commas or spaces between them)."""
    weights: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        name, sep, value = item.rpartition("=")
        if not sep or not name:
            raise SLMError(f"mix: {item!r} is not NAME=WEIGHT (for example books=0.5)")
        try:
            weights[clean_name(name)] = float(value)
        except ValueError:
            raise SLMError(f"mix: the weight of {name} must be a number, not {value!r}") from None
    return check_weights(weights, "mix")


def check_weights(weights: dict[str, float], where: str) -> dict[str, float]:
    """Refuse a weight that is not a finite number of at least 0, and weights that are all 0."""
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise SLMError(f"{where}: the weight of {name} must be a finite number, not {weight!r}")
        if weight < 0:
            raise SLMError(f"{where}: the weight of {name} is negative ({weight:g}): weights are at least 0")
    if weights and not any(weights.values()):
        raise SLMError(f"{where}: the weights sum to zero: give at least one source a weight above 0")
    return {name: float(weight) for name, weight in weights.items()}


def read_mix_file(data_dir: Path) -> dict[str, float]:
    """The weights saved in data/mix.json ({} when there is none); a damaged file is a one-line error."""
    path = Path(data_dir) / MIX_FILE
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        raise SLMError(f"{path} is not valid JSON ({e}): fix or delete it") from None
    if not isinstance(value, dict):
        raise SLMError(f'{path} must hold an object of weights, such as {{"books": 0.5}}')
    return check_weights({clean_name(str(k)): v for k, v in value.items()}, str(path))


def write_mix_file(data_dir: Path, weights: dict[str, float]) -> None:
    """Save the weights to data/mix.json (atomically); no weights remove the file."""
    path = Path(data_dir) / MIX_FILE
    if not weights:
        path.unlink(missing_ok=True)
        return
    atomic.write_json(path, dict(sorted(check_weights(weights, str(path)).items())))


def _under(path: str, name: str) -> bool:
    """Whether `path` is the file or folder `name` or lies inside it."""
    return path == name or path.startswith(name + "/")


def _holds(name: str, paths: Iterable[str]) -> bool:
    return any(_under(p, name) for p in paths)


def source_of(path: str, named: Iterable[str]) -> str:
    """The source a file belongs to: the longest of the `named` paths that holds it, else its top-level entry."""
    holders = [n for n in named if _under(path, n)]
    return max(holders, key=len) if holders else path.split("/", 1)[0]


def mixture(files: dict[str, int], weights: dict[str, float], known: Iterable[str] = ()) -> list[Source]:
    """The sources of a corpus, from its usable files (path -> estimated tokens, in corpus order) and the weights, with
    each source's share of training. `known`: other paths under data/ (files that cannot be used), so that a
    weight on them says they hold no usable text rather than that they do not exist."""
    known = set(known)
    for name in weights:
        if not _holds(name, [*files, *known]):
            raise SLMError(f"mix: there is no file or folder {name} in data/ (or it is not chosen for training)")
    sources: dict[str, Source] = {}
    for path, size in files.items():
        name = source_of(path, weights)
        source = sources.setdefault(name, Source(name, weight=weights.get(name)))
        source.files.append(path)
        source.est_tokens += size
    for name, weight in weights.items():
        if (name not in sources or not sources[name].est_tokens) and weight > 0:
            raise SLMError(f"mix: {name} has no usable text to draw from: give it weight 0 or remove its weight")
    _share(list(sources.values()))
    return list(sources.values())


def _share(sources: list[Source]) -> None:
    weighted = [s for s in sources if s.weight is not None]
    rest = [s for s in sources if s.weight is None]
    given = sum(s.weight or 0.0 for s in weighted)
    if not rest:  # every source weighted: relative weights
        if not given:
            raise SLMError("mix: the weights leave every source at zero: give at least one a weight above 0")
        for s in sources:
            s.share = (s.weight or 0.0) / given
        return
    if given > 1 + 1e-9:
        names = ", ".join(s.name for s in rest[:3]) + (" ..." if len(rest) > 3 else "")
        raise SLMError(
            f"mix: the weights sum to {given:g}, leaving nothing for {names}: weight those too, or make the sum at most 1"
        )
    left, rest_size = max(0.0, 1.0 - given), sum(s.est_tokens for s in rest)
    for s in weighted:
        s.share = s.weight or 0.0
    for s in rest:  # (sources too small to estimate share alike)
        s.share = left * (s.est_tokens / rest_size if rest_size else 1 / len(rest))


def resolve_mixture(
    corpus: Corpus, weights: dict[str, float], saved: bool = True
) -> tuple[list[Source], dict[str, float], str]:
    """The sources of a corpus (see `mixture`) under `weights` (from --mix) or, when none are given and `saved`,
    under those saved in data/mix.json, less those on entries of data/ left out of the selection. Returns the
    sources, the weights used, and where they came from ("--mix", the file, or "" for by size)."""
    dropped = corpus.duplicates.by_file
    files = {f.path: max(0, f.est_tokens - (d.bytes // 4 if (d := dropped.get(f.path)) else 0)) for f in corpus.files}
    known = [p.path for p in corpus.problems]
    origin = "--mix" if weights else ""
    if not weights and saved:
        saved_weights = read_mix_file(corpus.data_dir)
        there = [*files, *known]
        weights = {n: w for n, w in saved_weights.items() if _holds(n, there) or not (corpus.data_dir / n).exists()}
        origin = str(corpus.data_dir / MIX_FILE) if weights else ""
    return mixture(files, weights, known), weights, origin


def epochs_text(epochs: float) -> str:
    """Epochs as the summaries show them: 0.38, 2.3, 260."""
    return f"{epochs:.2g}" if epochs < 10 else f"{epochs:,.0f}"


def weights_line(weights: dict[str, float]) -> str:
    return ", ".join(f"{name}={weight:g}" for name, weight in weights.items())


def shares_line(sources: list[Source], spans: dict[str, list[tuple[int, int]]], run_tokens: float | None) -> str:
    """Each source's share of training (by its training tokens when no source is weighted) and, given the
    run's length in tokens, how many epochs of it that is; `spans`: where each source's training tokens lie."""
    tokens = {name: sum(end - start for start, end in found) for name, found in spans.items()}
    total, weighted = sum(tokens.values()), any(s.weight is not None for s in sources)
    parts = []
    for s in sources:
        share, n = (s.share if weighted else tokens.get(s.name, 0) / max(total, 1)), tokens.get(s.name, 0)
        epochs = f" ({epochs_text(share * run_tokens / n)} epochs)" if run_tokens and n else ""
        parts.append(f"{s.name} {share:.0%}{epochs}")
    return " · ".join(parts)
