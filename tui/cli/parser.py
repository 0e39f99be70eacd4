"""The `slm` argument parser: one parser per command, its engine flags derived from the configs (`tui.cli.flags`)."""

from __future__ import annotations

import argparse

from core.chat.sampling import DTYPES, SamplingSettings
from core.config import DPO_TRAIN, PRESETS, SFT_TRAIN, ModelConfig, TrainConfig
from core.merge.pipeline import CONTINUE_LR
from core.merge.weights import MergeOptions
from tui.cli.flags import add_flags, config_flags

# --- flags derived from the engine's configs ------------------------------------------------------

MODEL_FLAGS = config_flags(ModelConfig)
ALL_TRAIN_FLAGS = config_flags(TrainConfig)  # those a command does not offer are None in its arguments
TRAIN_FLAGS = [f for f in config_flags(TrainConfig) if f.kind in (int, float)]  # the numbers of a run
RECIPE_FLAGS = config_flags(TrainConfig, ["optimizer", "schedule", "device", "precision"])
SWITCH_FLAGS = config_flags(TrainConfig, ["compile", "grad_checkpoint"])
SAMPLING_FLAGS = config_flags(SamplingSettings)
RESUME_FLAGS = TRAIN_FLAGS + config_flags(TrainConfig, ["device", "precision", "compile", "grad_checkpoint", "shard"])
# fields a preset or a tuning command sets: their flags show no default, since the preset's applies
FROM_PRESETS = {key for p in PRESETS.values() for key in [*p.model, *p.train]} | {*SFT_TRAIN, *DPO_TRAIN}
SHOWN = {f.field for f in ALL_TRAIN_FLAGS} - FROM_PRESETS


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
    add_flags(p, config_flags(TrainConfig, ["decode_errors"]), defaults=True)
    add_flags(p, config_flags(TrainConfig, ["mix"]), help_for={"mix": "show the shares these weights give the sources"})

    p = sub.add_parser("tokenize", help="train a byte-level BPE tokenizer on the corpus")
    p.add_argument("--name", required=True, help="saved as checkpoints/tokenizers/NAME/tokenizer.json")
    add_flags(
        p, config_flags(ModelConfig, ["vocab_size"]) + config_flags(TrainConfig, ["min_frequency"]), defaults=True
    )
    _data_flags(p)

    p = sub.add_parser("plan", help="the model and recipe that fit a time or token budget on this corpus and machine")
    add_flags(p, config_flags(TrainConfig, ["max_minutes", "max_tokens"]))
    add_flags(p, config_flags(ModelConfig, ["vocab_size"]), prefix="plan for this ")
    add_flags(p, config_flags(TrainConfig, ["device", "precision", "threads"]))
    p.add_argument("--reprobe", action="store_true", help="measure this machine's speed again (default: cached)")
    _data_flags(p)

    p = sub.add_parser("train", help="train a model (new, fine-tuned with --from, or resumed with --resume)")
    _recipe_flags(p, auto=True)
    p.add_argument("--name", help="run name (default: PRESET-DATE-TIME)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--from", dest="init_from", metavar="CKPT", help="start from these weights (fine-tuning)")
    p.add_argument("--tokenizer", help="a tokenizer name or tokenizer.json path (default: train one)")
    add_flags(p, SWITCH_FLAGS)
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    add_flags(p, MODEL_FLAGS)
    add_flags(p, TRAIN_FLAGS, shown=SHOWN)
    _data_flags(p, val=False)
    add_flags(p, config_flags(TrainConfig, ["mix"]))
    multi = p.add_argument_group("several processes (torchrun)")
    multi.add_argument("--nproc", type=int, help="launch torchrun with N processes on this machine (one per GPU)")
    multi.add_argument("--nnodes", default="1", help="machines in the job, for torchrun (default 1)")
    multi.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="rendezvous of a multi-machine job, for torchrun")
    add_flags(multi, config_flags(TrainConfig, ["shard"]))

    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--prompt", default="", help="text to continue (default: start a new document)")
    _sampling_flags(p)
    p.add_argument("--num-samples", type=int, default=1, help="independent samples, decoded as one batch (default 1)")
    p.add_argument("--interactive", action="store_true", help="read prompts from the terminal until an empty line")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole context each token (slow; for checks)")
    p.add_argument(
        "--chat", action="store_true", help="send the prompt as a user message in the chat template; print the reply"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _dtype_flag(p)

    p = sub.add_parser("eval", help="loss, perplexity and bits per byte of a checkpoint on a text file")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--file", required=True, help="a UTF-8 text file")
    p.add_argument("--max-tokens", type=int, help="evaluate only the first N tokens")
    p.add_argument(
        "--dtype",
        choices=["int8", "q8_0", "q4_0"],
        help="also score the model as `generate --dtype int8` runs it, or the weights as a GGUF export of this type "
        "holds them",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")

    _merge_parsers(sub)
    sub.add_parser("checkpoints", help="list runs and their checkpoints")
    sub.add_parser("presets", help="list the model presets")
    _runs_parsers(sub)
    _chat_model_parsers(sub)

    p = sub.add_parser("export", help="export a checkpoint as a Hugging Face Llama folder or a GGUF file")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--format", required=True, choices=["hf", "gguf"], help="hf: a transformers folder; gguf: llama.cpp")
    p.add_argument("--out", required=True, metavar="PATH", help="the folder (hf) or file (gguf) to write")
    p.add_argument(
        "--dtype", choices=["f32", "f16", "q8_0", "q4_0"], default="f32", help="weight type (q8_0, q4_0: gguf only)"
    )

    p = sub.add_parser("import", help="import a local Hugging Face Llama checkpoint as a run")
    p.add_argument("hf_dir", metavar="HF_DIR", help="a folder with config.json, *.safetensors and tokenizer.json")
    p.add_argument("--name", required=True, help="the run name: checkpoints/NAME/final")

    p = sub.add_parser("serve", help="serve a checkpoint over an OpenAI-compatible HTTP API")
    p.add_argument("checkpoint", nargs="?", help="RUN, RUN/best|final|latest or a folder (default: the newest run)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $SLM_API_KEY, else none)")
    p.add_argument("--max-tokens", type=int, default=1024, help="the most new tokens a request may ask for")
    p.add_argument(
        "--parallel",
        type=int,
        help="sequences decoded together (default: 8 on a CPU, 16 on a GPU, fewer for big models)",
    )
    p.add_argument("--max-queue", type=int, default=32, help="requests that may wait for a slot; past it: 429")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _dtype_flag(p)
    return parser


def _dtype_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default="f32",
        help="weights for generation: f32 (exact, the default) or int8 (CPU: up to 4x faster decoding; "
        "`slm eval --dtype int8` shows its cost in bits/byte)",
    )


def _recipe_flags(p: argparse.ArgumentParser, auto: bool = False) -> None:
    """Preset, optimizer, schedule, device and precision: the flags a branch process is handed on. With `auto`
    the preset may be the planner's, the default under --max-minutes."""
    choices = f"auto (the planner's, see `slm plan`), {', '.join(PRESETS)}" if auto else ", ".join(PRESETS)
    default = "auto with --max-minutes, else toy" if auto else "toy"
    p.add_argument("--preset", default=None if auto else "toy", help=f"model and training defaults: {choices} "
                   f"(default {default})")  # fmt: skip
    add_flags(p, RECIPE_FLAGS, shown=SHOWN)


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
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    add_flags(p, MODEL_FLAGS, prefix="the base: ")
    _merge_flags(p)
    _branch_flags(p)


def _merge_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="linear", help="linear (default), slerp, task-arithmetic or ties")
    p.add_argument(
        "--weights", nargs="+", type=float, help="one per checkpoint (default equal); slerp: t is the second's share"
    )
    add_flags(p, config_flags(MergeOptions), shown={"density", "scale"})


