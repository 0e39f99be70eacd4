"""The `slm` command line. Imports nothing heavy at module level, so `slm --help` answers at once.

Each subcommand parses its flags into the engine's config dataclasses, runs the engine and renders
its events as text. Errors the user can fix (`SLMError`) print as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tui.format import clip, clock, count, size

EXIT_ERROR = 1
CONTINUE_LR = 0.3  # slm pipeline: the peak learning rate of branches and fine-tuning, as a fraction of --lr


# --- flag tables: (flag, type, help); the engine field is the flag with '-' as '_' --------------------

MODEL_FLAGS: list[tuple[str, Any, str]] = [
    ("vocab-size", int, "tokenizer and embedding vocabulary size"),
    ("context", int, "context length in tokens"),
    ("n-layer", int, "transformer blocks"),
    ("n-head", int, "attention heads"),
    ("n-kv-head", int, "key/value heads (grouped-query attention; = n-head for plain multi-head)"),
    ("n-embd", int, "model width"),
    ("mlp-hidden", int, "SwiGLU hidden width (0: about 8/3 of n-embd)"),
    ("dropout", float, "dropout probability"),
    ("rope-theta", float, "RoPE base"),
]

TRAIN_FLAGS: list[tuple[str, Any, str]] = [
    ("batch-size", int, "sequences per micro-batch"),
    ("grad-accum", int, "micro-batches per optimizer step"),
    ("lr", float, "peak learning rate (AdamW)"),
    ("muon-lr", float, "peak learning rate of Muon's hidden matrices (with --optimizer muon)"),
    ("min-lr-ratio", float, "final learning rate as a fraction of the peak"),
    ("warmup-steps", int, "linear warmup steps"),
    ("decay-fraction", float, "wsd: final fraction of the run spent decaying"),
    ("weight-decay", float, "AdamW weight decay (matrices only)"),
    ("beta1", float, "AdamW beta1"),
    ("beta2", float, "AdamW beta2"),
    ("grad-clip", float, "gradient norm clipping (0: off)"),
    ("max-steps", int, "stop after this many optimizer steps"),
    ("max-tokens", int, "stop after this many training tokens"),
    ("max-minutes", float, "stop after this many minutes of training (the schedule follows the clock)"),
    ("eval-interval", int, "evaluate every N steps"),
    ("eval-tokens", int, "validation tokens per evaluation"),
    ("sample-interval", int, "print a generated sample every N steps"),
    ("sample-tokens", int, "length of those samples"),
    ("checkpoint-interval", int, "save `latest` every N steps"),
    ("patience", int, "stop early after N evaluations without a better val loss"),
    ("val-fraction", float, "fraction of the text held out for validation"),
    ("split-seed", int, "seed of the train/validation split"),
    ("min-frequency", int, "BPE: minimum pair frequency for a merge"),
    ("threads", int, "CPU threads for torch"),
    ("seed", int, "random seed"),
]


def _field(flag: str) -> str:
    return flag.replace("-", "_")


def _collect(args: argparse.Namespace, flags: list[tuple[str, Any, str]]) -> dict[str, Any]:
    return {_field(f): getattr(args, _field(f)) for f, _, _ in flags if getattr(args, _field(f)) is not None}


# --- the parser -------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slm",
        description="SLM Studio: train small GPT-style language models on your own text, then chat with them.",
        epilog="Run `slm` with no command to open the studio. `slm COMMAND --help` explains a command.",
    )
    parser.add_argument(
        "--workspace", metavar="PATH", help="folder with data/ and checkpoints/ (default: $SLM_WORKSPACE or .)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("data", help="list the corpus files in data/ with their stats")
    p.add_argument("--add-sample", action="store_true", help="write the bundled sample corpus to data/sample/")
    p.add_argument(
        "--decode-errors", choices=["skip", "replace"], default="skip", help="what to do with files that are not UTF-8"
    )

    p = sub.add_parser("tokenize", help="train a byte-level BPE tokenizer on the corpus")
    p.add_argument("--name", required=True, help="saved as checkpoints/tokenizers/NAME/tokenizer.json")
    p.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size (default 2048)")
    p.add_argument("--min-frequency", type=int, default=2, help="minimum pair frequency for a merge (default 2)")
    _data_flags(p)

    p = sub.add_parser("train", help="train a model (new, fine-tuned with --from, or resumed with --resume)")
    _recipe_flags(p)
    p.add_argument("--name", help="run name (default: PRESET-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--from", dest="init_from", metavar="CKPT", help="start from these weights (fine-tuning)")
    p.add_argument("--tokenizer", help="a tokenizer name or tokenizer.json path (default: train one)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="recompute activations to save memory")
    p.add_argument("--no-tie-embeddings", action="store_true", help="separate input and output embeddings")
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    for flag, kind, text in MODEL_FLAGS + TRAIN_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=text)
    _data_flags(p, val=False)
    multi = p.add_argument_group("several processes (torchrun)")
    multi.add_argument("--nproc", type=int, help="launch torchrun with N processes on this machine (one per GPU)")
    multi.add_argument("--nnodes", default="1", help="machines in the job, for torchrun (default 1)")
    multi.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-machine job, for torchrun")
    multi.add_argument(
        "--shard", action="store_true", default=None, help="shard the model across processes (FSDP2) instead of DDP"
    )

    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    _sampling_flags(p)
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default 1)")
    p.add_argument("--interactive", action="store_true", help="read prompts from the terminal until an empty line")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each token (slow; for checks)")
    p.add_argument(
        "--chat", action="store_true", help="send the prompt as a user message in the chat template; print the reply"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a checkpoint on a text file")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--file", required=True, help="a UTF-8 text file")
    p.add_argument("--max-tokens", type=int, help="evaluate only the first N tokens")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    _merge_parsers(sub)
    sub.add_parser("checkpoints", help="list runs and their checkpoints")
    sub.add_parser("presets", help="list the model presets")
    _chat_model_parsers(sub)

    p = sub.add_parser("export", help="export a checkpoint as a Hugging Face Llama folder or a GGUF file")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--format", required=True, choices=["hf", "gguf"], help="hf: a transformers folder; gguf: llama.cpp")
    p.add_argument("--out", required=True, metavar="PATH", help="the folder (hf) or file (gguf) to write")
    p.add_argument("--dtype", choices=["f32", "f16", "q8_0"], default="f32", help="weight type (q8_0: gguf only)")

    p = sub.add_parser("import", help="import a local Hugging Face Llama checkpoint as a run")
    p.add_argument("hf_dir", metavar="HF_DIR", help="a folder with config.json, *.safetensors and tokenizer.json")
    p.add_argument("--name", required=True, help="the run name: checkpoints/NAME/final")

    p = sub.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $SLM_API_KEY, else none)")
    p.add_argument("--max-tokens", type=int, default=1024, help="the most new tokens a request may ask for")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    return parser


def _recipe_flags(p: argparse.ArgumentParser) -> None:
    """Preset, optimizer, schedule, device and precision: the flags a branch process is handed on."""
    p.add_argument(
        "--preset", default="toy", help="model and training defaults: toy, small, base, gpt2, large, 1b (default toy)"
    )
    p.add_argument("--optimizer", choices=["adamw", "muon"], help="optimizer (default adamw)")
    p.add_argument("--schedule", choices=["cosine", "wsd"], help="learning-rate schedule (default wsd)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default auto: bf16 on CUDA, fp32 on CPU"
    )


def _merge_parsers(sub: argparse._SubParsersAction) -> None:
    """`slm merge`, `slm branch` and `slm pipeline`: branch from one base, train in parallel, merge, fine-tune."""
    p = sub.add_parser("merge", help="merge checkpoints branched from one base into a new run")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT", help="two or more: RUN, RUN/best|final|latest or a folder")
    p.add_argument(
        "--base", help="task-arithmetic and ties: the checkpoint they branched from (default: their nearest shared one)"
    )
    p.add_argument("--force", action="store_true", help="merge checkpoints that share no ancestor")
    p.add_argument("--name", help="the merged run's name (default: merge-DATE-TIME)")
    _merge_flags(p)

    p = sub.add_parser("branch", help="train one sub-model per file or folder of data/ from a base, in parallel")
    p.add_argument("base", metavar="BASE", help="the checkpoint every branch starts from")
    p.add_argument("--prefix", help="branch runs are named PREFIX-ENTRY (default: the base's run name)")
    _branch_flags(p)

    p = sub.add_parser(
        "pipeline", help="base, branches, merge and fine-tune in one command that resumes where it stopped"
    )
    p.add_argument("--name", required=True, help="runs NAME-base, NAME-ENTRY (one per branch), NAME-merged, NAME-tuned")
    p.add_argument("--from", dest="init_from", metavar="CKPT", help="use this checkpoint as the base (no NAME-base)")
    p.add_argument("--tokenizer", help="the base's tokenizer: a name or tokenizer.json path (default: train one)")
    for stage, what in (("base", "the base"), ("branch", "each branch"), ("tune", "the fine-tuning")):
        p.add_argument(f"--{stage}-steps", type=int, help=f"steps of {what} (default --max-steps)")
        p.add_argument(f"--{stage}-minutes", type=float, help=f"minutes of {what} (default --max-minutes)")
    for stage, what in (("branch", "each branch"), ("tune", "the fine-tuning")):
        p.add_argument(f"--{stage}-lr", type=float, help=f"peak learning rate of {what} (default {CONTINUE_LR} × --lr)")
    p.add_argument("--no-tie-embeddings", action="store_true", help="the base: separate input and output embeddings")
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    for flag, kind, text in MODEL_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=f"the base: {text}")
    _merge_flags(p)
    _branch_flags(p)


def _merge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="linear", help="linear (default), slerp, task-arithmetic or ties")
    p.add_argument(
        "--weights", nargs="+", type=float, help="one per checkpoint (default equal); slerp: t is the second's share"
    )
    p.add_argument("--density", type=float, help="ties: share of each change from the base kept (default 0.2)")
    p.add_argument("--scale", type=float, help="task-arithmetic and ties: multiplies the merged change (default 1)")


def _branch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--per",
        choices=["folder", "file"],
        default="folder",
        help="one branch per top-level entry of data/ (default) or per file",
    )
    p.add_argument("--parallel", type=int, help="branches trained at once (default: all, at most one per CPU thread)")
    _recipe_flags(p)
    for flag, kind, text in TRAIN_FLAGS:
        p.add_argument(
            f"--{flag}",
            type=kind,
            help="in all: CPU threads, split between the branches" if flag == "threads" else text,
        )
    _data_flags(p, val=False)


def _chat_model_parsers(sub: argparse._SubParsersAction) -> None:
    """`slm sft`, `slm dpo` and `slm feedback`: fine-tune on conversations, rate answers, learn from ratings."""
    p = sub.add_parser("sft", help="fine-tune a checkpoint on conversations into a chat model (loss on replies only)")
    _tune_flags(p)
    p.add_argument(
        "--data", nargs="+", metavar="FILE", help=".jsonl with messages, or dialog .txt (in data/ or a path)"
    )
    p.add_argument("--sample", action="store_true", help="also use the sample conversations (data/sample/python-chat)")
    p.add_argument("--user-prefix", default="User:", help="dialog text: the user's speaker prefix (default User:)")
    p.add_argument("--assistant-prefix", default="Bot:", help="dialog text: the model's speaker prefix (default Bot:)")
    p.add_argument("--system-prefix", default="System:", help="dialog text: the system prefix (default System:)")

    p = sub.add_parser("dpo", help="preference-tune a checkpoint on rated answers (Direct Preference Optimisation)")
    _tune_flags(p)
    p.add_argument("--beta", type=float, default=0.1, help="how far from the reference it may move; lower: further")

    p = sub.add_parser("feedback", help="list the ratings given in the studio's chat, or export them")
    p.add_argument("--export", metavar="FILE", help="write every rating to FILE as JSON lines")


def _tune_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="init_from", metavar="CKPT", help="the checkpoint to tune (default: the newest run)")
    p.add_argument("--name", help="run name (default: COMMAND-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--optimizer", choices=["adamw", "muon"], help="optimizer (default adamw)")
    p.add_argument("--schedule", choices=["cosine", "wsd"], help="learning-rate schedule (default wsd)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default auto: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    for flag, kind, text in TRAIN_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=text)


def _data_flags(p: argparse.ArgumentParser, val: bool = True) -> None:
    p.add_argument("--data", nargs="+", metavar="PATH", help="files or folders under data/ (default: all of data/)")
    p.add_argument(
        "--decode-errors",
        choices=["skip", "replace"],
        help="files that are not UTF-8: skip them (default) or replace bad bytes",
    )
    if val:
        p.add_argument("--val-fraction", type=float, default=0.1, help="fraction held out for validation (default 0.1)")
        p.add_argument("--split-seed", type=int, default=0, help="seed of the train/validation split")


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample from the k likeliest tokens; 0 = off (default 50)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1 = off (default 1)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default 1)")
    p.add_argument("--max-tokens", type=int, default=200, help="new tokens at most (default 200)")
    p.add_argument("--stop", action="append", default=[], help="stop when this text appears (repeatable)")
    p.add_argument("--seed", type=int, help="sampling seed (default: random)")


# --- commands ---------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace, ws) -> None:
    from core.data import discover, file_stats
    from core.sample import write_sample_corpus

    if args.add_sample:
        files = write_sample_corpus(ws.data_dir)
        print(f"wrote the sample corpus: {', '.join(str(f.relative_to(ws.root)) for f in files)}")
    if not ws.data_dir.is_dir():
        print(f"no data folder at {ws.data_dir}: create it, or run `slm data --add-sample`")
        return
    errors = "replace" if args.decode_errors == "replace" else "strict"
    rows = [file_stats(p, ws.data_dir, errors) for p in discover(ws.data_dir)]
    if not rows:
        print(f"{ws.data_dir} holds no .txt, .md or .jsonl files: add some, or run `slm data --add-sample`")
        return
    print(f"{'file':<48} {'size':>9} {'lines':>9} {'docs':>6} {'~tokens':>9}")
    for r in rows:
        note = f"  ! {r.error}" if r.error else ""
        if r.skipped_records:
            note += f"  ({r.skipped_records} lines without text skipped)"
        if r.chat_records:
            note += f"  ({r.chat_records} chat records, kept for fine-tuning)"
        print(f"{r.path:<48} {size(r.bytes):>9} {r.lines:>9} {r.documents:>6} {count(r.est_tokens):>9}{note}")
    usable = [r for r in rows if not r.error]
    print(f"{len(usable)} usable of {len(rows)} files, {size(sum(r.bytes for r in usable))}")


def cmd_tokenize(args: argparse.Namespace, ws) -> None:
    from core.data import Corpus
    from core.tokenizers import measure, save_named, train_on_corpus

    corpus = Corpus.scan(ws.data_dir, args.data, args.decode_errors or "skip")
    _report_problems(corpus)
    print(f"training a {args.vocab_size}-token tokenizer on {size(corpus.total_bytes)} of text ...")
    tok = train_on_corpus(corpus, args.vocab_size, args.min_frequency, args.val_fraction, args.split_seed)
    bpt = measure(tok, corpus, args.val_fraction, args.split_seed)
    path = save_named(ws, args.name, tok, {"bytes_per_token": round(bpt, 4), "data": args.data or ["."]})
    print(f"saved {path}: {tok.vocab_size} tokens, {bpt:.2f} bytes per token on validation text")


def _report_problems(corpus) -> None:
    for p in corpus.problems:
        print(f"warning: skipped {p.path}: {p.error}", file=sys.stderr)


def train_configs(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """Model and training configs from a preset plus the flags given; returns (model, train, name)."""
    from core.config import ModelConfig, TrainConfig, preset
    from core.train import default_run_name

    chosen = preset(args.preset)
    model = {**chosen.model, **_collect(args, MODEL_FLAGS)}
    if args.no_tie_embeddings:
        model["tie_embeddings"] = False
    train = {**chosen.train, **_collect(args, TRAIN_FLAGS)}
    for key in (
        "optimizer",
        "schedule",
        "device",
        "precision",
        "compile",
        "grad_checkpoint",
        "shard",
        "tokenizer",
        "init_from",
        "decode_errors",
    ):
        if getattr(args, key, None) is not None:
            train[key] = getattr(args, key)
    if args.data:
        train["data"] = args.data
    return ModelConfig(**model), TrainConfig(**train), args.name or default_run_name(args.preset)


def cmd_train(args: argparse.Namespace, ws) -> None:
    ws.ensure()
    if args.nproc and "WORLD_SIZE" not in os.environ:
        _launch_torchrun(args)
        return
    if "WORLD_SIZE" in os.environ and not args.resume and not args.name:
        from core.distributed import Dist
        from core.train import default_run_name

        args.name = Dist.from_env(args.device or "auto").share(default_run_name(args.preset))  # one name for all
    _train(args, ws)


LAUNCH_FLAGS = ("--nproc", "--nnodes", "--rdzv-endpoint")


def _drop_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """`argv` without `flags` and their values (`--flag VALUE` or `--flag=VALUE`)."""
    kept, i = [], 0
    while i < len(argv):
        if argv[i] in flags:
            i += 2
            continue
        if not argv[i].startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(argv[i])
        i += 1
    return kept


def _launch_torchrun(args: argparse.Namespace) -> None:
    """Run this same `slm train` under torchrun, `args.nproc` processes per machine, and wait for it."""
    import subprocess

    from core.distributed import torchrun_command
    from core.errors import SLMError
    from core.train import default_run_name

    if args.nnodes != "1" and not args.rdzv_endpoint:
        raise SLMError("a job on several machines needs --rdzv-endpoint HOST:PORT (the same on every machine)")
    argv = _drop_flags(args.argv, LAUNCH_FLAGS)
    name = args.resume or args.name
    if not name:
        name = default_run_name(args.preset)
        argv += ["--name", name]  # every machine must agree on it: say it now
    command = torchrun_command(args.nproc, argv, args.nnodes, args.rdzv_endpoint)
    print("running:", " ".join(command[2:]), flush=True)
    interrupted = []
    # Ctrl-C reaches torchrun too, which passes it to the ranks: they stop after the step and save `latest`.
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        code = subprocess.run(command).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        raise SLMError(f"stopped on request; resume with: slm train --resume {name} --nproc {args.nproc}")
    if code:
        raise SLMError(f"torchrun ended with exit code {code}: the first failing rank's error is printed above")


def _train(args: argparse.Namespace, ws):
    """Train (new, or `args.resume`) with progress printed; returns the run's RunEnded."""
    from core.train import Trainer

    def make(printer, control):
        if args.resume:
            return Trainer.resume_run(ws, args.resume, _resume_overrides(args), printer, control)
        model, train, name = train_configs(args)
        return Trainer(ws, name, model, train, printer, control)

    return _run_trainer(make, args.log_interval)


