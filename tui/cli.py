"""The `slm` command line. Imports nothing heavy at module level, so `slm --help` answers at once.

Each subcommand parses its flags into the engine's config dataclasses, runs the engine and renders
its events as text. Errors the user can fix (`SLMError`) print as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from tui.format import clock, count, size

EXIT_ERROR = 1


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
    p.add_argument(
        "--preset", default="toy", help="model and training defaults: toy, small, base, gpt2, large, 1b (default toy)"
    )
    p.add_argument("--name", help="run name (default: PRESET-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--from", dest="init_from", metavar="CKPT", help="start from these weights (fine-tuning)")
    p.add_argument("--tokenizer", help="a tokenizer name or tokenizer.json path (default: train one)")
    p.add_argument("--optimizer", choices=["adamw", "muon"], help="optimizer (default adamw)")
    p.add_argument("--schedule", choices=["cosine", "wsd"], help="learning-rate schedule (default wsd)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default auto: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--grad-checkpoint", action="store_true", default=None, help="recompute activations to save memory")
    p.add_argument("--no-tie-embeddings", action="store_true", help="separate input and output embeddings")
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    for flag, kind, text in MODEL_FLAGS + TRAIN_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=text)
    _data_flags(p, val=False)

    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    _sampling_flags(p)
    p.add_argument("--num-samples", type=int, default=1, help="independent samples (default 1)")
    p.add_argument("--interactive", action="store_true", help="read prompts from the terminal until an empty line")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each token (slow; for checks)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a checkpoint on a text file")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--file", required=True, help="a UTF-8 text file")
    p.add_argument("--max-tokens", type=int, help="evaluate only the first N tokens")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    sub.add_parser("checkpoints", help="list runs and their checkpoints")
    sub.add_parser("presets", help="list the model presets")
    return parser


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
    from core.events import Control
    from core.train import Trainer

    control = Control()
    printer = TrainPrinter(args.log_interval)
    ws.ensure()
    if args.resume:
        overrides = _collect(args, TRAIN_FLAGS)
        for key in ("device", "precision", "compile"):
            if getattr(args, key, None) is not None:
                overrides[key] = getattr(args, key)
        trainer = Trainer.resume_run(ws, args.resume, overrides, printer, control)
    else:
        model, train, name = train_configs(args)
        trainer = Trainer(ws, name, model, train, printer, control)
    with _stop_on_interrupt(control):
        end = trainer.run()
    printer.summary(end, trainer)


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

    def summary(self, end, trainer) -> None:
        best = f", best val loss {end.best_val_loss:.4f}" if end.best_val_loss is not None else ""
        metrics = trainer.last_metrics
        bpb = f", {metrics['val_bpb']:.3f} bits/byte" if "val_bpb" in metrics else ""
        note = f" ({end.message})" if end.message else ""
        print(f"{end.reason} at step {end.step}{best}{bpb}{note}")
        print(f"checkpoints in {trainer.run_dir}; try: slm generate {trainer.run_name}")


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
            _stream(gen, prompt, settings, args.no_cache)
        return
    from dataclasses import replace

    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"--- sample {i + 1}")
        seed = None if settings.seed is None else settings.seed + i
        _stream(gen, args.prompt, replace(settings, seed=seed), args.no_cache)


def _stream(gen, prompt: str, settings, no_cache: bool) -> None:
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


COMMANDS = {
    "data": cmd_data,
    "tokenize": cmd_tokenize,
    "train": cmd_train,
    "generate": cmd_generate,
    "eval": cmd_eval,
    "checkpoints": cmd_checkpoints,
    "presets": cmd_presets,
}


# --- entry point ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
