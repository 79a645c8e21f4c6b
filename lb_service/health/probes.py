"""Probes by engine: one bounded look at an agent, turned into a ``ProbeResult``.

``Prober.probe`` asks an agent what its engine documents as its health check:

- ollama: ``GET /api/ps`` (up, and the models loaded now: its load report; Ollama
  publishes no queue figure); with ``full`` also ``GET /api/tags`` (the models it has);
- vllm and sglang: ``GET /health`` (2xx), then ``GET /metrics``, which must parse as
  Prometheus text (``prometheus_client``'s parser); the known load series are kept and
  make the agent's load report (``report_from_metrics``). Without ``load_reports``,
  ``/metrics`` only on a full probe and no report;
- http: ``GET /`` or the given path, 2xx;
- grpc: ``grpc.health.v1.Health/Check`` (the given path is the service name).

Whatever the agent does — refuse, stall, answer garbage, a huge body, a trickle, a
redirect — the probe returns a failed result with a short reason and never raises.
Redirects are not followed (a 3xx is a failure: a health endpoint that moved is a
misconfiguration, and following one would let an agent send the prober anywhere).
The whole probe, every request in it, is bounded by ``timeout_s``.

HTTP goes through ``health.http``'s small client, which keeps one connection per agent
alive between probes (opening one per probe, as httpx's pool did with a thousand
agents, was most of a probe's cost; aiohttp's per-request machinery was most of the
rest). Answers are asked uncompressed (``Accept-Encoding: identity``) and read at most
to the cap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lb_service.health.http import Answer, HttpFailure, Pool
from lb_service.health.result import ProbeResult
from lb_service.model import Agent, Engine, LoadReport

__all__ = [
    "DEFAULT_KEEPALIVE_S",
    "DEFAULT_MAX_BODY_BYTES",
    "LOAD_SERIES",
    "Prober",
    "report_from_metrics",
]

#: The largest answer a probe reads before giving up on it.
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: How long an agent's idle connection is kept for its next probe: longer than any
#: sensible probe interval, so a steady fleet is probed over connections already open.
DEFAULT_KEEPALIVE_S = 60.0
#: The series of an engine's /metrics that say how loaded it is (summed over labels).
#: ``vllm:gpu_cache_usage_perc`` is the older name of ``vllm:kv_cache_usage_perc``.
LOAD_SERIES = frozenset(
    {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "sglang:num_queue_reqs",
        "sglang:num_running_reqs",
        "sglang:token_usage",
    }
)


class _Failed(Exception):
    """One step of a probe failed; the message is the reason an operator reads."""


class Prober:
    """Probes agents over HTTP (``health.http``) or gRPC; one instance serves many agents."""

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
        load_reports: bool = True,
    ) -> None:
        """Bound each probe by ``timeout_s`` and each body by ``max_body_bytes``.

        Agents are reached directly: no proxy settings from the environment apply.
        ``load_reports`` False: vLLM and SGLang ``/metrics`` only on a full probe, and
        no load report from any probe (the server's choice when a report would be stale
        before the next probe: ``BalancerConfig.probe_reports``).
        """
        if timeout_s <= 0 or max_body_bytes <= 0:
            raise ValueError("timeout_s and max_body_bytes must be > 0")
        self.load_reports = load_reports
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._keepalive_s = keepalive_s
        self._pool: Pool | None = None

    @property
    def _timed_out(self) -> str:
        # "1.0 s", not "1 s": the reason reads the same as the option it comes from.
        return f"probe: timeout after {float(self.timeout_s)!r} s"

    def _http(self) -> Pool:
        if self._pool is None:
            self._pool = Pool(max_body_bytes=self.max_body_bytes, keepalive_s=self._keepalive_s)
        return self._pool

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def probe(self, agent: Agent, *, full: bool = False) -> ProbeResult:
        """Probe a registered agent by its engine, address and probe path; never raises.

        What the server's probe scheduler calls (``health.scheduler.Prober``).
        """
        return await self.probe_address(
            agent.engine, agent.host, agent.port, path=agent.probe_path, full=full
        )

    async def probe_address(
        self, engine: Engine, host: str, port: int, *, path: str = "", full: bool = False
    ) -> ProbeResult:
        """Probe the agent at ``host:port`` as its ``engine`` documents; never raises.

        ``full`` also asks for what changes rarely or costs more to answer (Ollama's
        model list, vLLM's and SGLang's ``/metrics``). An engine that is not probed
        (``Engine.UNSPECIFIED``) is a failed result saying so.
        """
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._by_engine(engine, host, port, path, full)
        except TimeoutError:
            result = ProbeResult(False, self._timed_out)
        except (_Failed, HttpFailure) as failure:
            result = ProbeResult(False, str(failure))
        return dataclasses.replace(result, duration_s=time.monotonic() - started)

    async def _by_engine(
        self, engine: Engine, host: str, port: int, path: str, full: bool
    ) -> ProbeResult:
        base = (host, port)
        if engine is Engine.OLLAMA:
            loaded = _model_names(await self._get_json(base, "/api/ps"), "/api/ps")
            models = (
                _model_names(await self._get_json(base, "/api/tags"), "/api/tags") if full else None
            )
            # /api/ps says what is loaded, not how many requests wait: those stay unknown.
            report = LoadReport(loaded_models=loaded) if self.load_reports else None
            return ProbeResult(True, models=models, loaded_models=loaded, report=report)
        if engine in (Engine.VLLM, Engine.SGLANG):
            await self._get(base, "/health")
            # Every probe when reports are read: the load series are the agent's report.
            if not (self.load_reports or full):
                return ProbeResult(True)
            metrics = _load_series(await self._get(base, "/metrics"))
            report = report_from_metrics(metrics) if self.load_reports else None
            return ProbeResult(True, metrics=metrics, report=report)
        if engine is Engine.HTTP:
            await self._get(base, path if path.startswith("/") else f"/{path}")
            return ProbeResult(True)
        if engine is Engine.GRPC:
            return await _grpc_health(host, port, path)
        return ProbeResult(False, "probe: agent has no engine to probe")

    async def _get_json(self, base: tuple[str, int], path: str) -> Any:
        body = await self._get(base, path)
        try:
            return json.loads(body)
        except ValueError:
            raise _Failed(f"probe: bad JSON from {path}") from None

    async def _get(self, base: tuple[str, int], path: str) -> bytes:
        """The body of a 2xx answer to ``GET path`` (an ``HttpFailure`` otherwise)."""
        answer = await self._http().get(base[0], base[1], path)
        _check_status(answer)
        return answer.body


def report_from_metrics(metrics: Mapping[str, float]) -> LoadReport:
    """The load report an engine's load series make (``LOAD_SERIES``); unknown figures None.

    vLLM: ``num_requests_waiting`` and ``num_requests_running``, and the KV cache from
    ``kv_cache_usage_perc`` (a fraction despite its name), else from the older
    ``gpu_cache_usage_perc``. SGLang: ``num_queue_reqs``, ``num_running_reqs`` and
    ``token_usage``. A count that is not a finite number >= 0 is kept as -1, which
    ``reports.check_report`` refuses, so a broken exporter's report is dropped whole.
    """

    def count(*names: str) -> int | None:
        value = _first(metrics, names)
        if value is None:
            return None
        return int(value) if math.isfinite(value) and value >= 0 else -1

    return LoadReport(
        queued_requests=count("vllm:num_requests_waiting", "sglang:num_queue_reqs"),
        running_requests=count("vllm:num_requests_running", "sglang:num_running_reqs"),
        kv_cache_usage=_first(
            metrics, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "sglang:token_usage")
        ),
    )


def _first(metrics: Mapping[str, float], names: tuple[str, ...]) -> float | None:
    return next((metrics[name] for name in names if name in metrics), None)


def _check_status(answer: Answer) -> None:
    code = answer.status
    if 300 <= code < 400:
        raise _Failed(f"probe: redirect to {answer.location or '(no location)'}")
    if not 200 <= code < 300:
        raise _Failed(f"probe: HTTP {code}")


def _model_names(document: Any, path: str) -> tuple[str, ...]:
    """The ``models[].name`` of an Ollama answer (``/api/ps``, ``/api/tags``)."""
    models = document.get("models") if isinstance(document, dict) else None
    if not isinstance(models, list):
        raise _Failed(f"probe: bad JSON from {path}")
    names = []
    for entry in models:
        name = entry.get("name", entry.get("model")) if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise _Failed(f"probe: bad JSON from {path}")
        names.append(name)
    return tuple(names)


def _load_series(body: bytes) -> Mapping[str, float]:
    """The known load series of a Prometheus text answer, each summed over its labels."""
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name in LOAD_SERIES:
                    found[sample.name] = found.get(sample.name, 0.0) + sample.value
    except ValueError:  # also a body that is not UTF-8
        raise _Failed("probe: bad metrics from /metrics") from None
    return found


async def _grpc_health(host: str, port: int, service: str) -> ProbeResult:
    target = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            # The caller's asyncio.timeout bounds the call; wait_for_ready=False makes a
            # refused connection fail at once instead of waiting for the deadline.
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise _Failed("probe: gRPC UNAVAILABLE (nothing serving?)") from None
            raise _Failed(f"probe: gRPC {code.name}") from None
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return ProbeResult(False, f"probe: gRPC health {status}")
    return ProbeResult(True)