def _resume_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """What a resumed run may change: limits, schedule and the machine."""
    overrides = _collect(args, TRAIN_FLAGS)
    for key in ("device", "precision", "compile", "shard"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    return overrides


def _run_trainer(make: Callable[[Any, Any], Any], log_interval: int):
    """Run the trainer `make(on_event, control)` builds, printing its events; Ctrl-C stops it. Returns RunEnded."""
    from core.events import Control

    control = Control()
    printer = TrainPrinter(log_interval)
    trainer = make(printer, control)
    with _stop_on_interrupt(control):
        end = trainer.run()
    if trainer.dist.main:
        printer.summary(end, trainer)
    return end


class _stop_on_interrupt:
    """First Ctrl-C asks the run to stop (it saves a checkpoint); a second one interrupts at once."""

    def __init__(self, control) -> None:
        self.control = control

    def __enter__(self):
        def handler(signum, frame):
            if self.control.stopped:
                raise KeyboardInterrupt
            print("\nstopping after this step (saving a checkpoint); Ctrl-C again to abort", file=sys.stderr)
            self.control.stop()

        self.previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)


class TrainPrinter:
    """Renders training events as log lines."""

    def __init__(self, log_interval: int) -> None:
        self.log_interval = max(1, log_interval)
        self.max_steps = 0
        self._last_stage = ""
        self.tty = sys.stderr.isatty()
        self.preferences: list[Any] = []  # PreferenceMetrics of a DPO run

    def __call__(self, event) -> None:
        name = type(event).__name__
        handler: Callable[[Any], None] | None = getattr(self, f"on_{name}", None)
        if handler:
            handler(event)

    def on_Progress(self, e) -> None:
        labels = {"scan": "scanning files", "tokenizer": "training the tokenizer", "encode": "encoding tokens"}
        label = labels.get(e.stage, e.stage)
        if e.total and self.tty:
            end = "\n" if e.done >= e.total else ""
            print(f"\r{label}: {100 * e.done / e.total:5.1f}%", end=end, file=sys.stderr, flush=True)
        elif e.stage != self._last_stage:
            print(f"{label} ...", file=sys.stderr, flush=True)
        self._last_stage = e.stage

    def on_Notice(self, e) -> None:
        print(f"{'warning: ' if e.level == 'warning' else ''}{e.message}", file=sys.stderr)

    def on_RunStarted(self, e) -> None:
        self.max_steps = e.max_steps
        resumed = f", resumed at step {e.start_step}" if e.start_step else ""
        print(
            f"run {e.run}: {e.params / 1e6:.2f}M parameters on {e.device} ({e.precision}){resumed}\n"
            f"  {count(e.train_tokens)} training and {count(e.val_tokens)} validation tokens, "
            f"{count(e.tokens_per_step)} tokens per step, up to {e.max_steps} steps\n"
            f"  folder {e.run_dir}"
        )

    def on_StepMetrics(self, e) -> None:
        if e.step % self.log_interval == 0 or e.step == 1:
            print(
                f"step {e.step:>6}/{self.max_steps} | loss {e.loss:.4f} | lr {e.lr:.2e} | "
                f"{count(e.tokens_per_s)} tok/s | {clock(e.elapsed_s)} | eta {clock(e.eta_s)}",
                flush=True,
            )

    def on_EvalMetrics(self, e) -> None:
        best = "  (best)" if e.val_loss <= e.best_val_loss else ""
        print(
            f"eval {e.step:>6} | val loss {e.val_loss:.4f} | ppl {e.val_ppl:.2f} | {e.val_bpb:.3f} bits/byte{best}",
            flush=True,
        )

    def on_SampleText(self, e) -> None:
        text = e.text.strip().replace("\n", "\n  ")
        print(f"sample at step {e.step}:\n  {text}", flush=True)

    def on_StateChanged(self, e) -> None:
        print(f"{e.state} at step {e.step}")

    def on_PreferenceMetrics(self, e) -> None:
        self.preferences.append(e)
        print(
            f"prefs {e.step:>5} | held-out chosen-rejected log-prob margin {e.margin:+.3f} | "
            f"win rate {e.win_rate:.0%} of {e.pairs} pairs",
            flush=True,
        )

    def summary(self, end, trainer) -> None:
        best = f", best val loss {end.best_val_loss:.4f}" if end.best_val_loss is not None else ""
        metrics = trainer.last_metrics
        bpb = f", {metrics['val_bpb']:.3f} bits/byte" if "val_bpb" in metrics else ""
        note = f" ({end.message})" if end.message else ""
        print(f"{end.reason} at step {end.step}{best}{bpb}{note}")
        if len(self.preferences) > 1:
            first, last = self.preferences[0], self.preferences[-1]
            print(
                f"held-out margin {first.margin:+.3f} -> {last.margin:+.3f}, "
                f"win rate {first.win_rate:.0%} -> {last.win_rate:.0%} (steps {first.step} -> {last.step})"
            )
        chat = ' --chat --prompt "..."' if getattr(trainer, "chat", False) else ""
        print(f"checkpoints in {trainer.run_dir}; try: slm generate {trainer.run_name}{chat}")


