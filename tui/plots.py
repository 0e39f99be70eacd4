"""Runs' curves laid over each other on a plotext canvas: the same drawing for `slm compare` in a terminal and
the studio's Runs view (textual-plotext hands it a plotext-like `plt`). Textual is not imported here."""

from __future__ import annotations

from typing import Any

from core.runs.curves import AXIS_LABELS, METRIC_LABELS, Axis, Curves, Metric, smooth
from core.train.monitor import downsample

PALETTE = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "white")  # plotext's colour names
RICH_COLOURS = dict(
    zip(PALETTE, ("cyan", "dark_orange", "green", "magenta", "blue", "red", "yellow", "white"), strict=True)
)
RAW = "gray"  # the raw points under a smoothed curve


def overlay(
    plt: Any,
    runs: list[tuple[str, Curves]],
    metric: Metric,
    axis: Axis,
    smoothing: float,
    width: int,
    colours: list[str] | None = None,
) -> None:
    """Plot `metric` of each run against `axis`, each curve cut to about `width` points, in `colours` (plotext
    names; default: PALETTE in order); with `smoothing` above 0 the smoothed curves are drawn over their raw
    points."""
    plt.clear_data()
    plt.clear_figure()
    drawn = 0
    for i, (name, curves) in enumerate(runs):
        xs, ys = curves.points(metric, axis)
        if not xs:
            continue
        if smoothing > 0:
            plt.plot(*downsample(xs, ys, width), marker="dot", color=RAW)
            ys = smooth(ys, smoothing)
        plt.plot(
            *downsample(xs, ys, width),
            marker="braille",
            color=colours[i] if colours else PALETTE[i % len(PALETTE)],
            label=name,
        )
        drawn += 1
    plt.xlabel(AXIS_LABELS[axis])
    smoothed = f", smoothed {smoothing:.2f}" if smoothing > 0 else ""
    what = METRIC_LABELS[metric]
    plt.title(f"{what} by {AXIS_LABELS[axis]}{smoothed}" if drawn else f"{what}: no points yet in these runs")
