"""The OpenAI API's requests: limits, errors in OpenAI's shape, and request bodies read into jobs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.chat.batch import Sequence
from core.chat.sampling import SamplingSettings
from core.data.conversations import ROLES, Message
from core.errors import SLMError


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, how many decode at once (`parallel`) and how many more may wait."""

    parallel: int = 8
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

    def sequences(self, cancelled: Callable[[], bool]) -> list[Sequence]:
        """One sequence per choice; with a seed, choice i uses seed + i (as `slm generate --num-samples`)."""
        seed = self.settings.seed
        return [
            Sequence(self.prompt, replace(self.settings, seed=None if seed is None else seed + i), cancelled=cancelled)
            for i in range(self.n)
        ]


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
