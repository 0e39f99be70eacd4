"""Several runs' curves over each other, with a legend in the runs' colours (see `tui.plots`)."""

from __future__ import annotations

import time

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from core.runs.curves import Axis, Curves, Metric
from tui.plots import overlay


class OverlayPlot(PlotextPlot):
    """Redrawn only when the runs' points, the options, the size or the theme changed; `build_seconds` says
    what the last drawing cost."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs: list[tuple[str, Curves]] = []
        self.colours: list[str] | None = None
        self.metric: Metric = "val_bpb"
        self.axis: Axis = "step"
        self.smoothing = 0.0
        self._drawn: tuple | None = None
        self._rendered: RenderResult | None = None
        self.build_seconds = 0.0

    def show(self, runs: list[tuple[str, Curves]], colours: list[str] | None = None) -> None:
        self.runs, self.colours = runs, colours
        self.refresh()

    def _key(self) -> tuple:
        versions = tuple((name, curves.version) for name, curves in self.runs)
        return (self.size, self.app.theme, versions, self.colours, self.metric, self.axis, self.smoothing)

    def render(self) -> RenderResult:
        key = self._key()
        if self._drawn != key:
            start = time.perf_counter()
            width = max(self.size.width, 20)
            overlay(self.plt, self.runs, self.metric, self.axis, self.smoothing, width, self.colours)
            self._rendered, self._drawn = super().render(), key
            self.build_seconds = time.perf_counter() - start
        return self._rendered
