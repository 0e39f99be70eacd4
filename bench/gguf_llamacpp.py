"""Our GGUF export in llama.cpp (through llama-cpp-python): same tokens, same logits, same greedy text.

    pip install llama-cpp-python    # builds llama.cpp from source: about 10 minutes on 2 cores
    python bench/gguf_llamacpp.py [--checkpoint CKPT] [--tokens 32]

For each of f32, f16, q8_0 and q4_0: export the checkpoint, load it in llama.cpp with an F32 KV cache,
compare its tokenization of the prompt with ours, its logits over the prompt with ours (largest
absolute difference), and its greedy continuation with ours. Ours runs the weights as the export holds
them (`weights_as_exported`: quantized and back), so a quantized row checks that llama.cpp reads the
file as we wrote it; llama.cpp also rounds activations to 8 bits for quantized products, so small
logit differences remain there (the column divides the largest by the largest logit). Without --checkpoint the model is the
toy preset's shape with grouped-query attention (4 heads, 2 kv heads), random weights spread wide
enough that greedy choices are clear-cut, and a tokenizer trained on the shared corpus.
Exits non-zero when a greedy continuation differs at f32 or f16.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import llama_cpp
import numpy as np
import torch

from bench.models import random_checkpoint
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.checkpoint import load_weights
from core.export.formats import export_checkpoint
from core.export.gguf import weights_as_exported

PROMPT = "First Citizen:\nBefore we proceed any further, hear me speak."
GGML_TYPE_F32 = 0


def compare(gen: Generator, gguf: Path, greedy: list[int]) -> tuple[bool, float, list[int]]:
    """(same prompt tokens, largest logit difference over the largest logit, llama.cpp's greedy ids) for our model and its GGUF."""
    ours_ids = gen.tokenizer.encode(PROMPT)
    llm = llama_cpp.Llama(
        str(gguf),
        n_ctx=gen.config.context,
        n_threads=2,
        logits_all=True,
        type_k=GGML_TYPE_F32,
        type_v=GGML_TYPE_F32,
        verbose=False,
    )
    same_tokens = llm.tokenize(PROMPT.encode("utf-8"), add_bos=False, special=True) == ours_ids
    llm.eval(ours_ids)
    theirs = np.asarray(llm.scores[: len(ours_ids)])
    with torch.no_grad():
        logits, _ = gen.model(torch.tensor([ours_ids]), targets=torch.tensor([ours_ids]))
    diff = float(np.abs(theirs - logits[0].numpy()).max() / np.abs(logits[0].numpy()).max())
    llm.reset()
    theirs_greedy = []
    for token in llm.generate(ours_ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
        if token == llm.token_eos() or len(theirs_greedy) == len(greedy):
            break
        theirs_greedy.append(token)
    return same_tokens, diff, theirs_greedy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: a random toy-shaped model)")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens to compare")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="slm-gguf-"))
    path = Path(args.checkpoint) if args.checkpoint else random_checkpoint(folder, "toy", spread=0.15, n_kv_head=2)
    gen = Generator.from_checkpoint(path, "cpu")
    prompt = gen.tokenizer.encode(PROMPT)
    settings = SamplingSettings(temperature=0, max_tokens=min(args.tokens, gen.config.context - len(prompt)))
    print(f"llama-cpp-python {llama_cpp.__version__}; {path}; {settings.max_tokens} greedy tokens after {PROMPT!r}")
    print(f"{'dtype':<6} {'size':>9} {'same prompt tokens':>18} {'max |diff|/max|logit|':>21}  greedy")
    failed = False
    for dtype in ("f32", "f16", "q8_0", "q4_0"):
        load_weights(gen.model, weights_as_exported(gen.checkpoint, dtype), path)
        ours = list(gen.token_ids(prompt, settings))
        gguf = export_checkpoint(path, "gguf", folder / f"model-{dtype}.gguf", dtype)
        same, diff, theirs = compare(gen, gguf, ours)
        agree = next(
            (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), min(len(ours), len(theirs))
        )
        verdict = "same" if ours == theirs else f"differs from token {agree} of {len(ours)}"
        failed |= dtype in ("f32", "f16") and (ours != theirs or not same)
        print(f"{dtype:<6} {gguf.stat().st_size / 1e6:>8.2f}M {same!s:>18} {diff:>21.2e}  {verdict}")
        print(f"       our continuation: {gen.tokenizer.decode(ours)!r}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
