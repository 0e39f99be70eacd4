"""An OpenAI-compatible HTTP API for one checkpoint, on Starlette and uvicorn.

`GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions`, answered whole or streamed as
server-sent events in OpenAI's chunk format (`data: {chunk}` lines ending with `data: [DONE]`), with
temperature, top_p, max_tokens, stop, seed and n. The model is loaded once; requests run one at a time
on a single worker thread, in arrival order, so outputs never mix. Safe by default: loopback only,
an optional bearer API key, bounded bodies, token counts, choices and queue, and every bad request a
400 with an OpenAI-style error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from core.chat.sampling import SamplingSettings
from core.data.conversations import ROLES, Message
from core.errors import SLMError
from core.tokenizer.chat_template import END, completion_text, is_chat_model, render_chat

if TYPE_CHECKING:
    import socket

    import uvicorn

    from core.chat.generate import Generation, Generator

FINISH_REASONS = {"eot": "stop", "stop": "stop", "length": "length", "context": "length", "cancelled": "stop"}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how many may wait."""

    max_body_bytes: int = 1 << 20
    max_tokens: int = 1024
    max_n: int = 8
    max_stop: int = 4
    max_queue: int = 32

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise SLMError(f"the server's {name.replace('_', ' ')} must be at least 1, not {value}")


class APIError(Exception):
    """A request the server refuses, answered as OpenAI does: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        error = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": error}, status_code=self.status)


# --- reading requests ---------------------------------------------------------------------------


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object, refused (413) past `limit` bytes without reading further."""
    declared = request.headers.get("content-length", "")
    too_large = APIError(413, f"the request body is larger than {limit} bytes")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        value = json.loads(body)
    except ValueError:
        raise APIError(400, "the request body is not valid JSON") from None
    except RecursionError:
        raise APIError(400, "the request body nests JSON too deeply") from None
    if not isinstance(value, dict):
        raise APIError(400, "the request body must be a JSON object")
    return value


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise APIError(400, f"'{name}' must be a number from {low:g} to {high:g}", name)
    return float(value)


