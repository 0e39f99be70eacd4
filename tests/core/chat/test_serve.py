"""The OpenAI-compatible server, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request

import pytest

from core.chat.generate import Generator
from core.chat.sampling import SamplingSettings
from core.chat.serve import ServeLimits, ServerThread, create_app
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