def cmd_generate(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.generate import Generator, SamplingSettings

    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device)
    settings = SamplingSettings(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        max_tokens=args.max_tokens,
        stop=args.stop,
        seed=args.seed,
    )
    print(f"[{path}]", file=sys.stderr)
    if args.interactive:
        while True:
            try:
                prompt = input("> ")
            except EOFError:
                return
            if not prompt:
                return
            _stream(gen, prompt, settings, args.no_cache, args.chat)
        return
    from dataclasses import replace

    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        seed = None if settings.seed is None else settings.seed + i
        _stream(gen, args.prompt, replace(settings, seed=seed), args.no_cache, args.chat)


def _stream(gen, prompt: str, settings, no_cache: bool, chat: bool = False) -> None:
    """Print `prompt` and its continuation; with `chat`, only the reply to it as a user message."""
    if chat:
        from dataclasses import replace

        from core.chat import END, render_chat

        ids = render_chat([{"role": "user", "content": prompt}], gen.tokenizer)
        out = gen.stream(ids, replace(settings, stop=[*settings.stop, END]), use_cache=not no_cache)
    else:
        out = gen.stream(prompt, settings, use_cache=not no_cache)
        sys.stdout.write(prompt)
    for piece in out:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if out.truncated:
        print(f"note: the prompt was {out.truncated} tokens too long; its start was dropped", file=sys.stderr)


