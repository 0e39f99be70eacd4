"""The studio's cost, side by side in one run: training from the studio vs headless, first paint, key latency.

    python bench/studio_speed.py [--steps 400] [--rounds 3]

1. Tokens/s of the toy preset trained headless (the Trainer alone) and the same run started from the
   studio's Train section (the app running headless, rendering its monitor). Target: studio >= 95%.
2. Time to first paint of `slm`: spawned in a pseudo-terminal, until the header is drawn.
3. Key-press latency while a run trains (a separate run): from sending `l` (log scale) to the end of
   the loss plot's redraw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import resource
import select
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.train.events import StepMetrics
from core.train.trainer import Trainer
from core.workspace import Workspace
from tui.app import StudioApp
from tui.widgets.train.loss_plot import LossPlot

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def make_workspace(root: Path) -> Workspace:
    ws = Workspace.resolve(root)
    ws.ensure()
    if CORPUS.exists():
        (ws.data_dir / CORPUS.name).symlink_to(CORPUS)
    else:
        from core.data.sample import write_sample_corpus

        write_sample_corpus(ws.data_dir)
    return ws


def configs(steps: int) -> tuple[ModelConfig, TrainConfig]:
    toy = preset("toy")
    return ModelConfig(**toy.model), TrainConfig(**{**toy.train, "max_steps": steps})


def tokens_per_second(events: list[StepMetrics], skip: int = 20) -> float:
    """Steady-state throughput: tokens over the loop's clock after the first `skip` steps."""
    first, last = events[skip], events[-1]
    return (last.tokens_seen - first.tokens_seen) / (last.elapsed_s - first.elapsed_s)


def headless(ws: Workspace, steps: int, name: str = "headless") -> float:
    """The Trainer alone, in a thread of its own that ends with the run.

    Not in this process's main thread: a thread that has run torch keeps an OpenMP team, and with two
    teams alive on a 2-core machine libgomp stops spinning between parallel regions, which makes the
    studio's training thread ~13% slower (and `slm train`, alone in its process, is not affected).
    A fresh thread trains as fast as `slm train`'s main thread.
    """
    events: list[StepMetrics] = []
    model, train = configs(steps)

    def run() -> None:
        Trainer(ws, name, model, train, lambda e: events.append(e) if isinstance(e, StepMetrics) else None).run()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return tokens_per_second(events)


async def studio(ws: Workspace, steps: int, name: str, press: bool) -> tuple[float, list[float]]:
    """Train from the studio; with `press`, press `l` (log scale: a plot redraw) now and then, timing each key.

    A key's latency runs from just before it is sent to the end of the plot's next canvas build (the
    handler only marks the plot for a redraw; the build happens when the screen renders it).
    """
    app = StudioApp(ws)
    events: list[StepMetrics] = []
    latencies: list[float] = []
    handled: list[float] = []
    original = LossPlot.render

    def timed_render(plot):
        drawn = plot._drawn
        result = original(plot)
        if plot._drawn != drawn:
            handled.append(time.perf_counter())
        return result

    LossPlot.render = timed_render
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.press("3")
            await pilot.pause()
            model, train = configs(steps)

            def make(on_event, control):
                def both(event):
                    if isinstance(event, StepMetrics):
                        events.append(event)
                    on_event(event)

                return Trainer(ws, name, model, train, both, control)

            app.bridge.start_training(make)
            while app.bridge.training:
                await asyncio.sleep(0.7)
                if press and len(events) > 20 and app.bridge.training:
                    sent, before = time.perf_counter(), len(handled)
                    await pilot.press("l")
                    await pilot.wait_for_scheduled_animations()
                    await pilot.pause()
                    if len(handled) > before:
                        latencies.append(handled[before] - sent)
    finally:
        LossPlot.render = original
    return tokens_per_second(events), latencies


@contextlib.contextmanager
def context_switches(totals: dict[str, int], key: str) -> Iterator[None]:
    """Add the process's voluntary context switches during the block to totals[key]."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    yield
    totals[key] += resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before


def first_paint(workspace: Path, timeout: float = 20.0) -> float:
    """Seconds from spawning `slm` in a pty until its header text is on the screen."""
    start = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM="xterm-256color", COLUMNS="120", LINES="36")
        os.execvp(sys.executable, [sys.executable, "-m", "tui.cli", "--workspace", str(workspace)])
    seen = b""
    try:
        while time.perf_counter() - start < timeout:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:
                    break
                if b"SLM Studio" in seen:
                    return time.perf_counter() - start
        return float("nan")
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    alone, in_studio, latencies = [], [], []
    switches: dict[str, int] = {"headless": 0, "studio": 0}
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp))
        for i in range(args.rounds):  # alternate, so machine noise hits both alike
            with context_switches(switches, "headless"):
                alone.append(headless(ws, args.steps, f"headless-{i}"))
            with context_switches(switches, "studio"):
                in_studio.append(asyncio.run(studio(ws, args.steps, f"studio-{i}", press=False))[0])
        _, latencies = asyncio.run(studio(ws, args.steps, "studio-keys", press=True))
        paints = [first_paint(ws.root) for _ in range(3)]
    a, s = statistics.median(alone), statistics.median(in_studio)
    print(f"toy preset, {args.steps} steps, steady tokens/s (median of {args.rounds} alternating rounds)")
    print(f"  {'headless Trainer':<28} {a:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in alone)}")
    print(f"  {'from the studio':<28} {s:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in in_studio)}")
    print(f"  studio / headless: {100 * s / a:.1f}% (target >= 95%)")
    steps = args.rounds * args.steps
    print(
        f"  voluntary context switches per step (OpenMP threads sleeping instead of spinning): "
        f"headless {switches['headless'] / steps:.0f}, studio {switches['studio'] / steps:.0f}"
    )
    print(
        f"time to first paint of `slm`: {' '.join(f'{p:.2f}' for p in paints)} s (median {statistics.median(paints):.2f})"
    )
    if latencies:
        ms = sorted(1000 * x for x in latencies)
        print(
            f"key press while training, to the end of the plot's redraw ({len(ms)} presses): "
            f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
