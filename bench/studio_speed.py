"""The studio's cost, side by side in one run: training from the studio vs headless, first paint, key latency.

    python bench/studio_speed.py [--steps 400] [--rounds 3]

1. Tokens/s of the toy preset trained headless (the Trainer alone) and the same run started from the
   studio's Train section (the app running headless, rendering its monitor). Target: studio >= 95%.
2. Time to first paint of `slm`: spawned in a pseudo-terminal, until the header is drawn.
3. Key-press latency while a run trains (a separate run): from sending `l` to the end of its handler,
   which redraws the loss plot.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pty
import select
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.events import StepMetrics
from core.train import Trainer
from core.workspace import Workspace
from tui.app import StudioApp
from tui.screens.train import TrainScreen

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"


def make_workspace(root: Path) -> Workspace:
    ws = Workspace.resolve(root)
    ws.ensure()
    if CORPUS.exists():
        (ws.data_dir / CORPUS.name).symlink_to(CORPUS)
    else:
        from core.sample import write_sample_corpus

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
    events: list[StepMetrics] = []
    model, train = configs(steps)
    Trainer(ws, name, model, train, lambda e: events.append(e) if isinstance(e, StepMetrics) else None).run()
    return tokens_per_second(events)


async def studio(ws: Workspace, steps: int, name: str, press: bool) -> tuple[float, list[float]]:
    """Train from the studio; with `press`, press `l` (log scale: a plot redraw) now and then, timing each key.

    A key's latency runs from just before it is sent to the end of its handler (a full plot redraw).
    """
    app = StudioApp(ws)
    events: list[StepMetrics] = []
    latencies: list[float] = []
    handled: list[float] = []
    original = TrainScreen.action_log_scale

    def timed_action(screen) -> None:
        original(screen)
        handled.append(time.perf_counter())

    TrainScreen.action_log_scale = timed_action
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
                    if len(handled) > before:
                        latencies.append(handled[-1] - sent)
    finally:
        TrainScreen.action_log_scale = original
    return tokens_per_second(events), latencies


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
    with tempfile.TemporaryDirectory() as tmp:
        ws = make_workspace(Path(tmp))
        for i in range(args.rounds):  # alternate, so machine noise hits both alike
            alone.append(headless(ws, args.steps, f"headless-{i}"))
            in_studio.append(asyncio.run(studio(ws, args.steps, f"studio-{i}", press=False))[0])
        _, latencies = asyncio.run(studio(ws, args.steps, "studio-keys", press=True))
        paints = [first_paint(ws.root) for _ in range(3)]
    a, s = statistics.median(alone), statistics.median(in_studio)
    print(f"toy preset, {args.steps} steps, steady tokens/s (median of {args.rounds} alternating rounds)")
    print(f"  {'headless Trainer':<28} {a:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in alone)}")
    print(f"  {'from the studio':<28} {s:>9.0f}   rounds: {' '.join(f'{x:.0f}' for x in in_studio)}")
    print(f"  studio / headless: {100 * s / a:.1f}% (target >= 95%)")
    print(
        f"time to first paint of `slm`: {' '.join(f'{p:.2f}' for p in paints)} s (median {statistics.median(paints):.2f})"
    )
    if latencies:
        ms = sorted(1000 * x for x in latencies)
        print(
            f"key press while training, to the end of a plot redraw ({len(ms)} presses): "
            f"median {statistics.median(ms):.0f} ms, max {ms[-1]:.0f} ms"
        )


if __name__ == "__main__":
    main()