def cmd_eval(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.evaluate import evaluate_file
    from core.generate import Generator

    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device)
    result = evaluate_file(gen.model, gen.tokenizer, args.file, max_tokens=args.max_tokens)
    print(f"{path}: {args.file}")
    print(f"loss {result.loss:.4f} | perplexity {result.ppl:.2f} | {result.bpb:.4f} bits/byte | {result.tokens} tokens")


def cmd_checkpoints(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import list_checkpoints

    entries = list_checkpoints(ws)
    if not entries:
        print(f"no checkpoints in {ws.checkpoints_dir}: train one with `slm train`")
        return
    print(f"{'checkpoint':<40} {'step':>7} {'val loss':>9} {'bits/byte':>9} {'params':>8}  {'created':<19}  from")
    for e in entries:
        loss = f"{e.val_loss:.4f}" if e.val_loss is not None else "-"
        bpb = f"{e.val_bpb:.3f}" if e.val_bpb is not None else "-"
        print(
            f"{e.run + '/' + e.kind:<40} {e.step:>7} {loss:>9} {bpb:>9} {e.params / 1e6:>7.2f}M  "
            f"{e.created[:19]:<19}  {e.parent or '-'}"
        )


def cmd_presets(args: argparse.Namespace, ws) -> None:
    from core.config import PRESETS, ModelConfig, TrainConfig, count_params, estimate_memory

    print(
        f"{'preset':<7} {'params':>8} {'layers':>6} {'width':>5} {'heads':>5} {'kv':>3} {'context':>7} {'vocab':>6} {'train mem':>9}  about"
    )
    for p in PRESETS.values():
        m, t = ModelConfig(**p.model), TrainConfig(**p.train)
        mem = estimate_memory(m, t).total
        print(
            f"{p.name:<7} {count_params(m) / 1e6:>7.1f}M {m.n_layer:>6} {m.n_embd:>5} {m.n_head:>5} {m.n_kv_head:>3} "
            f"{m.context:>7} {m.vocab_size:>6} {size(mem):>9}  {p.description}"
        )


def cmd_export(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.export import export_checkpoint

    path = resolve_checkpoint(ws, args.checkpoint)
    out = export_checkpoint(path, args.format, args.out, args.dtype)
    print(f"exported {path} to {out} ({args.format}, {args.dtype})")


def cmd_import(args: argparse.Namespace, ws) -> None:
    from core.hf import import_hf

    ws.ensure()
    path = import_hf(args.hf_dir, ws, args.name)
    print(f"imported {args.hf_dir} as {path}; try: slm generate {args.name}")


def cmd_serve(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.export import model_name
    from core.generate import Generator
    from core.serve import ServeLimits, create_app, run_server

    api_key = args.api_key or os.environ.get("SLM_API_KEY") or None
    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device)
    name = model_name(gen.checkpoint)
    app = create_app(gen, name, api_key, ServeLimits(max_tokens=args.max_tokens))
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    print(f"serving {name} at http://{args.host}:{args.port}/v1 (Ctrl-C stops)", file=sys.stderr)
    run_server(app, args.host, args.port)


def cmd_merge(args: argparse.Namespace, ws) -> None:
    from core.checkpoint import resolve_checkpoint
    from core.train import default_run_name

    paths = [resolve_checkpoint(ws, ref) for ref in args.checkpoints]
    base = resolve_checkpoint(ws, args.base) if args.base else None
    _merge(args, paths, base, ws.run_dir(args.name or default_run_name("merge")), args.force)


def _merge(args: argparse.Namespace, paths: list[Path], base: Path | None, out: Path, force: bool) -> Path:
    """Merge with the method flags of `args`, print what was merged; returns the merged checkpoint."""
    from core.checkpoint import read_meta
    from core.merge import MergeOptions, label, merge_checkpoints, shares

    options = MergeOptions(**{k: getattr(args, k) for k in ("density", "scale") if getattr(args, k) is not None})
    path = merge_checkpoints(paths, args.weights, args.method, out=out, base=base, options=options, force=force)
    record = read_meta(path)["merge"]
    for warning in record.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    settings = [record["method"]] + [f"{k} {record[k]:g}" for k in ("density", "scale") if k in record]
    if "base" in record:
        settings.append(f"base {label(record['base'])}")
    print(f"merged {shares(record['parents'], record['weights'])} ({', '.join(settings)}) into {label(path)}")
    return path


def cmd_branch(args: argparse.Namespace, ws) -> None:
    from core.branch import plan_branches
    from core.checkpoint import resolve_checkpoint

    ws.ensure()
    base = resolve_checkpoint(ws, args.base)
    finals = _branch(args, ws, base, plan_branches(ws, args.prefix or base.parent.name, args.per, args.data))
    runs = " ".join(p.parent.name for p in finals)
    print(f"merge them with: slm merge {runs} --method ties --base {base.parent.name}/{base.name}")


# the flags a branch process is handed on (--threads is the total, split between the processes)
BRANCH_FLAGS = ["preset", "optimizer", "schedule", "device", "precision", "decode-errors"] + [
    flag for flag, _, _ in TRAIN_FLAGS if flag != "threads"
]


def _branch(args: argparse.Namespace, ws, base: Path, branches: list) -> list[Path]:
    """Train the branches that have not finished, in parallel processes; returns their final checkpoints."""
    from core.branch import LOG, Job, available_cpus, gpu_ids, run_parallel, stage_state
    from core.errors import SLMError

    forwarded = [f"--{f}={getattr(args, _field(f))}" for f in BRANCH_FLAGS if getattr(args, _field(f)) is not None]
    jobs = []
    for branch in branches:
        run_dir = ws.run_dir(branch.name)
        if _skip_or_clear(run_dir):
            print(f"{branch.name}: finished already")
            continue
        resume = stage_state(run_dir) == "resume"
        start = ["--resume", branch.name] if resume else ["--from", str(base), "--name", branch.name]
        argv = [sys.executable, "-m", "tui.cli", "--workspace", str(ws.root), "train", *start, "--data", branch.data]
        jobs.append(Job(branch.name, argv + forwarded, run_dir / LOG, run_dir / "final" / "checkpoint.json"))
        print(f"{branch.name}: {'resuming' if resume else 'training'} on data/{branch.data}, log {run_dir / LOG}")
    if jobs:
        threads = args.threads or available_cpus()
        printer = BranchPrinter(ws, [job.name for job in jobs])
        parallel = args.parallel or min(len(jobs), threads)
        failed = [
            e for e in run_parallel(jobs, parallel, threads, gpu_ids(args.device), printer, printer.poll) if e.error
        ]
        if failed:
            raise SLMError(
                f"{len(failed)} of {len(jobs)} branches failed: {'; '.join(f'{e.name}: {e.error}' for e in failed)}; "
                "the others are kept: fix the cause and run the same command again to train only the failed ones"
            )
    return [ws.run_dir(branch.name) / "final" for branch in branches]


class BranchPrinter:
    """Branch processes starting and ending, and every `every_s` seconds the step and loss of those running."""

    def __init__(self, ws, names: list[str], every_s: float = 30.0) -> None:
        from core.monitor import MetricsTail, RunHistory

        self.ws, self.every_s = ws, every_s
        self.tails = {name: MetricsTail(ws.run_dir(name) / "metrics.jsonl") for name in names}
        self.histories = {name: RunHistory() for name in names}
        self.running: set[str] = set()
        self.due = time.monotonic() + every_s

    def __call__(self, event) -> None:
        from core.branch import JobStarted
        from core.checkpoint import read_meta

        if isinstance(event, JobStarted):
            self.running.add(event.name)
            gpu = f", GPU {event.gpu}" if event.gpu is not None else ""
            threads = f"{event.threads} CPU thread{'s' if event.threads != 1 else ''}"
            print(f"{event.name}: started, pid {event.pid}, {threads}{gpu}", flush=True)
            return
        self.running.discard(event.name)
        if event.error:
            print(f"{event.name}: failed after {clock(event.seconds)}: {event.error}", flush=True)
            return
        bpb = read_meta(self.ws.run_dir(event.name) / "final")["metrics"].get("val_bpb")
        result = f", {bpb:.3f} bits/byte on its validation text" if bpb is not None else ""
        print(f"{event.name}: finished in {clock(event.seconds)}{result}", flush=True)

    def poll(self) -> None:
        for name, tail in self.tails.items():
            for event in tail.read():
                self.histories[name].apply(event)
        if time.monotonic() < self.due:
            return
        self.due += self.every_s
        steps = [(n, h.last_step, h.max_steps) for n, h in self.histories.items() if n in self.running and h.last_step]
        if steps:
            print(" | ".join(f"{n} step {s.step}/{total} loss {s.loss:.3f}" for n, s, total in steps), flush=True)


def cmd_pipeline(args: argparse.Namespace, ws) -> None:
    from core.branch import plan_branches
    from core.checkpoint import resolve_checkpoint
    from core.config import preset
    from core.errors import SLMError

    ws.ensure()
    stages = {f"{args.name}-{stage}" for stage in ("base", "merged", "tuned")}
    if args.init_from:
        base = resolve_checkpoint(ws, args.init_from)
    else:
        base = _train_stage(_stage(args, "base", init_from=None), ws, f"{args.name}-base")
    branches = plan_branches(ws, args.name, args.per, args.data)
    if clash := stages & {b.name for b in branches}:
        raise SLMError(f"the branch {clash.pop()} would take the name of a pipeline stage: rename that data entry")
    lr = CONTINUE_LR * (args.lr or preset(args.preset).train["lr"])
    parents = _branch(_stage(args, "branch", lr=args.branch_lr or lr), ws, base, branches)
    merged = ws.run_dir(f"{args.name}-merged")
    if _skip_or_clear(merged):
        print(f"{merged.name}: merged already")
    else:
        _merge(args, parents, base, merged, force=False)
    tuned = _train_stage(
        _stage(args, "tune", init_from=str(merged / "final"), tokenizer=None, lr=args.tune_lr or lr),
        ws,
        f"{args.name}-tuned",
    )
    print(f"pipeline done: {tuned.parent.name}/{tuned.name}; try: slm generate {tuned.parent.name}")


def _stage(args: argparse.Namespace, stage: str, **changes: Any) -> argparse.Namespace:
    """`args` with one pipeline stage's limits (`--base-steps` …) in place of `--max-steps` and `--max-minutes`."""
    steps, minutes = getattr(args, f"{stage}_steps"), getattr(args, f"{stage}_minutes")
    limits = {"max_steps": steps or args.max_steps, "max_minutes": minutes or args.max_minutes}
    return argparse.Namespace(**{**vars(args), **limits, **changes})


def _skip_or_clear(run_dir: Path) -> bool:
    """Whether the run finished; one with nothing to resume from is cleared for a fresh start."""
    from core.branch import discard_unstarted, stage_state

    state = stage_state(run_dir)
    if state == "new":
        discard_unstarted(run_dir)
    return state == "done"


def _train_stage(args: argparse.Namespace, ws, name: str) -> Path:
    """Train run `name` unless it finished, resuming it if it stopped; returns its final checkpoint."""
    from core.branch import stage_state
    from core.errors import SLMError

    run_dir = ws.run_dir(name)
    if _skip_or_clear(run_dir):
        print(f"{name}: finished already")
        return run_dir / "final"
    resume = name if stage_state(run_dir) == "resume" else None
    end = _train(argparse.Namespace(**{**vars(args), "name": name, "resume": resume}), ws)
    if end.reason not in ("finished", "early_stop"):
        raise SLMError(f"{name} {end.reason} at step {end.step}: run the same command again to resume the pipeline")
    return run_dir / "final"


def cmd_sft(args: argparse.Namespace, ws) -> None:
    from core.config import SFT_TRAIN
    from core.conversations import DialogFormat
    from core.errors import SLMError
    from core.sft import SFTTrainer

    data = list(args.data or [])
    if args.sample and not args.resume:
        from core.sample import write_sample_chat

        path = write_sample_chat(ws.data_dir)
        print(f"wrote the sample conversations: {path.relative_to(ws.root)}")
        data.append(str(path.relative_to(ws.data_dir)))
    if not data and not args.resume:
        raise SLMError(
            "name the conversations with --data FILE (.jsonl with messages, or dialog .txt), or use --sample"
        )
    dialog = DialogFormat(args.user_prefix, args.assistant_prefix, args.system_prefix)
    _tune(args, ws, SFTTrainer, SFT_TRAIN, "sft", data, dialog=dialog)


def cmd_dpo(args: argparse.Namespace, ws) -> None:
    from core.config import DPO_TRAIN
    from core.dpo import DPOTrainer

    _tune(args, ws, DPOTrainer, DPO_TRAIN, "dpo", [], beta=args.beta)


def _tune(args: argparse.Namespace, ws, trainer_class, defaults: dict, prefix: str, data: list[str], **extra):
    """Tune `--from` (default: the newest checkpoint) with a Trainer subclass, or resume `--resume`."""
    from core.checkpoint import read_meta, resolve_checkpoint
    from core.config import ModelConfig, TrainConfig
    from core.train import Trainer, default_run_name

    ws.ensure()
    if args.resume:
        overrides = _resume_overrides(args)
        return _run_trainer(
            lambda on_event, control: Trainer.resume_run(ws, args.resume, overrides, on_event, control),
            args.log_interval,
        )
    parent = resolve_checkpoint(ws, args.init_from)
    chosen = {k: getattr(args, k) for k in ("optimizer", "schedule", "device", "precision") if getattr(args, k)}
    train = TrainConfig(**{**defaults, **_collect(args, TRAIN_FLAGS), **chosen, "init_from": str(parent), "data": data})
    model = ModelConfig(**read_meta(parent)["model"])
    name = args.name or default_run_name(prefix)
    return _run_trainer(
        lambda on_event, control: trainer_class(ws, name, model, train, on_event, control, **extra), args.log_interval
    )


def cmd_feedback(args: argparse.Namespace, ws) -> None:
    from core.feedback import FeedbackDB, preference_pairs

    db = FeedbackDB.for_workspace(ws)
    ratings = db.ratings()
    if args.export:
        path = db.export(Path(args.export).expanduser(), ratings)
        print(f"exported {len(ratings)} ratings to {path}")
        return
    if not ratings:
        print(f"no ratings yet in {db.path}: rate answers in the studio's chat with /rate + or /rate -")
        return
    print(f"{'id':>5}  {'time':<16}  {'model':<24}  rating, prompt -> answer")
    for r in ratings:
        stamp = r.time[:16].replace("T", " ")
        print(
            f"{r.id:>5}  {stamp:<16}  {r.model[:24]:<24}  {'+' if r.rating > 0 else '-'} {clip(r.prompt, 40)} -> {clip(r.answer, 50)}"
        )
    pairs = preference_pairs(ratings)
    good = sum(r.rating > 0 for r in ratings)
    print(
        f"{len(ratings)} ratings ({good} good, {len(ratings) - good} bad) in {db.path}; "
        f"{len(pairs)} preference pairs over {len({p.key for p in pairs})} prompts for `slm dpo`"
    )


COMMANDS = {
    "data": cmd_data,
    "tokenize": cmd_tokenize,
    "train": cmd_train,
    "generate": cmd_generate,
    "eval": cmd_eval,
    "checkpoints": cmd_checkpoints,
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


def main(argv: list[str] | None = None) -> int:
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


if __name__ == "__main__":
    sys.exit(main())
