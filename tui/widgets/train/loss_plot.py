"""The live loss plot: train loss, and validation loss or bits per byte, over steps."""

from __future__ import annotations

import time

from textual.app import RenderResult
from textual_plotext import PlotextPlot

from core.train.monitor import RunHistory, downsample


class LossPlot(PlotextPlot):
    """Redrawn from a RunHistory snapshot; each series is cut to about the plot's width in points.

    Building a plotext canvas costs tens of milliseconds at large sizes, so the rendered text is kept
    until the data, the size, the theme or the options change; `build_seconds` says what the last
    build cost, so the screen can space redraws out.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self.show_bpb = False
        self._history: RunHistory | None = None
        self._revision = 0  # bumped by each replot
        self._drawn: tuple | None = None
        self._rendered: RenderResult | None = None
        self.build_seconds = 0.0

    def show(self, history: RunHistory) -> None:
        self._history = history
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        history = self._history
        limit = max(self.size.width, 20)
        plt.xlabel("step")
        if history is None or not history.steps:  # (plotext fails on a log scale without data)
            plt.title("loss: no run yet (s starts one, a attaches to one)")
        else:
            plt.yscale("log" if self.log_scale else "linear")
            xs, ys = downsample(history.steps, history.losses, limit)
            plt.plot(xs, ys, label="train loss", marker="braille")
            if history.val_steps:
                values = history.val_bpb if self.show_bpb else history.val_losses
                label = "val bits/byte (right)" if self.show_bpb else "val loss"
                vx, vy = downsample(history.val_steps, values, limit)
                plt.plot(vx, vy, label=label, marker="braille", yside="right" if self.show_bpb else "left")
            plt.title(f"{history.run}: loss{' (log)' if self.log_scale else ''}")
        self._revision += 1
        self.refresh()

    def render(self) -> RenderResult:
        key = (self.size, self.app.theme, self._revision)
        if self._drawn != key:
            start = time.perf_counter()
            self._rendered, self._drawn = super().render(), key
            self.build_seconds = time.perf_counter() - start
        return self._rendered
