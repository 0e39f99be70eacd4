"""The `slm` command line. Imports nothing heavy at module level, so `slm --help` answers at once.

Each subcommand parses its flags into the engine's config dataclasses, runs the engine and renders
its events as text. Errors the user can fix (`SLMError`) print as one line and exit with status 1.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from tui.cli.data import cmd_data, cmd_tokenize
from tui.cli.merge import cmd_branch, cmd_merge, cmd_pipeline
from tui.cli.models import (
    cmd_checkpoints,
    cmd_eval,
    cmd_export,
    cmd_feedback,
    cmd_generate,
    cmd_import,
    cmd_presets,
    cmd_serve,
)
from tui.cli.parser import build_parser
from tui.cli.plan import cmd_plan
from tui.cli.runs import cmd_compare, cmd_runs
from tui.cli.train import cmd_dpo, cmd_sft, cmd_train

EXIT_ERROR = 1

COMMANDS = {
    "data": cmd_data,
    "tokenize": cmd_tokenize,
    "plan": cmd_plan,
    "train": cmd_train,
    "generate": cmd_generate,
    "eval": cmd_eval,
    "checkpoints": cmd_checkpoints,
    "runs": cmd_runs,
    "compare": cmd_compare,
    "merge": cmd_merge,
    "branch": cmd_branch,
    "pipeline": cmd_pipeline,
    "presets": cmd_presets,
    "sft": cmd_sft,
    "dpo": cmd_dpo,
    "feedback": cmd_feedback,
    "export": cmd_export,
    "import": cmd_import,
    "serve": cmd_serve,
}


# --- entry point ------------------------------------------------------------------------------------


def ignore_file_size_signal() -> None:
    """Over a file-size limit (`ulimit -f`) SIGXFSZ kills a process mid-write; ignored, the write fails with EFBIG
    and the engine says so in one line (the previous checkpoint intact)."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    ignore_file_size_signal()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    from core.errors import SLMError
    from core.workspace import Workspace

    try:
        ws = Workspace.resolve(args.workspace)
        if args.command is None:
            from tui.app import run_studio

            run_studio(ws)
            return 0
        COMMANDS[args.command](args, ws)
    except SLMError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
