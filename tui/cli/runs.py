"""Runs side by side: `slm runs` (every run in a table, or its lineage) and `slm compare` (final figures, the
settings that differ, and the curves laid over each other)."""

from __future__ import annotations

import argparse
import json
import sys

from core.errors import SLMError
from tui.format import clip, clock, count


def _bpb(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "-"


def cmd_runs(args: argparse.Namespace, ws) -> None:
    from core.runs.lineage import lineage, tree_lines
    from core.runs.table import list_runs, sort_rows

    rows = [
        r
        for r in list_runs(ws)
        if (not args.status or r.status in args.status) and (not args.kind or r.kind in args.kind)
    ]
    if args.json:
        print(json.dumps([r.to_json() for r in sort_rows(rows, args.sort)], indent=1))
        return
    if not rows:
        print(
            f"no runs in {ws.checkpoints_dir}{' like that' if args.status or args.kind else ''}: train one with `slm train`"
        )
        return
    if args.tree:
        print("\n".join(tree_lines(lineage(rows))))
        return
    print(
        f"{'status':<9} {'run':<28} {'kind':<9} {'shape':<20} {'params':>7} {'steps':>7} {'tokens':>7} {'wall':>8} {'bits/byte':>9}  from"
    )
    for r in sort_rows(rows, args.sort):
        if r.error:
            print(f"{'-':<9} {clip(r.name, 28):<28} unreadable: {r.error}")
            continue
        print(
            f"{r.status:<9} {clip(r.name, 28):<28} {r.kind:<9} {r.shape:<20} {count(r.params):>7} {r.steps:>7} "
            f"{count(r.tokens):>7} {clock(r.seconds):>8} {_bpb(r.best_bpb):>9}  {' + '.join(r.parents) or '-'}"
        )


def cmd_compare(args: argparse.Namespace, ws) -> None:
    from core.runs.curves import Curves
    from core.runs.lineage import config_diff
    from core.runs.table import read_run

    rows, curves = [], []
    for name in args.runs:
        run_dir = ws.run_dir(name)
        if not (run_dir / "run.json").exists():
            raise SLMError(f"no run {name!r} in {ws.checkpoints_dir} (see `slm runs`)")
        curve = Curves(run_dir / "metrics.jsonl")
        row = read_run(run_dir, curve)
        if row.error:
            raise SLMError(f"run {name!r} cannot be read: {row.error}")
        rows.append(row)
        curves.append(curve)
    _table(
        ["", *(r.name for r in rows)],
        [
            ["status", *(r.status for r in rows)],
            ["kind", *(r.kind for r in rows)],
            ["shape", *(r.shape for r in rows)],
            ["params", *(count(r.params) for r in rows)],
            ["steps", *(str(r.steps) for r in rows)],
            ["tokens seen", *(count(r.tokens) for r in rows)],
            ["wall time", *(clock(r.seconds) for r in rows)],
            ["train loss", *(_loss(c.last["loss"]) for c in curves)],
            ["val bits/byte", *(_bpb(c.last["val_bpb"]) for c in curves)],
            ["best bits/byte", *(_bpb(r.best_bpb) for r in rows)],
        ],
    )
    diff = config_diff(rows)
    print()
    if diff:
        _table(["differs", *(r.name for r in rows)], [[k, *(_value(v) for v in vs)] for k, vs in diff.items()])
    else:
        print("settings: the same in every run")
    if sys.stdout.isatty() and not args.no_plot:
        import plotext

        from tui.plots import overlay

        columns, lines = plotext.terminal_size()
        overlay(
            plotext, list(zip((r.name for r in rows), curves, strict=True)), args.metric, args.x, args.smooth, columns
        )
        plotext.plotsize(columns, max(12, min(30, (lines or 24) - 4)))
        plotext.theme("clear")  # the terminal's own colours
        plotext.show()


def _loss(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _value(value: object) -> str:
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]], width: int = 28) -> None:
    """Columns as wide as their longest cell, at most `width`."""
    first = max(len(header[0]), *(len(r[0]) for r in rows))
    width = min(width, max(len(v) for line in [header, *rows] for v in line[1:]))
    for line in [header, *rows]:
        print(f"{line[0]:<{first}}  " + "  ".join(f"{clip(v, width):>{width}}" for v in line[1:]))
