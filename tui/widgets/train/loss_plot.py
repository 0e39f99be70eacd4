"""The live loss plot: train loss, and validation loss or bits per byte, over steps."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from core.monitor import RunHistory, downsample


class LossPlot(PlotextPlot):
    """Redrawn from a RunHistory snapshot; each series is cut to about twice the plot's width."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.log_scale = False
        self.show_bpb = False
        self._history: RunHistory | None = None

    def show(self, history: RunHistory) -> None:
        self._history = history
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        history = self._history
        limit = max(2 * self.size.width, 20)
        plt.xlabel("step")
        plt.yscale("log" if self.log_scale else "linear")
        if history is None or not history.steps:
            plt.title("loss: no run yet (s starts one, a attaches to one)")
            self.refresh()
            return
        xs, ys = downsample(history.steps, history.losses, limit)
        plt.plot(xs, ys, label="train loss", marker="braille")
        if history.val_steps:
            values = history.val_bpb if self.show_bpb else history.val_losses
            label = "val bits/byte" if self.show_bpb else "val loss"
            vx, vy = downsample(history.val_steps, values, limit)
            plt.plot(vx, vy, label=label, marker="braille")
        scale = " (log)" if self.log_scale else ""
        plt.title(f"{history.run}: loss{scale}")
        self.refresh()
