"""The vLLM API an emulated agent serves: ``/health``, ``/metrics``, ``/v1/models``, completions.

``/metrics`` is Prometheus text written by ``prometheus_client`` with the series vLLM
documents for load (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:kv_cache_usage_perc``), labelled ``model_name``; the KV-cache figure is emulated
as the share of the agent's slots in use. ``/v1/completions`` answers OpenAI-style JSON
(not streamed: ``"stream": true`` is answered the same way). vLLM's queue has no bound.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lb_service.emulate.host import Host

_ids = itertools.count(1)


def add_routes(app: web.Application, host: Host) -> None:
    """Serve the vLLM API for ``host`` on ``app``."""
    api = _Api(host)
    app.router.add_get("/health", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/v1/models", api.models)
    app.router.add_post("/v1/completions", api.completions)


class _Api:
    def __init__(self, host: Host) -> None:
        self.host = host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Load(host))

    async def health(self, request: web.Request) -> web.Response:
        return web.Response()

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "owned_by": "vllm"}
            for name in self.host.spec.sim.agent.models
        ]
        return web.json_response({"object": "list", "data": data})

    async def completions(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "BadRequestError", "invalid JSON in the request body")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not self.host.serves(model):
            return _error(404, "NotFoundError", f"The model `{model}` does not exist.")
        max_tokens = body.get("max_tokens", 16)
        tokens = max_tokens if isinstance(max_tokens, int) and 0 < max_tokens <= 4096 else 16
        async with self.host.slot(model, bounded=False) as work:
            await asyncio.sleep(work.service_s)
        return web.json_response(
            {
                "id": f"cmpl-emulated-{next(_ids)}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "text": " emulated" * tokens, "finish_reason": "length"}],
                "usage": {
                    "prompt_tokens": 4,
                    "completion_tokens": tokens,
                    "total_tokens": tokens + 4,
                },
            }
        )


class _Load(Collector):
    """The load gauges, read from the host at each scrape."""

    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self) -> Iterable[Metric]:
        host = self.host
        models = host.spec.sim.agent.models
        running = GaugeMetricFamily(
            "vllm:num_requests_running",
            "Number of requests in model execution batches.",
            labels=["model_name"],
        )
        waiting = GaugeMetricFamily(
            "vllm:num_requests_waiting",
            "Number of requests waiting to be processed.",
            labels=["model_name"],
        )
        usage = GaugeMetricFamily(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage. 1 means 100 percent usage.",
            labels=["model_name"],
        )
        busy = sum(host.running.values()) / host.spec.sim.slots
        for name in models:
            running.add_metric([name], host.running[name])
            waiting.add_metric([name], host.waiting[name])
            usage.add_metric([name], busy)
        return [running, waiting, usage]


def _error(status: int, kind: str, message: str) -> web.Response:
    document: dict[str, Any] = {
        "object": "error",
        "message": message,
        "type": kind,
        "param": None,
        "code": status,
    }
    return web.json_response(document, status=status)
