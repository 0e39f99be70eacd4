"""Decode speed: ours vs llama.cpp vs transformers `generate`, on the same exported models.

    python bench/generate_speed.py [--presets toy small] [--tokens 256] [--rounds 5] [--threads 1 2] [--dtypes int8]

For each preset, a random model of its shape (weights spread wide, so greedy choices vary) is saved
and exported to GGUF (f32 and q8_0) and to a Hugging Face folder. Each engine then makes --tokens
greedy tokens after a short prompt (fewer where the context is shorter: toy's 64 leaves 48), over
and over for half a second, in its own process (so each imports and sets its threads fresh), and
prints its tokens/s; the runs take turns for --rounds rounds and the table shows medians.
Engines: ours (`Generator`: exact fp32, and each of --dtypes, default int8), llama.cpp through
llama-cpp-python (skipped with a note when it does not import), transformers (skipped likewise).
"busy" rows repeat ours and llama.cpp while two other processes keep both cores spinning.
The floor column is the weight bytes a token reads divided by this machine's measured copy bandwidth.

Targets (issue 17): ours (exact) >= 1.0x llama.cpp f32 at both sizes; no collapse on a busy machine;
ours at reduced precision >= 1.0x llama.cpp q8_0.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak."
BYTES = {"f32": 4, "bf16": 2, "q8_0": 34 / 32, "int8": 1}


# --- one engine, in its own process ----------------------------------------------------------------


def timed(generate: Callable[[], int], seconds: float = 0.5) -> float:
    """Tokens/s of `generate` (a prompt, then new tokens; it returns how many), repeated for `seconds`."""
    made, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        made += generate()
    return made / elapsed


def run_ours(path: str, threads: int, tokens: int, dtype: str) -> float:
    import torch

    from core.chat.generate import Generator
    from core.chat.sampling import SamplingSettings

    torch.set_num_threads(threads)
    gen = Generator.from_checkpoint(Path(path), "cpu", dtype)
    gen.stop_ids = set()
    settings = SamplingSettings(temperature=0, max_tokens=tokens)
    prompt = gen.tokenizer.encode(PROMPT)
    sum(1 for _ in gen.token_ids(prompt, SamplingSettings(temperature=0, max_tokens=8)))  # warm up
    return timed(lambda: sum(1 for _ in gen.token_ids(prompt, settings)))


def run_llama(path: str, threads: int, tokens: int, ctx: int) -> float:
    import llama_cpp

    llm = llama_cpp.Llama(path, n_ctx=ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True)

    def greedy(n: int) -> int:
        llm.reset()
        made = 0
        for _ in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            made += 1
            if made == n:
                break
        return made

    greedy(8)
    return timed(lambda: greedy(tokens))


def run_transformers(path: str, threads: int, tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = AutoTokenizer.from_pretrained(path)(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(do_sample=False, pad_token_id=0, eos_token_id=None)
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kwargs)
    return timed(
        lambda: model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, **kwargs).shape[1] - ids.shape[1]
    )


def worker(spec: dict) -> None:
    engine = spec["engine"]
    if engine == "ours":
        rate = run_ours(spec["path"], spec["threads"], spec["tokens"], spec["dtype"])
    elif engine == "llama.cpp":
        rate = run_llama(spec["path"], spec["threads"], spec["tokens"], spec["ctx"])
    else:
        rate = run_transformers(spec["path"], spec["threads"], spec["tokens"])
    print(json.dumps({"tokens_per_s": rate}))


def measure(spec: dict) -> float | None:
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"  {spec['engine']} {spec.get('dtype', '')} failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["tokens_per_s"]


# --- the machine -------------------------------------------------------------------------------------


def copy_bandwidth() -> float:
    """Bytes per second a single thread moves copying 256 MB (read and write counted)."""
    import torch

    torch.set_num_threads(1)
    a, b = torch.ones(64 << 20), torch.empty(64 << 20)
    best = 0.0
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        best = max(best, 2 * a.numel() * 4 / (time.perf_counter() - start))
    return best


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


class Busy:
    """Two processes keeping both cores spinning, as another job on the machine would."""

    def __enter__(self) -> Busy:
        self.procs = [multiprocessing.Process(target=spin, args=(600,), daemon=True) for _ in range(2)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
            p.join()


def importable(name: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True).returncode == 0


# --- the table ---------------------------------------------------------------------------------------


def models(preset_name: str, folder: Path, dtypes: list[str], tokens: int) -> tuple[dict, dict]:
    """The checkpoint, its exports, and the facts the table needs (new tokens: within the context)."""
    from bench.models import random_checkpoint
    from core.checkpoint import load_checkpoint
    from core.export.formats import export_checkpoint

    path = random_checkpoint(folder, preset_name, spread=0.15)
    config = load_checkpoint(path).config
    blocks = config.n_layer * (
        config.n_embd * (config.n_head + 2 * config.n_kv_head) * config.head_dim
        + config.n_head * config.head_dim * config.n_embd
        + 3 * config.n_embd * config.mlp_hidden
    )
    files = {"checkpoint": path, "hf": export_checkpoint(path, "hf", folder / f"{preset_name}-hf")}
    for dtype in ("f32", "q8_0"):
        files[dtype] = export_checkpoint(path, "gguf", folder / f"{preset_name}-{dtype}.gguf", dtype)
    facts = {
        "ctx": config.context,
        "tokens": min(tokens, config.context - 16),
        "weights": blocks + config.vocab_size * config.n_embd,
        "dtypes": dtypes,
    }
    return files, facts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["toy", "small"])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument(
        "--dtypes", nargs="*", default=["int8"], help="our reduced precisions beside f32 (default int8)"
    )
    parser.add_argument("--no-busy", action="store_true", help="skip the busy-machine rows")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    have_llama, have_hf = importable("llama_cpp"), importable("transformers")
    if not have_llama:
        print("llama.cpp: skipped (pip install llama-cpp-python to compare; it builds llama.cpp: ~10 min)")
    if not have_hf:
        print("transformers: skipped (pip install transformers to compare)")
    bandwidth = copy_bandwidth()
    print(
        f"copy bandwidth, one thread: {bandwidth / 1e9:.1f} GB/s; greedy tokens after a short prompt, medians of {args.rounds}"
    )
    folder = Path(tempfile.mkdtemp(prefix="slm-genbench-"))
    for preset_name in args.presets:
        files, facts = models(preset_name, folder, args.dtypes, args.tokens)
        rows: dict[tuple[str, str, int], dict] = {}  # (engine, weights, threads): the spec
        for threads in args.threads:
            for dtype in ["f32", *args.dtypes]:
                rows["ours", dtype, threads] = {"engine": "ours", "path": str(files["checkpoint"]), "dtype": dtype}
            for dtype in ("f32", "q8_0") if have_llama else ():
                rows["llama.cpp", dtype, threads] = {
                    "engine": "llama.cpp",
                    "path": str(files[dtype]),
                    "ctx": facts["ctx"],
                }
            if have_hf:
                rows["transformers", "f32", threads] = {"engine": "transformers", "path": str(files["hf"])}
        for spec, (_, _, threads) in zip(rows.values(), rows, strict=True):
            spec.update(threads=threads, tokens=facts["tokens"])
        rates: dict[tuple[str, str, int], list[float]] = {key: [] for key in rows}
        for _ in range(args.rounds):
            for key, spec in rows.items():
                if (rate := measure(spec)) is not None:
                    rates[key].append(rate)
        if not args.no_busy:
            best = max(args.threads)
            for key in [k for k in rows if k[2] == best and k[0] != "transformers"]:
                busy_key = (key[0] + " busy", key[1], key[2])
                with Busy():
                    rates[busy_key] = [r for _ in range(max(1, args.rounds // 2)) if (r := measure(rows[key]))]
        print(
            f"\n{preset_name}: {facts['weights'] / 1e6:.1f}M weights read per token, {facts['tokens']} new tokens a run"
        )
        print(f"{'engine':<18} {'weights':<6} {'threads':>7} {'tokens/s':>9} {'floor tok/s':>11} {'x llama.cpp':>11}")
        for (engine, dtype, threads), values in rates.items():
            if not values:
                continue
            rate = statistics.median(values)
            floor = bandwidth / (facts["weights"] * BYTES.get(dtype, 4))
            peer = "q8_0" if dtype in ("q8_0", "int8", "bf16") else "f32"
            ref = rates.get(("llama.cpp" + (" busy" if "busy" in engine else ""), peer, threads))
            ratio = f"{rate / statistics.median(ref):>10.2f}x" if ref and engine.startswith("ours") else ""
            print(f"{engine:<18} {dtype:<6} {threads:>7} {rate:>9.0f} {floor:>11.0f} {ratio:>11}")


if __name__ == "__main__":
    main()
