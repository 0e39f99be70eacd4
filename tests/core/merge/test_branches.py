from __future__ import annotations

import sys
from pathlib import Path

import pytest

from core.errors import SLMError
from core.merge.branches import (
    Job,
    JobEnded,
    JobStarted,
    plan_branches,
    run_parallel,
    thread_shares,
)


def test_branches_per_top_level_entry_or_per_file(workspace) -> None:
    (workspace.data_dir / "stories" / "more tales.md").write_text("Once upon a time.\n", encoding="utf-8")
    folders = plan_branches(workspace, "x")
    assert [(b.name, b.data) for b in folders] == [("x-b.md", "b.md"), ("x-stories", "stories")]
    files = plan_branches(workspace, "x", per="file")
    assert [b.name for b in files] == ["x-b.md", "x-stories-a.txt", "x-stories-more_tales.md"]
    assert files[2].data == "stories/more tales.md"
    with pytest.raises(SLMError, match=r"at least two folders.*--per file"):
        plan_branches(workspace, "x", selection=["stories"])


def test_files_without_usable_text_get_no_branch(workspace) -> None:
    (workspace.data_dir / "blob.txt").write_bytes(b"\x00\x01binary")
    (workspace.data_dir / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert [b.data for b in plan_branches(workspace, "x")] == ["b.md", "stories"]
    replaced = plan_branches(workspace, "x", decode_errors="replace")  # its bad bytes replaced: usable
    assert [b.data for b in replaced] == ["b.md", "latin.txt", "stories"]


def test_threads_are_split_fairly() -> None:
    assert thread_shares(16, 3) == [6, 5, 5]
    assert thread_shares(2, 2) == [1, 1]
    assert thread_shares(1, 3) == [1, 1, 1]


def python_job(tmp_path: Path, name: str, code: str) -> Job:
    return Job(name, [sys.executable, "-c", code], tmp_path / name / "log", tmp_path / name / "done")


def test_a_crashing_process_leaves_the_others_running(tmp_path) -> None:
    done = tmp_path / "slow" / "done"
    jobs = [
        python_job(tmp_path, "killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
        python_job(tmp_path, "failed", "import sys; print('step 1'); sys.exit('error: the data is gone')"),
        python_job(
            tmp_path,
            "slow",
            f"import os, time; time.sleep(1.5); open({str(done)!r}, 'w').write(os.environ['OMP_NUM_THREADS'])",
        ),
        python_job(tmp_path, "stopped", "print('stopped at step 3')"),
    ]
    events: list = []
    ended = run_parallel(jobs, parallel=3, threads=4, on_event=events.append, poll_s=0.05)
    assert [e.name for e in ended] == ["killed", "failed", "slow", "stopped"]
    killed, failed, slow, stopped = ended
    assert killed.error == "killed by signal 9"
    assert failed.error == "the data is gone" and failed.returncode == 1
    assert slow.error is None and slow.seconds > killed.seconds
    assert stopped.error.startswith("stopped before it finished")
    assert done.read_text() == "1"  # 4 threads over 3 slots: 2, 1, 1; the third job got the third slot
    order = [(type(e).__name__, e.name) for e in events]
    assert order.index(("JobEnded", "killed")) < order.index(("JobEnded", "slow"))
    first_end = next(i for i, (kind, _) in enumerate(order) if kind == "JobEnded")
    assert order.index(("JobStarted", "stopped")) > first_end  # it waited for a free slot
    assert all(isinstance(e, JobStarted | JobEnded) for e in events)
