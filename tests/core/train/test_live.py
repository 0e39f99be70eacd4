from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from core.train.live import FILE_NAME, STALE_S, Heartbeat, liveness, read_mark


def test_a_heartbeat_marks_the_run_live_and_clears_the_mark(tmp_path) -> None:
    assert liveness(tmp_path) == "none"
    with Heartbeat(tmp_path, interval=0.05):
        mark = read_mark(tmp_path)
        assert mark is not None and mark.pid == os.getpid() and mark.host == socket.gethostname()
        assert liveness(tmp_path) == "live"
        time.sleep(0.2)
        assert read_mark(tmp_path).heartbeat > mark.heartbeat  # refreshed
    assert liveness(tmp_path) == "none" and not (tmp_path / FILE_NAME).exists()


def test_a_killed_process_leaves_a_mark_that_reads_as_stopped(tmp_path) -> None:
    code = f"from core.train.live import Heartbeat\nHeartbeat({str(tmp_path)!r}).__enter__()\nprint('ok', flush=True)\nimport time; time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ok"
    assert liveness(tmp_path) == "live"
    process.kill()
    process.wait()
    assert liveness(tmp_path) == "stopped"


def test_a_stale_heartbeat_reads_as_stopped(tmp_path) -> None:
    with Heartbeat(tmp_path, interval=60):
        assert liveness(tmp_path, now=time.time() + STALE_S + 1) == "stopped"


@pytest.mark.parametrize(
    "text", ["", "{", "[1]", '{"pid": "1", "host": "h", "started": 0, "heartbeat": 0}', "[" * 5000]
)
def test_a_damaged_mark_reads_as_stopped(tmp_path, text) -> None:
    (tmp_path / FILE_NAME).write_text(text)
    assert liveness(tmp_path) == "stopped"


def test_another_hosts_mark_is_judged_by_its_heartbeat(tmp_path) -> None:
    mark = {"pid": 1, "host": "elsewhere", "started": time.time(), "heartbeat": time.time()}
    (tmp_path / FILE_NAME).write_text(json.dumps(mark))
    assert liveness(tmp_path) == "live"
    assert liveness(tmp_path, now=time.time() + STALE_S + 1) == "stopped"


def test_a_training_run_is_live_while_it_trains_and_not_after(workspace, tiny_configs) -> None:
    from core.train.events import StepMetrics
    from core.train.trainer import Trainer

    model, train = tiny_configs(max_steps=4)
    seen = []

    def watch(event) -> None:
        if isinstance(event, StepMetrics):
            seen.append(liveness(workspace.run_dir("watched")))

    Trainer(workspace, "watched", model, train, on_event=watch).run()
    assert seen == ["live"] * 4 and liveness(workspace.run_dir("watched")) == "none"
