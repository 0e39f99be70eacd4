"""The `slm` argument parser: the flag tables shared with the engine's configs, and one parser per command."""

from __future__ import annotations

import argparse
from typing import Any

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


def field(flag: str) -> str:
    return flag.replace("-", "_")


def collect(args: argparse.Namespace, flags: list[tuple[str, Any, str]]) -> dict[str, Any]:
    return {field(f): getattr(args, field(f)) for f, _, _ in flags if getattr(args, field(f)) is not None}


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
