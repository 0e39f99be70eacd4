"""An OpenAI-compatible HTTP API for one checkpoint, on Starlette and uvicorn.

`GET /v1/models`, `POST /v1/completions` and `POST /v1/chat/completions`, answered whole or streamed as
server-sent events in OpenAI's chunk format (`data: {chunk}` lines ending with `data: [DONE]`), with
temperature, top_p, max_tokens, stop, seed and n; `GET /metrics` (Prometheus) and `GET /health`. The model
is loaded once; requests decode together on one thread (`core.chat.scheduler`: continuous batching
over `parallel` slots, each choice of a request its own sequence), and requests beyond the slots wait
in a bounded queue (past it: 429). Safe by default: loopback only, an optional bearer API key, bounded
bodies, token counts, choices and queue, and every bad request a 4xx with an OpenAI-style error body.
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
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from core.chat.api_requests import APIError, Job, ServeLimits, parse_job, parse_messages, read_json
from core.chat.batch import Sequence
from core.chat.scheduler import QueueFull, Scheduler
from core.errors import SLMError
from core.tokenizer.chat_template import END, completion_text, is_chat_model, render_chat

if TYPE_CHECKING:
    import socket

    import uvicorn

    from core.chat.generate import Generator

FINISH_REASONS = {"eot": "stop", "stop": "stop", "length": "length", "cancelled": "stop", "error": "stop"}


# --- the API ------------------------------------------------------------------------------------


class API:
    """The routes, around one Generator that the scheduler's thread drives."""

    def __init__(self, generator: Generator, name: str, api_key: str | None, limits: ServeLimits) -> None:
        self.generator = generator
        self.name = name
        self.api_key = api_key
        self.limits = limits
        self.created = int(time.time())
        meta = generator.checkpoint.meta if generator.checkpoint is not None else {}
        self.chat_mode = is_chat_model(generator.tokenizer, meta)
        self.scheduler = Scheduler(generator, limits.parallel, limits.max_queue)

    def app(self) -> Starlette:
        routes = [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
        ]
        handlers: dict[Any, Callable] = {
            APIError: lambda request, e: e.response(),
            SLMError: lambda request, e: APIError(400, str(e)).response(),
            HTTPException: lambda request, e: APIError(e.status_code, str(e.detail)).response(),
        }
        return Starlette(routes=routes, exception_handlers=handlers, lifespan=self.lifespan)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        """On shutdown, end the waiting and running requests."""
        yield
        self.scheduler.close()

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

    async def metrics(self, request: Request) -> PlainTextResponse:
        self.authorise(request)
        return PlainTextResponse(self.scheduler.metrics().prometheus(), media_type="text/plain; version=0.0.4")

    async def health(self, request: Request) -> JSONResponse:
        """Liveness for load balancers: no key needed, nothing about the model but its slots."""
        counts = self.scheduler.metrics()
        return JSONResponse({"status": "ok", "slots_idle": counts.slots - counts.busy_slots, "queued": counts.queued})

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

    def submit(self, sequences: list[Sequence]) -> None:
        """Hand a request's sequences to the scheduler, or refuse (429) when its queue is full."""
        try:
            self.scheduler.submit(sequences)
        except QueueFull:
            raise APIError(
                429, "the server is busy: too many requests are waiting, try again shortly", None, "rate_limit_exceeded"
            ) from None

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
        loop = asyncio.get_running_loop()
        gone = threading.Event()
        sequences = job.sequences(gone.is_set)
        finished = [loop.create_future() for _ in sequences]
        for seq, future in zip(sequences, finished, strict=True):
            seq.on_done = lambda seq, future=future: loop.call_soon_threadsafe(future.set_result, seq)
        self.submit(sequences)
        try:
            await asyncio.gather(*finished)
        finally:
            gone.set()  # a client that went away frees its rows
        if errors := [seq.error for seq in sequences if seq.error]:
            raise APIError(500, errors[0])
        choices = [
            {
                "index": i,
                **_content(chat, seq.output),
                "logprobs": None,
                "finish_reason": FINISH_REASONS[seq.finish_reason],
            }
            for i, seq in enumerate(sequences)
        ]
        return JSONResponse({**envelope, "choices": choices, "usage": _usage(sequences)})

    def events(self, job: Job, chat: bool, envelope: dict[str, Any]) -> AsyncIterator[str]:
        """Server-sent events: each text piece as it is made, a last chunk per choice, then [DONE].

        The sequences decode on the scheduler's thread and hand pieces to the event loop; a client
        that disconnects frees their rows at the next step.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, str | None, Sequence | None]] = asyncio.Queue()
        cancel = threading.Event()
        sequences = job.sequences(cancel.is_set)
        for i, seq in enumerate(sequences):
            seq.on_text = lambda seq, piece, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, piece, None))
            seq.on_done = lambda seq, i=i: loop.call_soon_threadsafe(queue.put_nowait, (i, None, seq))
        self.submit(sequences)

        def event(index: int, delta: dict[str, Any], finish: str | None) -> str:
            choice = {"index": index, **delta, "logprobs": None, "finish_reason": finish}
            return f"data: {json.dumps({**envelope, 'choices': [choice]})}\n\n"

        async def stream() -> AsyncIterator[str]:
            finished: list[Sequence] = []
            try:
                if chat:
                    for i in range(job.n):
                        yield event(i, {"delta": {"role": "assistant", "content": ""}}, None)
                while len(finished) < job.n:
                    items = [await queue.get()]
                    while not queue.empty():  # what queued up meanwhile goes out in as few chunks as it can
                        items.append(queue.get_nowait())
                    for i, piece, done in _joined(items):
                        if done is None:
                            yield event(i, _delta(chat, piece), None)
                            continue
                        finished.append(done)
                        if done.error:
                            yield f"data: {json.dumps({'error': {'message': done.error, 'type': 'server_error'}})}\n\n"
                        yield event(i, _delta(chat, None), FINISH_REASONS[done.finish_reason])
                if job.include_usage:
                    yield f"data: {json.dumps({**envelope, 'choices': [], 'usage': _usage(finished)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancel.set()

        return stream()


def _joined(items: list[tuple[int, str | None, Sequence | None]]) -> list[tuple[int, str | None, Sequence | None]]:
    """Stream items with each run of text pieces of one choice joined into one piece."""
    out: list[tuple[int, str | None, Sequence | None]] = []
    for i, piece, done in items:
        if done is None and out and out[-1][0] == i and out[-1][2] is None:
            out[-1] = (i, (out[-1][1] or "") + (piece or ""), None)
        else:
            out.append((i, piece, done))
    return out


def _usage(sequences: list[Sequence]) -> dict[str, int]:
    prompt, completion = sequences[0].prompt_tokens, sum(seq.new_tokens for seq in sequences)
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
