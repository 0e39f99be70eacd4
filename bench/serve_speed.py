"""`slm serve` under load: requests/s and time to first token for 1 and 8 concurrent clients.

    python bench/serve_speed.py [--checkpoint CKPT] [--preset toy] [--requests 32] [--max-tokens 64] [--rounds 3]

The server is `slm serve` in its own process; each client streams completions through the official
`openai` client, one request after another. The baseline is the engine alone (`Generator.stream`,
no HTTP) with the same prompts, seeds and sampling, so both make the same tokens. Without
`--checkpoint` the model is a randomly initialised preset (speed does not depend on the weights)
with a tokenizer trained on the shared corpus (or the sample corpus). The three measurements take
turns for --rounds rounds and each keeps its fastest round, so a busy machine skews them alike.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai
import torch

from bench.models import random_checkpoint
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings

PROMPTS = ["The king said", "First Citizen:", "What light through", "To be or not", "My lord, I"]
Result = tuple[float, list[float], int]  # seconds, time to first token of each request, tokens made


def engine_run(generator: Generator, requests: int, max_tokens: int) -> Result:
    ttft, tokens, start = [], 0, time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        # the server's defaults: temperature 1, no top-k
        settings = SamplingSettings(temperature=1.0, top_k=0, max_tokens=max_tokens, seed=i)
        generation = generator.stream(PROMPTS[i % len(PROMPTS)], settings)
        for j, _ in enumerate(generation):
            if j == 0:
                ttft.append(time.perf_counter() - t0)
        tokens += generation.new_tokens
    return time.perf_counter() - start, ttft, tokens


def server_run(url: str, clients: int, requests: int, max_tokens: int) -> Result:
    client = openai.OpenAI(base_url=url, api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> tuple[float, int]:
        t0, first, tokens = time.perf_counter(), 0.0, 0
        stream = client.completions.create(
            model="bench",
            prompt=PROMPTS[i % len(PROMPTS)],
            max_tokens=max_tokens,
            seed=i,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter() - t0
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        return first, tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    return time.perf_counter() - start, [r[0] for r in results], sum(r[1] for r in results)


def start_server(path: Path, threads: int) -> tuple[subprocess.Popen, str]:
    """`slm serve` on a free port, once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tui.cli", "serve", str(path), "--port", str(port), "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/models", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("slm serve did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", help="a checkpoint folder (default: a random model of --preset)")
    parser.add_argument("--preset", default="toy")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads, here and in the server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = Path(args.checkpoint) if args.checkpoint else random_checkpoint(Path(tempfile.mkdtemp()), args.preset)
    generator = Generator.from_checkpoint(path, "cpu")
    params = sum(p.numel() for p in generator.model.parameters())
    print(f"model: {path} ({params / 1e6:.2f}M parameters), at most {args.max_tokens} tokens a request")
    server, url = start_server(path, args.threads)
    runs = {
        ("engine, no HTTP", 1): lambda: engine_run(generator, args.requests, args.max_tokens),
        ("slm serve", 1): lambda: server_run(url, 1, args.requests, args.max_tokens),
        ("slm serve", 8): lambda: server_run(url, 8, args.requests, args.max_tokens),
    }
    try:
        engine_run(generator, 2, args.max_tokens)  # warm up
        server_run(url, 1, 2, args.max_tokens)
        rounds = [{key: run() for key, run in runs.items()} for _ in range(args.rounds)]
    finally:
        server.terminate()
        server.wait()
    print(f"{'':<16} {'clients':>7} {'requests':>8} {'req/s':>7} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p90':>9}")
    for label, clients in runs:
        seconds, ttft, tokens = min((r[label, clients] for r in rounds), key=lambda result: result[0])
        p50, p90 = statistics.median(ttft), statistics.quantiles(ttft, n=10)[-1]
        print(
            f"{label:<16} {clients:>7} {len(ttft):>8} {len(ttft) / seconds:>7.2f} {tokens / seconds:>9.0f} "
            f"{p50 * 1000:>7.1f}ms {p90 * 1000:>7.1f}ms"
        )


if __name__ == "__main__":
    main()
