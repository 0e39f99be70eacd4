"""The OpenAI-compatible server, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.chat.batch import Sequence
from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.chat.scheduler import QueueFull, Scheduler
from core.chat.serve import API, ServeLimits, ServerThread, create_app
from core.tokenizer.chat_template import render_chat
from tests.core.export.test_export import make_checkpoint

openai = pytest.importorskip("openai")

KEY = "test-key"


@pytest.fixture(scope="module")
def generator(tmp_path_factory, tokenizer_file) -> Generator:
    path = make_checkpoint(tmp_path_factory.mktemp("serve") / "run" / "final", tokenizer_file)
    return Generator.from_checkpoint(path, "cpu")


@pytest.fixture(scope="module")
def server(generator):
    app = create_app(generator, "run/final", api_key=KEY, limits=ServeLimits(max_tokens=64, max_body_bytes=4096))
    running = ServerThread(app).start()
    yield running
    running.stop()


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=30)


def greedy(generator: Generator, prompt: list[int], n: int, stop: list[str] | None = None) -> str:
    return generator.generate(prompt, SamplingSettings(temperature=0, max_tokens=n, stop=stop or []))


def test_models_lists_the_checkpoint(client):
    assert [m.id for m in client.models.list()] == ["run/final"]


def test_streaming_chat_matches_the_engine(client, generator):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cat sees"}]
    stream = client.chat.completions.create(
        model="run/final",
        messages=messages,
        stream=True,
        temperature=0,
        max_tokens=10,
        stream_options={"include_usage": True},
    )
    *chunks, usage = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    prompt = render_chat(messages, generator.tokenizer)
    assert text == greedy(generator, prompt, 10, ["<|end|>"])
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    assert usage.choices == [] and usage.usage.prompt_tokens == len(prompt)


def test_completion_with_n_seed_and_stop(client, generator):
    prompt = "A dog follows"
    reply = client.completions.create(model="x", prompt=prompt, max_tokens=8, temperature=0, n=2)
    expected = greedy(generator, generator.tokenizer.encode(prompt), 8)
    assert [c.text for c in reply.choices] == [expected, expected]
    assert reply.usage.prompt_tokens == len(generator.tokenizer.encode(prompt))
    assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"

    seeded = [client.completions.create(model="x", prompt=prompt, max_tokens=8, seed=7).choices[0].text for _ in "ab"]
    assert seeded[0] == seeded[1]
    stop = expected[3:5]
    cut = client.completions.create(model="x", prompt=prompt, max_tokens=8, temperature=0, stop=[stop])
    assert cut.choices[0].text == expected[: expected.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_bad_requests_get_openai_errors(client, server):
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="x", prompt="hi", max_tokens=65)
    assert e.value.body["param"] == "max_tokens" and "max_tokens" in e.value.message
    with pytest.raises(openai.BadRequestError, match="role"):
        client.chat.completions.create(model="x", messages=[{"role": "robot", "content": "hi"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key="wrong", max_retries=0).models.list()

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{server.url}/completions", body, {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    status, body = post(b"{not json")
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = post(b"[" * 2000 + b"]" * 2000)  # deeper than Python's JSON parser goes
    assert status == 400 and "too deeply" in body["error"]["message"]
    assert post(json.dumps({"prompt": "x" * 5000}).encode())[0] == 413
    assert post(json.dumps({"prompt": "hi", "temperature": "hot"}).encode())[1]["error"]["param"] == "temperature"


def test_concurrent_streams_do_not_mix(client, generator):
    """Eight clients at once each get exactly the text they would get alone."""
    prompts = [f"The queen {verb}" for verb in ("sees", "loves", "finds", "hears")] * 2
    results: dict[int, str] = {}

    def ask(i: int) -> None:
        stream = client.completions.create(model="x", prompt=prompts[i], max_tokens=6, temperature=0, stream=True)
        results[i] = "".join(c.choices[0].text for c in stream)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: greedy(generator, generator.tokenizer.encode(p), 6) for i, p in enumerate(prompts)}


def test_concurrent_streams_with_n_and_seeds_match_each_request_alone(client, generator):
    """Sampled choices decode in one batch with other requests, each as its own seeded sequence."""
    prompts = ["The moon", "A cat sees the", "x"]

    def ask(prompt: str) -> list[str]:
        reply = client.completions.create(model="x", prompt=prompt, max_tokens=12, seed=3, n=2, temperature=1.0)
        return [c.text for c in sorted(reply.choices, key=lambda c: c.index)]

    with ThreadPoolExecutor(len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    for prompt, texts in zip(prompts, together, strict=True):
        settings = [SamplingSettings(temperature=1.0, top_k=0, max_tokens=12, seed=3 + i) for i in range(2)]
        assert texts == [generator.generate(prompt, s) for s in settings]


def test_metrics_and_health(client, server):
    client.completions.create(model="x", prompt="The", max_tokens=4, temperature=0)
    health = json.load(urllib.request.urlopen(server.url.removesuffix("/v1") + "/health", timeout=10))
    assert health == {"status": "ok", "slots_idle": 8, "queued": 0}
    request = urllib.request.Request(
        server.url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {KEY}"}
    )
    text = urllib.request.urlopen(request, timeout=10).read().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert float(values["slm_requests_total"]) >= 1 and float(values["slm_generated_tokens_total"]) >= 4
    assert values["slm_slots"] == "8" and values["slm_slots_busy"] == "0"
    assert int(values["slm_time_to_first_token_seconds_count"]) >= 1


def test_a_full_queue_is_refused_and_the_rest_are_served(generator):
    scheduler = Scheduler(generator, parallel=1, max_queue=1)
    ended: list[str] = []

    def make() -> Sequence:
        return Sequence([5], SamplingSettings(temperature=0, max_tokens=3), on_done=lambda s: ended.append(s.output))

    with scheduler.wake:  # the decoding thread cannot take anything in meanwhile
        scheduler.submit([make()])  # takes the free slot
        scheduler.submit([make()])  # waits
        with pytest.raises(QueueFull):
            scheduler.submit([make()])
    deadline = time.monotonic() + 10
    while len(ended) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.close()
    assert len(ended) == 2 and ended[0] == ended[1]
    assert scheduler.metrics().rejected == 1

    api = API(generator, "x", None, ServeLimits())
    api.scheduler.submit = lambda sequences: (_ for _ in ()).throw(QueueFull())
    running = ServerThread(api.app()).start()
    try:
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=running.url, api_key="x", max_retries=0).completions.create(model="x", prompt="a")
    finally:
        running.stop()


def test_a_client_that_disconnects_frees_its_slot(generator):
    generator.stop_ids, stop_ids = set(), generator.stop_ids  # an endless stream unless the client goes
    api = API(generator, "x", None, ServeLimits(parallel=1, max_tokens=100_000))
    running = ServerThread(api.app()).start()
    try:
        client = openai.OpenAI(base_url=running.url, api_key="x", max_retries=0, timeout=30)
        stream = client.completions.create(model="x", prompt="The", max_tokens=100_000, stream=True)
        next(iter(stream))
        stream.close()
        deadline = time.monotonic() + 10
        while api.scheduler.metrics().busy_slots and time.monotonic() < deadline:
            time.sleep(0.01)
        assert api.scheduler.metrics().busy_slots == 0
        made = api.scheduler.metrics().generated_tokens
        assert 0 < made < 100_000
        reply = client.completions.create(model="x", prompt="The", max_tokens=3, temperature=0)  # the slot is free
        assert reply.usage.completion_tokens == 3
    finally:
        running.stop()
        generator.stop_ids = stop_ids
