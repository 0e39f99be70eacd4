"""Branch-Train-Merge on two domains: does merging branches beat the base, and how far is it from joint training?

    python bench/merge_quality.py [--base-steps 500] [--branch-steps 500] [--tune-steps 150] [--method linear]

Two genuinely different corpora, tinyshakespeare and the bundled sample corpus (Python documentation),
each a top-level folder of data/. `slm pipeline` (toy preset, one CPU thread per process) trains a base
on both, one branch per corpus from it (two processes in parallel, at the pipeline's lower learning
rate for continued training), merges the branches with `--method` and fine-tunes the merge on both;
the other merge methods are applied to the same branches. A joint model trains on both from scratch
for as many steps as base + branches + fine-tuning together (the same total compute, with the base's
tokenizer). Reported: val bits per byte on each corpus's own validation split, and their mean.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import preset
from core.data.sample import write_sample_corpus
from core.merge.weights import METHODS, merge_checkpoints
from core.workspace import Workspace
from tui.cli import main as slm

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpora" / "tinyshakespeare.txt"
DOMAINS = ("shakespeare", "sample")
EVAL_TOKENS = 32768


def run_slm(ws: Workspace, log: Path, *args: str) -> None:
    """Run an `slm` command with its output going to `log`; stop the bench if it fails."""
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = slm(["--workspace", str(ws.root), *args])
    if code:
        sys.exit(f"slm {' '.join(args)} failed: see {log}")


def bits_per_byte(ws: Workspace, paths: list[Path]) -> dict[str, list[float]]:
    """Each checkpoint's val bits per byte on each domain's validation split (one thread, like the training)."""
    import torch

    from core.merge.compare import evaluate_checkpoints

    torch.set_num_threads(1)
    return {d: [r.bpb for r in evaluate_checkpoints(ws, paths, [d], max_tokens=EVAL_TOKENS)] for d in DOMAINS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-steps", type=int, default=500)
    parser.add_argument("--branch-steps", type=int, default=500)
    parser.add_argument("--tune-steps", type=int, default=150)
    parser.add_argument("--method", default="linear", help="the merge the pipeline fine-tunes")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    if not args.corpus.exists():
        sys.exit(f"corpus {args.corpus} not found: pass --corpus PATH")
    with contextlib.ExitStack() as stack:
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ws = Workspace.resolve(root)
        ws.ensure()
        (ws.data_dir / "shakespeare").mkdir(exist_ok=True)
        with contextlib.suppress(FileExistsError):
            (ws.data_dir / "shakespeare" / args.corpus.name).symlink_to(args.corpus.resolve())
        write_sample_corpus(ws.data_dir)
        log, started = root / "bench.log", time.monotonic()
        common = ["--preset", "toy", "--threads", "1", "--log-interval", "100"]

        def stage(text: str) -> None:
            print(f"[{time.monotonic() - started:6.0f}s] {text}", flush=True)

        stage(f"pipeline: base {args.base_steps}, branches {args.branch_steps}, fine-tune {args.tune_steps} steps")
        run_slm(
            ws, log, "pipeline", "--name", "btm", *common, "--parallel", "2", "--method", args.method,
            "--base-steps", str(args.base_steps), "--branch-steps", str(args.branch_steps),
            "--tune-steps", str(args.tune_steps),
        )  # fmt: skip
        final = {name: ws.run_dir(f"btm-{name}") / "final" for name in ("base", *DOMAINS, "merged", "tuned")}
        branches = [final[d] for d in DOMAINS]
        rows = [("base", args.base_steps, final["base"])]
        rows += [(f"branch {d}", args.base_steps + args.branch_steps, final[d]) for d in DOMAINS]
        merged_steps = args.base_steps + len(DOMAINS) * args.branch_steps
        for method in METHODS:
            stage(f"merge: {method}")
            path = final["merged"] if method == args.method else ws.run_dir(f"btm-{method}") / "final"
            if not path.exists():
                merge_checkpoints(branches, None, method, out=path.parent, base=final["base"])
            rows.append((f"merge {method}", merged_steps, path))
        rows.append((f"merge {args.method} + fine-tune", merged_steps + args.tune_steps, final["tuned"]))
        joint_steps = merged_steps + args.tune_steps
        stage(f"joint: {joint_steps} steps on both corpora")
        if not (ws.run_dir("joint") / "final").exists():
            tokenizer = str(ws.run_dir("btm-base") / "tokenizer.json")
            run_slm(
                ws, log, "train", "--name", "joint", *common, "--max-steps", str(joint_steps), "--tokenizer", tokenizer
            )
        rows.append(("joint, same compute", joint_steps, ws.run_dir("joint") / "final"))
        stage("evaluating")
        scores = bits_per_byte(ws, [path for _, _, path in rows])
        stage("done")
    toy = preset("toy")
    tokens = toy.train["batch_size"] * toy.model["context"]
    print(f"\nval bits per byte (toy preset, {tokens} tokens per step, first {EVAL_TOKENS} val tokens per domain)")
    print(f"{'model':<30} {'steps':>6} {'shakespeare':>12} {'sample':>8} {'mean':>7}")
    for i, (name, steps, _) in enumerate(rows):
        values = [scores[d][i] for d in DOMAINS]
        print(f"{name:<30} {steps:>6} {values[0]:>12.3f} {values[1]:>8.3f} {sum(values) / len(values):>7.3f}")


if __name__ == "__main__":
    main()
