"""Messages the bridge sends to the widgets that subscribed to it, named for what happened."""

from __future__ import annotations

from typing import Any

from textual.message import Message


class TrainingUpdated(Message):
    """The run history changed (throttled to a few per second while steps stream in)."""


class TrainingFinished(Message):
    def __init__(self, end: Any | None, error: str | None) -> None:
        super().__init__()
        self.end = end  # core.train.events.RunEnded, or None when the run failed before it started
        self.error = error


class JobDone(Message):
    """A background job finished; `job` names it (e.g. "tokenizer", "load-model")."""

    def __init__(self, job: str, result: Any) -> None:
        super().__init__()
        self.job = job
        self.result = result


class JobFailed(Message):
    def __init__(self, job: str, error: str) -> None:
        super().__init__()
        self.job = job
        self.error = error


class BranchEvent(Message):
    """An event of branches training in processes (`core.merge.branches`: JobStarted, JobEnded…)."""

    def __init__(self, event: Any) -> None:
        super().__init__()
        self.event = event


class JobProgress(Message):
    def __init__(self, job: str, stage: str, done: int, total: int) -> None:
        super().__init__()
        self.job, self.stage, self.done, self.total = job, stage, done, total


class GenerationText(Message):
    """New text of the generation `request` (pieces coalesced over a few tens of milliseconds)."""

    def __init__(self, request: int, text: str) -> None:
        super().__init__()
        self.request = request
        self.text = text


class GenerationDone(Message):
    def __init__(self, request: int, finish_reason: str, new_tokens: int, seconds: float, truncated: int) -> None:
        super().__init__()
        self.request = request
        self.finish_reason = finish_reason
        self.new_tokens = new_tokens
        self.seconds = seconds
        self.truncated = truncated


class ModelLoaded(Message):
    """The chat model changed (`path` is the checkpoint folder)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
