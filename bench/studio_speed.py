"""The studio's cost, side by side in one run: training from the studio vs headless, first paint, key latency.

    python bench/studio_speed.py [--steps 400] [--rounds 3] [--part all|studio|runs]

1. Tokens/s of the toy preset trained headless (the Trainer alone) and the same run started from the
   studio's Train section (the app running headless, rendering its monitor). Target: studio >= 95%.
2. Time to first paint of `slm`: spawned in a pseudo-terminal, until the header is drawn.
3. Key-press latency while a run trains (a separate run): from sending `l` (log scale) to the end of
   the loss plot's redraw.
4. The Runs view at 160x48: reading 5 runs of --run-steps steps (first read, then a refresh that reads only
   what the files gained); the overlay's redraw and a key's time to paint with 1 run (the baseline) and the
   5 runs overlaid, raw and smoothed (target < 100 ms); a key's time to paint while two `slm train` runs
   train in other processes, beside the same with nothing training (target < 100 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pty
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import ModelConfig, TrainConfig, preset
from core.runs.table import list_runs
from core.train.events import StepMetrics
from core.train.trainer import Trainer
from core.workspace import Workspace
from tui.app import StudioApp
from tui.widgets.runs.overlay import OverlayPlot
from tui.widgets.train.loss_plot import LossPlot

ROOT = Path(__file__).resolve().parents[1]
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


MODEL = {"vocab_size": 2048, "context": 64, "n_layer": 4, "n_head": 4, "n_kv_head": 4, "n_embd": 128}


def write_run(root: Path, name: str, steps: int, seed: int) -> None:
    """A finished run of `steps` steps with an eval every 100, as the trainer writes it."""
    run_dir = root / "checkpoints" / name
    run_dir.mkdir(parents=True)
    info = {"id": name, "name": name, "objective": "lm", "created": f"2026-12-01T10:0{seed}:00", "model": MODEL,
            "train": {"lr": 1e-3 * (seed + 1), "batch_size": 16}, "params": 1066112, "lineage": []}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(info), encoding="utf-8")
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as f:
        for step in range(1, steps + 1):
            loss = 2.0 + 6.0 / (1 + step / 500) + 0.1 * ((step * 7919 + seed) % 13) / 13
            f.write(json.dumps({"event": "StepMetrics", "time": 0, "step": step, "loss": loss, "lr": 1e-3,
                                "tokens_seen": step * 1024, "tokens_per_s": 9000.0, "elapsed_s": step * 0.1,
                                "progress": step / steps, "eta_s": 0.0, "grad_norm": 1.0}) + "\n")  # fmt: skip
            if step % 100 == 0:
                f.write(json.dumps({"event": "EvalMetrics", "step": step, "val_loss": loss, "val_ppl": 1.0,
                                    "val_bpb": loss / 2, "best_val_loss": loss, "elapsed_s": step * 0.1}) + "\n")  # fmt: skip
        f.write(json.dumps({"event": "RunEnded", "step": steps, "reason": "finished"}) + "\n")


@contextlib.contextmanager
def overlay_builds() -> Iterator[list[tuple[float, float]]]:
    """(end time, seconds) of each canvas build of the Runs view's plot during the block."""
    builds: list[tuple[float, float]] = []
    original = OverlayPlot.render

    def timed_render(plot):
        drawn = plot._drawn
        result = original(plot)
        if plot._drawn != drawn:
            builds.append((time.perf_counter(), plot.build_seconds))
        return result

    OverlayPlot.render = timed_render
    try:
        yield builds
    finally:
        OverlayPlot.render = original


async def open_runs(app: StudioApp, pilot) -> None:
    await pilot.press("7")
    while app.current_mode != "runs" or app.screen.reading:
        await pilot.pause(0.05)
    await pilot.pause()


async def key_latencies(pilot, builds: list[tuple[float, float]], presses: int, gap: float = 0.0) -> list[float]:
    """Milliseconds from sending `x` (the next x axis: a full redraw of the plot) to the end of that redraw;
    also the redraws' own times, appended to `builds` as they happen."""
    out = []
    for _ in range(presses):
        sent, before = time.perf_counter(), len(builds)
        await pilot.press("x")
        while len(builds) == before and time.perf_counter() - sent < 5:
            await pilot.pause(0.005)
        if len(builds) > before:
            out.append((builds[before][0] - sent) * 1000)
        await asyncio.sleep(gap)
    return out


