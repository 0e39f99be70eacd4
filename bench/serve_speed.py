"""`slm serve` under load: aggregate tokens/s and time to first token for 1, 8 and 32 streaming clients.

    python bench/serve_speed.py [--presets toy small] [--requests 32] [--max-tokens 64] [--rounds 2]

For each preset, `slm serve --parallel 8` runs in its own process on a random model of that shape
(weights spread wide, so greedy choices are clear-cut: speed does not depend on the weights); clients
stream completions over plain HTTP (a light client: the official one parses each chunk into objects
and, 32 at once, takes the cores from the server), each making requests one after another.
Rows: 1 client (the baseline), 8 clients (one per slot), 32 clients (four per slot: 24 wait in the
queue). Each row keeps its fastest of --rounds rounds, taken in turns. Then 8 concurrent greedy
streams are checked against the same requests made one at a time (nothing may mix between streams),
and the server's /metrics after the load is printed.

Targets (issue 17): 8 clients ≥ 4x the aggregate tokens/s of 1; time to first token p99 under 8 streams
< 1 s for toy; 32 clients on 8 slots all finish; every concurrent greedy stream equals it alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
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

from bench.models import random_checkpoint

PROMPTS = ["The king said", "First Citizen:", "What light through", "To be or not", "My lord, I"]
Result = tuple[float, list[float], int, int]  # seconds, time to first token of each request, tokens, finished


def stream_completion(host: str, port: int, body: dict) -> tuple[float, int, str]:
    """One streamed completion over plain HTTP (a light client, so that 32 of them leave the cores to the
    server): seconds to the first text, completion tokens, the text."""
    connection = http.client.HTTPConnection(host, port, timeout=600)
    t0, first, tokens, text = time.perf_counter(), 0.0, 0, []
    payload = {**body, "stream": True, "stream_options": {"include_usage": True}}
    connection.request("POST", "/v1/completions", json.dumps(payload), {"Content-Type": "application/json"})
    response = connection.getresponse()
    for line in response:
        if not line.startswith(b"data: {"):
            continue
        chunk = json.loads(line[6:])
        if chunk.get("choices") and chunk["choices"][0]["text"]:
            first = first or time.perf_counter() - t0
            text.append(chunk["choices"][0]["text"])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
    connection.close()
    return first, tokens, "".join(text)


def load(url: str, clients: int, requests: int, max_tokens: int, temperature: float = 1.0) -> Result:
    host, port = url.removeprefix("http://").split(":")

    def one(i: int) -> tuple[float, int, str]:
        body = {"prompt": PROMPTS[i % len(PROMPTS)] + f" {i}", "max_tokens": max_tokens, "seed": i}
        return stream_completion(host, int(port), {**body, "temperature": temperature})

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    seconds = time.perf_counter() - start
    return seconds, [r[0] for r in results if r[0]], sum(r[1] for r in results), len(results)


def greedy_texts(url: str, clients: int, requests: int, max_tokens: int) -> list[str]:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)

    def one(i: int) -> str:
        prompt = PROMPTS[i % len(PROMPTS)] + f" {i}"
        return client.completions.create(model="b", prompt=prompt, max_tokens=max_tokens, temperature=0).choices[0].text

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(requests)))


def start_server(path: Path, threads: int, parallel: int) -> tuple[subprocess.Popen, str]:
    """`slm serve` on a free port, once it answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "tui.cli", "serve", str(path), "--port", str(port), "--device", "cpu"]
    command += ["--parallel", str(parallel)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    root = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).close()
            return process, url
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("slm serve did not start") from None
            time.sleep(0.2)


def bench_preset(name: str, args: argparse.Namespace) -> None:
    path = random_checkpoint(Path(tempfile.mkdtemp()), name, spread=0.15)
    server, url = start_server(path, args.threads, 8)
    rows = {1: args.requests // 4, 8: args.requests, 32: args.requests}  # clients: requests
    try:
        load(url, 1, 2, args.max_tokens)  # warm up
        rounds = [{c: load(url, c, n, args.max_tokens) for c, n in rows.items()} for _ in range(args.rounds)]
        alone = greedy_texts(url, 1, 8, 24)
        together = greedy_texts(url, 8, 8, 24)
        metrics = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    finally:
        server.terminate()
        server.wait()
    print(f"\n{name}: {path}, --parallel 8, at most {args.max_tokens} tokens a request, {args.threads} thread(s)")
    print(
        f"{'clients':>7} {'requests':>8} {'finished':>8} {'tokens/s':>9} {'x 1 client':>10} {'TTFT p50':>9} {'TTFT p99':>9}"
    )
    base = 0.0
    for clients in rows:
        seconds, ttft, tokens, finished = min((r[clients] for r in rounds), key=lambda result: result[0])
        rate = tokens / seconds
        base = base or rate
        p50 = statistics.median(ttft)
        p99 = statistics.quantiles(ttft, n=100)[-1] if len(ttft) > 1 else ttft[0]
        print(
            f"{clients:>7} {rows[clients]:>8} {finished:>8} {rate:>9.0f} {rate / base:>9.2f}x "
            f"{p50 * 1000:>7.0f}ms {p99 * 1000:>7.0f}ms"
        )
    same = sum(a == b for a, b in zip(alone, together, strict=True))
    print(f"8 concurrent greedy streams equal to each alone: {same}/8")
    if args.metrics:
        print(metrics)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["toy", "small"])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads in the server")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--metrics", action="store_true", help="print the server's /metrics after the load")
    args = parser.parse_args()
    for name in args.presets:
        bench_preset(name, args)


if __name__ == "__main__":
    main()
