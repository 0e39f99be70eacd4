"""Human-readable numbers and one-line text, shared by the command line and the studio."""

from __future__ import annotations

import time
from collections.abc import Callable


def size(n: float) -> str:
    """Bytes: 512 B, 1.5 KB, 2.3 MB, 1.1 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def count(n: float) -> str:
    """Counts: 950, 12.3k, 1.07M, 1.10B."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return f"{n:.0f}"


def clock(seconds: float) -> str:
    """Durations: 0:42, 12:05, 1:02:03."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, s = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{s:02d}" if hours else f"{minutes}:{s:02d}"


def clip(text: str, width: int) -> str:
    """`text` on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


PREPARATION = {"scan": "scanning files", "tokenizer": "training the tokenizer", "encode": "encoding tokens"}


class PreparationLine:
    """The line for a run's preparation stage (scan, tokenizer, encode): its share done and, while encoding,
    the speed and the time left, measured from the stage's first report (a resumed encoding counts from there)."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.stage = ""
        self.start = (0.0, 0)

    def __call__(self, stage: str, done: int, total: int) -> str:
        t = self.now()
        if stage != self.stage:
            self.stage, self.start = stage, (t, done)
        label = PREPARATION.get(stage, stage)
        if not total:
            return label
        line = f"{label}: {100 * done / total:.0f}%"
        elapsed, moved = t - self.start[0], done - self.start[1]
        if stage == "encode" and elapsed >= 1 and moved > 0 and done < total:
            rate = moved / elapsed
            line += f" · {size(rate)}/s · {clock((total - done) / rate)} left"
        return line