def _ms(values: list[float]) -> str:
    values = sorted(values)
    return f"median {statistics.median(values):6.1f} ms  max {values[-1]:6.1f} ms" if values else "no redraws seen"


async def overlay_figures(ws: Workspace, runs: int, presses: int) -> None:
    app = StudioApp(ws)
    with overlay_builds() as builds:
        async with app.run_test(size=(160, 48)) as pilot:
            await open_runs(app, pilot)
            plot = app.screen.query_one(OverlayPlot)
            await pilot.press("m")  # train loss: every step, the longest curves
            for _ in range(runs):
                await pilot.press("space", "down")
            for label, smoothing_keys in (("raw", []), ("smoothed 0.9", ["right_square_bracket"] * 4)):
                await pilot.press(*smoothing_keys)
                await pilot.pause(0.2)
                first = len(builds)
                keys = await key_latencies(pilot, builds, presses)
                points = sum(len(c.series["loss"]) for _, c in plot.runs)
                print(
                    f"  {len(plot.runs)} run(s), {points:>7,} points, {label:<13} redraw {_ms([1000 * b for _, b in builds[first:]])}"
                    f" · key to redrawn {_ms(keys)}"
                )


async def live_figures(ws: Workspace, presses: int, label: str) -> None:
    """Key latency in the Runs view with every run marked, keys at a person's pace while refreshes come in."""
    app = StudioApp(ws)
    with overlay_builds() as builds:
        async with app.run_test(size=(160, 48)) as pilot:
            await open_runs(app, pilot)
            screen = app.screen
            screen.marked = [r.name for r in screen.rows]
            screen.show_rows(screen.rows)
            await pilot.pause(2.5)  # a refresh or two
            keys = await key_latencies(pilot, builds, presses, gap=0.3)
            statuses = ", ".join(f"{r.name} {r.status} at step {r.steps}" for r in screen.rows)
            print(f"  {label:<24} key to redrawn {_ms(keys)} ({statuses})")


def runs_view(steps: int, presses: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        ws.ensure()
        for i in range(5):
            write_run(ws.root, f"run-{i}", steps, i)
        start = time.perf_counter()
        curves: dict = {}
        list_runs(ws, curves)
        first = time.perf_counter() - start
        start = time.perf_counter()
        list_runs(ws, curves)
        print(
            f"reading 5 runs of {steps:,} steps: first {first * 1000:.0f} ms, refresh {(time.perf_counter() - start) * 1000:.1f} ms"
        )
        print("the Runs view at 160x48, train loss against the x axis a key selects:")
        asyncio.run(overlay_figures(ws, 1, presses))
        asyncio.run(overlay_figures(ws, 5, presses))

    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.resolve(tmp)
        slm = [sys.executable, "-m", "tui.cli", "--workspace", tmp]
        subprocess.run([*slm, "data", "--add-sample"], check=True, capture_output=True, cwd=ROOT)
        train = ["train", "--preset", "toy", "--max-minutes", "0.75", "--threads", "1", "--eval-interval", "25"]
        procs = [
            subprocess.Popen(
                [*slm, *train, "--name", f"live-{i}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            for i in range(2)
        ]
        try:
            deadline = time.time() + 60
            while time.time() < deadline and not all(
                (ws.run_dir(f"live-{i}") / "live.json").exists() for i in range(2)
            ):
                time.sleep(0.5)
            time.sleep(8)  # past the tokenizer and into the steps
            print("the Runs view, both runs marked:")
            asyncio.run(live_figures(ws, presses, "two runs training"))
        finally:
            for p in procs:
                p.wait()
        asyncio.run(live_figures(ws, presses, "the same runs, finished"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-steps", type=int, default=20000, help="steps of each run in the Runs view part")
    parser.add_argument("--presses", type=int, default=15, help="key presses timed in the Runs view part")
    parser.add_argument("--part", choices=["all", "studio", "runs"], default="all")
    args = parser.parse_args()
    if args.part != "studio":
        runs_view(args.run_steps, args.presses)
    if args.part == "runs":
        return
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
