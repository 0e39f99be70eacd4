"""The bridge: the only place the studio runs engine work, always in thread workers.

The App owns one Bridge. Widgets subscribe to it and receive messages (`tui.messages`) posted from the
worker threads; they never call the engine themselves. Training reports through `RunHistory`
(shared, locked) plus throttled `TrainingUpdated` messages, so a fast loop never floods the UI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.message_pump import MessagePump
from textual.worker import Worker, get_current_worker

from core.errors import Cancelled, SLMError
from core.train.events import Control, EvalMetrics, Progress, RunEnded, StepMetrics
from core.train.live import liveness
from core.train.monitor import MetricsTail, RunHistory
from core.workspace import Workspace
from tui.messages import (
    BranchEvent,
    GenerationDone,
    GenerationText,
    JobDone,
    JobFailed,
    JobProgress,
    ModelLoaded,
    TrainingFinished,
    TrainingUpdated,
)

UPDATE_INTERVAL = 1.0  # seconds between TrainingUpdated messages for routine step events
TEXT_INTERVAL = 0.04  # seconds between GenerationText messages


class Bridge:
    def __init__(self, app, workspace: Workspace) -> None:
        self.app = app
        self.workspace = workspace
        self.history = RunHistory()
        self.control: Control | None = None
        self.idle = threading.Event()  # set while no training thread is alive
        self.idle.set()
        self.attach_worker: Worker | None = None
        self.trainer: Any = None
        self.generator: Any = None  # core.chat.generate.Generator of the chat model
        self.model_path: Path | None = None
        self.dtype = "f32"  # the chat model's weights: f32 (exact) or int8 (core/chat/quantize.py)
        self.loading: Path | None = None  # the checkpoint being loaded for chat, if any
        self._load = 0
        self.generation_cancel = threading.Event()
        self._listeners: set[MessagePump] = set()
        self._last_update = 0.0
        self._request = 0

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(self, widget: MessagePump) -> None:
        self._listeners.add(widget)

    def unsubscribe(self, widget: MessagePump) -> None:
        self._listeners.discard(widget)

    def broadcast(self, make: Callable[[], Message]) -> None:
        """Post a fresh message to every subscriber (safe from any thread)."""
        for widget in list(self._listeners):
            widget.post_message(make())

    # -- generic jobs --------------------------------------------------------------------------

    def run_job(self, job: str, fn: Callable[[], Any], exclusive: bool = True, shown: bool = False) -> Worker:
        """Run `fn` in a thread; subscribers get JobDone(job, result), or JobFailed with the error. A failure
        also raises the studio's error toast, unless `shown` (a subscriber shows it where the user looks)."""

        def work() -> Any:
            try:
                result = fn()
            except Exception as e:
                error = one_line(e)
                self.broadcast(lambda: JobFailed(job, error))
                if shown:
                    return None
                raise
            self.broadcast(lambda: JobDone(job, result))
            return result

        return self.app.run_worker(work, name=job, group=job, thread=True, exclusive=exclusive, exit_on_error=False)

    def progress(self, job: str) -> Callable[[str, int, int], None]:
        return lambda stage, done, total: self.broadcast(lambda: JobProgress(job, stage, done, total))

    # -- training ------------------------------------------------------------------------------

    @property
    def training(self) -> bool:
        """True while a training thread is alive (including one asked to stop and not yet ended)."""
        return not self.idle.is_set()

    def start_training(self, make_trainer: Callable[[Callable[[Any], None], Control], Any]) -> None:
        """Start a run; `make_trainer(on_event, control)` builds the Trainer (new or resumed)."""
        if self.training:
            raise SLMError("a run is already training: stop it before starting another")
        self.detach()
        self.history = RunHistory(state="preparing")
        self.control = Control()
        control = self.control

        def work() -> None:
            end, error = None, None
            try:
                self.trainer = make_trainer(self._on_train_event, control)
                end = self.trainer.run()
            except Exception as e:
                error = one_line(e)
                self.history.apply(
                    RunEnded(self.history.last_step.step if self.history.last_step else 0, "error", None, error)
                )
                raise
            finally:
                self.idle.set()
                self.broadcast(TrainingUpdated)
                self.broadcast(lambda: TrainingFinished(end, error))

        self.idle.clear()
        self.app.run_worker(work, name="train", group="train", thread=True, exclusive=True, exit_on_error=False)

    def start_branches(self, train: Callable[[Callable[[Any], None], Callable[[], None]], Any]) -> None:
        """Train branches in processes: `train(on_event, on_poll)` runs `core.merge.pipeline.train_branches`.
        While they train the studio counts as training: stopping (or quitting) asks every branch process to save
        `latest` and stop. Subscribers get BranchEvent for each event, then JobDone("branch") or JobFailed."""
        if self.training:
            raise SLMError("a run is already training: stop it before starting branches")
        self.detach()
        self.control = control = Control()

        def poll() -> None:
            if control.stopped:  # train_branches passes one SIGINT to each branch process, then waits for them
                raise Cancelled("the branches were stopped: start them again to resume them")

        def work() -> Any:
            try:
                result = train(lambda event: self.broadcast(lambda: BranchEvent(event)), poll)
            except BaseException as e:
                error = one_line(e)
                self.broadcast(lambda: JobFailed("branch", error))
                raise
            finally:
                self.idle.set()
            self.broadcast(lambda: JobDone("branch", result))
            return result

        self.idle.clear()
        self.app.run_worker(work, name="branch", group="train", thread=True, exclusive=True, exit_on_error=False)

    def _on_train_event(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.broadcast(lambda: JobProgress("train", event.stage, event.done, event.total))
            return
        self.history.apply(event)
        now = time.monotonic()
        routine = isinstance(event, StepMetrics)
        if not routine or now - self._last_update >= UPDATE_INTERVAL or isinstance(event, EvalMetrics):
            self._last_update = now
            self.broadcast(TrainingUpdated)

    def pause(self) -> None:
        if self.control is not None and self.training:
            self.control.pause()

    def resume(self) -> None:
        if self.control is not None:
            self.control.resume()

    def stop(self) -> None:
        """Ask the run to stop; it saves `latest` first. The thread ends after the current step."""
        if self.control is not None:
            self.control.stop()

    def stop_and_wait(self, timeout: float | None = None) -> bool:
        """Stop the run, if one trains, and wait for its thread to save `latest` and end; False on timeout."""
        self.stop()
        return self.wait_for_training(timeout)

    def wait_for_training(self, timeout: float | None = None) -> bool:
        """Wait for the training thread to end (it works after the app's loop has closed, too)."""
        return self.idle.wait(timeout)

    # -- attaching to a run started elsewhere ----------------------------------------------------

    def attach(self, run_dir: Path) -> None:
        """Follow another process's run by tailing its metrics.jsonl until `detach`."""
        if self.training:
            raise SLMError("this studio is training a run: it cannot attach to another meanwhile")
        metrics = Path(run_dir) / "metrics.jsonl"
        if not metrics.exists():
            raise SLMError(f"{run_dir} has no metrics.jsonl to follow")
        self.detach()
        self.history = RunHistory(run=Path(run_dir).name, state="attached")
        history = self.history

        def work() -> None:
            tail = MetricsTail(metrics)
            worker = get_current_worker()
            while not worker.is_cancelled:
                stopped = liveness(run_dir) == "stopped"  # judged first: a dead process's last lines are read below
                events = tail.read()
                for event in events:
                    history.apply(event)
                if stopped and history.state != "ended":
                    history.apply(gone(history, Path(run_dir).name))
                    events.append(history.end)
                if events:
                    self.broadcast(TrainingUpdated)
                time.sleep(0.5)

        self.attach_worker = self.app.run_worker(
            work, name="attach", group="attach", thread=True, exclusive=True, exit_on_error=False
        )

    @property
    def attached(self) -> bool:
        return self.attach_worker is not None and self.attach_worker.is_running

    def detach(self) -> None:
        if self.attach_worker is not None:
            self.attach_worker.cancel()
            self.attach_worker = None

    # -- the chat model ------------------------------------------------------------------------

    def load_model(self, path: Path) -> Worker:
        """Load the chat model in a thread; when loads overlap, the one asked for last wins."""
        self._load += 1
        ticket, self.loading = self._load, Path(path)
        self.broadcast(lambda: JobProgress("load-model", "load", 0, 1))

        def load() -> str:
            from core.chat.generate import Generator

            try:
                generator = Generator.from_checkpoint(Path(path), "auto", self.dtype)
            finally:
                if ticket == self._load:
                    self.loading = None
            if ticket == self._load:
                self.generator, self.model_path = generator, Path(path)
                self.broadcast(lambda: ModelLoaded(str(path)))
            return str(path)

        return self.run_job("load-model", load)

    def generate(self, prompt: str | list[int], settings: Any) -> int:
        """Stream a generation from the chat model; returns its request number."""
        if self.generator is None:
            raise SLMError("no model loaded: pick a checkpoint with /model NAME or from the palette")
        self._request += 1
        request = self._request
        self.generation_cancel = threading.Event()
        cancel = self.generation_cancel
        generator = self.generator

        def work() -> None:
            start = time.monotonic()
            stream = generator.stream(prompt, settings, cancelled=cancel.is_set)
            buffer, last = [], time.monotonic()
            for piece in stream:
                buffer.append(piece)
                if time.monotonic() - last >= TEXT_INTERVAL:
                    text, buffer, last = "".join(buffer), [], time.monotonic()
                    self.broadcast(lambda text=text: GenerationText(request, text))
            if buffer:
                text = "".join(buffer)
                self.broadcast(lambda: GenerationText(request, text))
            seconds = time.monotonic() - start
            self.broadcast(
                lambda: GenerationDone(request, stream.finish_reason, stream.new_tokens, seconds, stream.truncated)
            )

        self.run_job("generate", work)  # a failure reaches subscribers as JobFailed("generate", ...)
        return request

    def stop_generation(self) -> None:
        self.generation_cancel.set()


def gone(history: RunHistory, run: str) -> RunEnded:
    """How a run whose process vanished mid-training ends, for those watching it."""
    step = history.last_step.step if history.last_step else 0
    return RunEnded(step, "killed", history.best_val_loss, f"its process is gone; resume it with --resume {run}")


def one_line(error: BaseException) -> str:
    """The error's first line (its type's name when it has no text): what the studio shows of a failure."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