def _branch_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--per",
        choices=["folder", "file"],
        default="folder",
        help="one branch per top-level entry of data/ (default) or per file",
    )
    p.add_argument("--parallel", type=int, help="branches trained at once (default: all, at most one per CPU thread)")
    _recipe_flags(p)
    add_flags(p, TRAIN_FLAGS, shown=SHOWN, help_for={"threads": "in all: CPU threads, split between the branches"})
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
    add_flags(p, RECIPE_FLAGS, shown=SHOWN)
    p.add_argument("--log-interval", type=int, default=10, help="print a step line every N steps (default 10)")
    add_flags(p, TRAIN_FLAGS, shown=SHOWN)


def _data_flags(p: argparse.ArgumentParser, val: bool = True) -> None:
    add_flags(p, config_flags(TrainConfig, ["data", "decode_errors", "keep_duplicates"]), shown=SHOWN)
    if val:
        add_flags(p, config_flags(TrainConfig, ["val_fraction", "split_seed"]), defaults=True)


def _sampling_flags(p: argparse.ArgumentParser) -> None:
    add_flags(p, SAMPLING_FLAGS, defaults=True)


def _runs_parsers(sub) -> None:
    from core.runs.curves import AXES, METRICS
    from core.runs.table import ENDED, KINDS, SORTS

    p = sub.add_parser("runs", help="list every run: status, kind, shape, progress, best bits/byte, lineage")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.add_argument("--tree", action="store_true", help="print the lineage: base -> branches -> merge -> fine-tune")
    p.add_argument("--sort", choices=SORTS, default="created", help="order of the rows (default: newest first)")
    statuses = sorted({"training", *ENDED.values()})
    p.add_argument("--status", nargs="+", choices=statuses, help="only runs with these statuses")
    p.add_argument("--kind", nargs="+", choices=KINDS, help="only runs of these kinds")

    p = sub.add_parser("compare", help="compare runs: final figures, the settings that differ, the curves overlaid")
    p.add_argument("runs", nargs="+", metavar="RUN", help="the runs to compare, by name")
    p.add_argument("--metric", choices=METRICS, default="val_bpb", help="what the plot shows (default: val_bpb)")
    p.add_argument("--x", choices=AXES, default="step", help="the plot's x axis (default: step)")
    p.add_argument("--smooth", type=_smoothing, default=0.0, help="TensorBoard-style smoothing in [0, 1) (default 0)")
    p.add_argument("--no-plot", action="store_true", help="leave the plot out (it is drawn only on a terminal)")


def _smoothing(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1, not {text}")
    return value
