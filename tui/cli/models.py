"""Using checkpoints: `slm generate`, `eval`, `checkpoints`, `presets`, `export`, `import`, `serve`, `feedback`."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from core.errors import SLMError
from tui.cli.flags import collect
from tui.cli.parser import SAMPLING_FLAGS
from tui.format import clip, size


def cmd_generate(args: argparse.Namespace, ws) -> None:
    from core.chat.generate import Generator
    from core.chat.sampling import SamplingSettings
    from core.listing import resolve_checkpoint

    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device, args.dtype)
    settings = SamplingSettings(**collect(args, SAMPLING_FLAGS))
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
    if args.num_samples < 1:
        raise SLMError(f"--num-samples must be at least 1, not {args.num_samples}")
    if args.num_samples == 1 or args.no_cache:
        for i in range(args.num_samples):
            if args.num_samples > 1:
                print(f"--- sample {i + 1}")
            seed = None if settings.seed is None else settings.seed + i
            _stream(gen, args.prompt, replace(settings, seed=seed), args.no_cache, args.chat)
        return
    from core.chat.batch import samples

    ids, settings = _request(gen, args.prompt, settings, args.chat)
    for i, seq in enumerate(samples(gen, ids, settings, args.num_samples)):
        print(f"--- sample {i + 1}")
        print(seq.output if args.chat else args.prompt + seq.output)


def _request(gen, prompt: str, settings, chat: bool) -> tuple[list[int], object]:
    """The prompt's token ids and settings; with `chat`, the prompt as a user message in the chat template."""
    if not chat:
        return gen.tokenizer.encode(prompt), settings
    from core.tokenizer.chat_template import END, render_chat

    ids = render_chat([{"role": "user", "content": prompt}], gen.tokenizer)
    return ids, replace(settings, stop=[*settings.stop, END])


def _stream(gen, prompt: str, settings, no_cache: bool, chat: bool = False) -> None:
    """Print `prompt` and its continuation; with `chat`, only the reply to it as a user message."""
    ids, settings = _request(gen, prompt, settings, chat)
    out = gen.stream(ids, settings, use_cache=not no_cache)
    if not chat:
        sys.stdout.write(prompt)
    for piece in out:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if out.truncated:
        print(f"note: the prompt was {out.truncated} tokens too long; its start was dropped", file=sys.stderr)


def cmd_eval(args: argparse.Namespace, ws) -> None:
    from core.chat.generate import Generator
    from core.evaluate import evaluate_file
    from core.listing import resolve_checkpoint

    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device)
    result = evaluate_file(gen.model, gen.tokenizer, args.file, max_tokens=args.max_tokens)
    print(f"{path}: {args.file}")
    print(f"loss {result.loss:.4f} | perplexity {result.ppl:.2f} | {result.bpb:.4f} bits/byte | {result.tokens} tokens")
    if args.dtype == "int8":
        import copy

        from core.chat.quantize import quantize

        model, what = quantize(copy.deepcopy(gen.model), "int8"), "as `generate --dtype int8` runs it"
    elif args.dtype:
        from core.checkpoint import load_weights
        from core.export.gguf import weights_as_exported
        from core.model import GPT

        model, what = GPT(gen.checkpoint.config), f"the weights of a GGUF export as {args.dtype}"
        load_weights(model, weights_as_exported(gen.checkpoint, args.dtype), path)
    if args.dtype:
        quantized = evaluate_file(model.to(gen.device).eval(), gen.tokenizer, args.file, max_tokens=args.max_tokens)
        change = 100 * (quantized.bpb / result.bpb - 1)
        print(f"{args.dtype} ({what}): loss {quantized.loss:.4f} | "
              f"{quantized.bpb:.4f} bits/byte ({change:+.2f}% against f32)")  # fmt: skip


def cmd_checkpoints(args: argparse.Namespace, ws) -> None:
    from core.listing import list_checkpoints

    entries = list_checkpoints(ws, unreadable=True)
    if not entries:
        print(f"no checkpoints in {ws.checkpoints_dir}: train one with `slm train`")
        return
    print(f"{'checkpoint':<40} {'step':>7} {'val loss':>9} {'bits/byte':>9} {'params':>8}  {'created':<19}  from")
    for e in entries:
        if e.error:  # a damaged checkpoint gets its row and its reason; the others stay usable
            print(f"{e.run + '/' + e.kind:<40} unreadable: {e.error}")
            continue
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
    print("auto    the planner's model for a budget, this corpus and machine: `slm plan --max-minutes M`")


def cmd_export(args: argparse.Namespace, ws) -> None:
    from core.export.formats import export_checkpoint
    from core.listing import resolve_checkpoint

    path = resolve_checkpoint(ws, args.checkpoint)
    out = export_checkpoint(path, args.format, args.out, args.dtype)
    print(f"exported {path} to {out} ({args.format}, {args.dtype})")


def cmd_import(args: argparse.Namespace, ws) -> None:
    from core.export.hf import import_hf

    ws.ensure()
    path = import_hf(args.hf_dir, ws, args.name)
    print(f"imported {args.hf_dir} as {path}; try: slm generate {args.name}")


def cmd_serve(args: argparse.Namespace, ws) -> None:
    from core.chat.generate import Generator
    from core.chat.scheduler import default_parallel
    from core.chat.serve import ServeLimits, create_app, run_server
    from core.listing import label, resolve_checkpoint

    api_key = args.api_key or os.environ.get("SLM_API_KEY") or None
    path = resolve_checkpoint(ws, args.checkpoint)
    gen = Generator.from_checkpoint(path, args.device, args.dtype)
    name = label(path)
    parallel = args.parallel or default_parallel(gen.config, gen.device)
    limits = ServeLimits(parallel=parallel, max_tokens=args.max_tokens, max_queue=args.max_queue)
    app = create_app(gen, name, api_key, limits)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {args.host} without --api-key: anyone who can reach it can use it", file=sys.stderr)
    at = f"{parallel} at once, {args.dtype} weights"
    print(f"serving {name} at http://{args.host}:{args.port}/v1, {at} (Ctrl-C stops)", file=sys.stderr)
    run_server(app, args.host, args.port)


def cmd_feedback(args: argparse.Namespace, ws) -> None:
    from core.chat.feedback import FeedbackDB, preference_pairs

    db = FeedbackDB.for_workspace(ws)
    problems: list[str] = []
    ratings = db.ratings(problems)
    for problem in problems:
        print(f"warning: {problem}: left out", file=sys.stderr)
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
