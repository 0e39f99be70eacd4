from __future__ import annotations

from tui.format import PreparationLine


def test_the_encoding_line_shows_speed_and_time_left_from_the_stages_first_report() -> None:
    clock = iter([0.0, 0.5, 10.0, 20.0, 21.0])
    line = PreparationLine(now=lambda: next(clock))
    assert line("scan", 3, 10) == "scanning files: 30%"
    assert line("encode", 100 << 20, 1000 << 20) == "encoding tokens: 10%"  # resumed: counted from here
    assert line("encode", 200 << 20, 1000 << 20) == "encoding tokens: 20% · 10.5 MB/s · 1:16 left"
    assert line("encode", 1000 << 20, 1000 << 20) == "encoding tokens: 100%"
    assert line("tokenizer", 0, 0) == "training the tokenizer"
