"""The Ollama API an emulated agent serves: ``/``, version, tags, ps, and generate.

Shapes follow Ollama's documented API (docs/api.md): ``/api/tags`` and ``/api/ps`` list
``models`` with ``name`` and ``model``; ``/api/generate`` streams NDJSON chunks, the last
with ``done: true`` and the durations in nanoseconds, or answers once with
``"stream": false``; a full queue is 503 with Ollama's own error text.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

from aiohttp import web

from lb_service.emulate.host import Busy, Host

#: What ``/api/version`` reports.
VERSION = "0.0.0-emulated"
#: Ollama's answer when OLLAMA_MAX_QUEUE requests already wait (server/sched.go).
BUSY_ERROR = "server busy, please try again.  maximum pending requests exceeded"
#: Chunks a generated answer streams in (one word each).
TOKENS = 8
_WORDS = ("The", " emulated", " agent", " says", " hello", " to", " you", ".")


def add_routes(app: web.Application, host: Host) -> None:
    """Serve the Ollama API for ``host`` on ``app``."""
    api = _Api(host)
    app.router.add_get("/", api.root)
    app.router.add_get("/api/version", api.version)
    app.router.add_get("/api/tags", api.tags)
    app.router.add_get("/api/ps", api.ps)
    app.router.add_post("/api/generate", api.generate)


class _Api:
    def __init__(self, host: Host) -> None:
        self.host = host

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def tags(self, request: web.Request) -> web.Response:
        models = [_model(name) for name in self.host.spec.sim.agent.models]
        return web.json_response({"models": models})

    async def ps(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [_model(name) for name in self.host.loaded_models]})

    async def generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "invalid JSON in the request body")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return _error(400, "model is required")
        if not self.host.serves(model):
            return _error(404, f'model "{model}" not found, try pulling it first')
        try:
            async with self.host.slot(model) as work:
                if body.get("stream", True) is False:
                    await asyncio.sleep(work.service_s)
                    return web.json_response(
                        {**_chunk(model, "".join(_WORDS)), **_done(work.load_s, work.service_s)}
                    )
                return await _stream(request, model, work.load_s, work.service_s)
        except Busy:
            return _error(503, BUSY_ERROR)


async def _stream(
    request: web.Request, model: str, load_s: float, service_s: float
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for word in _WORDS:
        await asyncio.sleep(service_s / TOKENS)
        await response.write(_line(_chunk(model, word)))
    await response.write(_line({**_chunk(model, ""), **_done(load_s, service_s)}))
    await response.write_eof()
    return response


def _chunk(model: str, text: str) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
    return {"model": model, "created_at": now, "response": text, "done": False}


def _done(load_s: float, service_s: float) -> dict[str, Any]:
    def ns(seconds: float) -> int:
        return int(seconds * 1e9)

    return {
        "done": True,
        "done_reason": "stop",
        "context": [1, 2, 3],
        "total_duration": ns(load_s + service_s),
        "load_duration": ns(load_s),
        "prompt_eval_count": 4,
        "prompt_eval_duration": ns(service_s / 10),
        "eval_count": TOKENS,
        "eval_duration": ns(service_s * 9 / 10),
    }


def _model(name: str) -> dict[str, Any]:
    family = name.split(":", 1)[0]
    return {
        "name": name,
        "model": name,
        "size": 4_700_000_000,
        "digest": "0" * 64,
        "details": {"format": "gguf", "family": family, "families": [family]},
    }


def _line(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode() + b"\n"


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