def _integer(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise APIError(400, f"'{name}' must be an integer from {low} to {high}", name)
    return value


def _stop(body: dict[str, Any], most: int) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or len(stops) > most or not all(isinstance(s, str) and s for s in stops):
        raise APIError(400, f"'stop' must be a string or a list of at most {most} non-empty strings", "stop")
    return stops


@dataclass
class Job:
    """One validated request: prompt ids, how to sample, how many choices, streamed or not."""

    prompt: list[int]
    settings: SamplingSettings
    n: int
    stream: bool
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the token counts

    def choice_settings(self) -> list[SamplingSettings]:
        """One settings per choice; with a seed, choice i uses seed + i (as `slm generate --num-samples`)."""
        seed = self.settings.seed
        return [replace(self.settings, seed=None if seed is None else seed + i) for i in range(self.n)]


def parse_job(body: dict[str, Any], prompt: list[int], default_max_tokens: int, limits: ServeLimits) -> Job:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise APIError(400, "'stream_options' must be an object like {\"include_usage\": true}", "stream_options")
    if "max_tokens" not in body and "max_completion_tokens" in body:
        body = {**body, "max_tokens": body["max_completion_tokens"]}
    settings = SamplingSettings(
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_k=0,
        top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
        max_tokens=_integer(body, "max_tokens", default_max_tokens, 1, limits.max_tokens),
        stop=_stop(body, limits.max_stop),
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
    )
    return Job(prompt, settings, _integer(body, "n", 1, 1, limits.max_n), stream, options.get("include_usage", False))


def parse_messages(body: dict[str, Any]) -> list[Message]:
    """OpenAI messages as ours: content a string or a list of text parts; "developer" is a system message."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise APIError(400, "'messages' must be a non-empty list", "messages")
    out = []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        role = "system" if role == "developer" else role
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
            content = "".join(p for p in parts if isinstance(p, str)) if len(parts) == len(content) else None
        if role not in ROLES or not isinstance(content, str):
            raise APIError(400, f"each message needs a role ({', '.join(ROLES)}) and text content", "messages")
        out.append({"role": role, "content": content})
    return out


# --- the API ------------------------------------------------------------------------------------


class API:
    """The routes, around one Generator that a single worker thread drives."""

    def __init__(self, generator: Generator, name: str, api_key: str | None, limits: ServeLimits) -> None:
        self.generator = generator
        self.name = name
        self.api_key = api_key
        self.limits = limits
        self.created = int(time.time())
        meta = generator.checkpoint.meta if generator.checkpoint is not None else {}
        self.chat_mode = is_chat_model(generator.tokenizer, meta)
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slm-serve")
        self.slots = threading.BoundedSemaphore(limits.max_queue)

    def app(self) -> Starlette:
        routes = [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
        ]
        handlers: dict[Any, Callable] = {
            APIError: lambda request, e: e.response(),
            SLMError: lambda request, e: APIError(400, str(e)).response(),
            HTTPException: lambda request, e: APIError(e.status_code, str(e.detail)).response(),
        }
        return Starlette(routes=routes, exception_handlers=handlers, lifespan=self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """On shutdown, drop the queued requests; the running one ends with its thread."""
        yield
        self.worker.shutdown(wait=False, cancel_futures=True)

    def authorise(self, request: Request) -> None:
        if self.api_key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise APIError(
                401, "missing or wrong API key: send the header 'Authorization: Bearer KEY'", None, "invalid_api_key"
            )

    async def models(self, request: Request) -> JSONResponse:
        self.authorise(request)
        model = {"id": self.name, "object": "model", "created": self.created, "owned_by": "slm-studio"}
        return JSONResponse({"object": "list", "data": [model]})

    async def completions(self, request: Request) -> Any:
        self.authorise(request)
        body = await read_json(request, self.limits.max_body_bytes)
        job = parse_job(body, self.completion_prompt(body.get("prompt")), 16, self.limits)
        return await self.respond(job, chat=False)

    async def chat_completions(self, request: Request) -> Any:
        self.authorise(request)
        body = await read_json(request, self.limits.max_body_bytes)
        messages = parse_messages(body)
        tokenizer = self.generator.tokenizer
        # a model never fine-tuned on conversations continues their text, as in the studio
        prompt = render_chat(messages, tokenizer) if self.chat_mode else tokenizer.encode(completion_text(messages))
        job = parse_job(body, prompt, self.limits.max_tokens, self.limits)
        if self.chat_mode:
            job.settings.stop.append(END)
        return await self.respond(job, chat=True)

    def completion_prompt(self, prompt: Any) -> list[int]:
        """A prompt given as a string, a list of one string, or a list of token ids."""
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            return self.generator.tokenizer.encode(prompt)
        vocab = self.generator.config.vocab_size
        if isinstance(prompt, list) and all(isinstance(t, int) and 0 <= t < vocab for t in prompt):
            return prompt
        raise APIError(400, "'prompt' must be a string, a list of one string, or a list of token ids", "prompt")

    # -- running generations -------------------------------------------------------------------

    def submit(self, work: Callable[[], Any]) -> Future:
        """Queue `work` on the model's thread, or refuse (503) when the queue is full."""
        if not self.slots.acquire(blocking=False):
            raise APIError(503, "the server is busy: too many requests are waiting, try again shortly")
        future = self.worker.submit(work)
        future.add_done_callback(lambda _: self.slots.release())
        return future

    async def respond(self, job: Job, chat: bool) -> Any:
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        envelope = {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.name,
        }
        if job.stream:
            chunk_envelope = {**envelope, "object": "chat.completion.chunk" if chat else "text_completion"}
            events = self.events(job, chat, chunk_envelope)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        def work() -> list[tuple[str, Generation]]:
            results = []
            for settings in job.choice_settings():
                generation = self.generator.stream(job.prompt, settings)
                results.append((generation.text(), generation))
            return results

        results = await asyncio.wrap_future(self.submit(work))
        choices = [
            {"index": i, **_content(chat, text), "logprobs": None, "finish_reason": FINISH_REASONS[g.finish_reason]}
            for i, (text, g) in enumerate(results)
        ]
        return JSONResponse({**envelope, "choices": choices, "usage": _usage([g for _, g in results])})

    def events(self, job: Job, chat: bool, envelope: dict[str, Any]) -> AsyncIterator[str]:
        """Server-sent events: each text piece as it is made, a last chunk per choice, then [DONE].

        The generation runs on the worker thread and hands pieces to the event loop; a client that
        disconnects cancels it at the next token.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str | None, Generation | None] | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for i, settings in enumerate(job.choice_settings()):
                    generation = self.generator.stream(job.prompt, settings, cancel.is_set)
                    for piece in generation:
                        put((i, piece, None))
                    put((i, None, generation))
            except Exception as e:  # reported to the client as an error event
                put(e)
            finally:
                put(None)

        self.submit(work)

        def event(index: int, delta: dict[str, Any], finish: str | None) -> str:
            choice = {"index": index, **delta, "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps({**envelope, 'choices': [choice]})}\n\n"

        async def stream() -> AsyncIterator[str]:
            finished: list[Generation] = []
            try:
                if chat:
                    for i in range(job.n):
                        yield event(i, {"delta": {"role": "assistant", "content": ""}}, None)
                while (item := await queue.get()) is not None:
                    if isinstance(item, BaseException):
                        error = {"message": f"generation failed: {item}", "type": "server_error"}
                        yield f"data: {json.dumps({'error': error})}\n\n"
                        continue
                    i, piece, done = item
                    if done is None:
                        yield event(i, _delta(chat, piece or ""), None)
                    else:
                        finished.append(done)
                        yield event(i, _delta(chat, None), FINISH_REASONS[done.finish_reason])
                if job.include_usage and finished:
                    yield f"data: {json.dumps({**envelope, 'choices': [], 'usage': _usage(finished)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()

        return stream()


def _usage(generations: list[Generation]) -> dict[str, int]:
    prompt, completion = generations[0].prompt_tokens, sum(g.new_tokens for g in generations)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _content(chat: bool, text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}} if chat else {"text": text}


def _delta(chat: bool, piece: str | None) -> dict[str, Any]:
    """A streamed piece of text; None for a choice's last chunk, which carries only its finish reason."""
    if chat:
        return {"delta": {} if piece is None else {"content": piece}}
    return {"text": piece or ""}


def create_app(
    generator: Generator, name: str, api_key: str | None = None, limits: ServeLimits | None = None
) -> Starlette:
    """The ASGI app serving `generator` as the model `name`."""
    return API(generator, name, api_key, limits or ServeLimits()).app()


# --- running the server -------------------------------------------------------------------------


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); a taken port or unknown host is an SLMError."""
    import socket

    try:
        return socket.create_server((host, port))
    except (OSError, OverflowError) as e:  # taken port, unknown host; a port past 65535
        raise SLMError(f"cannot serve on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None


def _server(app: Starlette, log_level: str) -> uvicorn.Server:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=2))


def run_server(app: Starlette, host: str, port: int) -> None:
    """Serve until Ctrl-C, with uvicorn's request log."""
    _server(app, "info").run(sockets=[bind(host, port)])


class ServerThread:
    """uvicorn serving an app from a background thread (tests, benchmarks, the studio)."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = _server(app, "warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SLMError(f"the server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
