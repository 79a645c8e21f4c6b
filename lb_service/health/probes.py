"""Probes by engine: one bounded look at an agent, turned into a ``ProbeResult``.

``Prober.probe`` asks an agent what its engine documents as its health check:

- ollama: ``GET /api/ps`` (up, and the models loaded now); with ``full`` also
  ``GET /api/tags`` (the models it has);
- vllm and sglang: ``GET /health`` (2xx); with ``full`` also ``GET /metrics``, which
  must parse as Prometheus text (``prometheus_client``'s parser); the known load series
  are kept;
- http: ``GET /`` or the given path, 2xx;
- grpc: ``grpc.health.v1.Health/Check`` (the given path is the service name).

Whatever the agent does — refuse, stall, answer garbage, a huge body, a trickle, a
redirect — the probe returns a failed result with a short reason and never raises.
Redirects are not followed (a 3xx is a failure: a health endpoint that moved is a
misconfiguration, and following one would let an agent send the prober anywhere).
The whole probe, every request in it, is bounded by ``timeout_s``.

HTTP goes through one aiohttp session that keeps at most one connection per agent and
keeps it alive between probes: opening a connection per probe (as httpx's pool did with
a thousand agents) was most of a probe's cost. Responses are not decompressed
(``Accept-Encoding: identity``), carry no cookies, and are read at most to the cap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from lb_service.health.result import ProbeResult
from lb_service.model import Agent, Engine

__all__ = ["DEFAULT_KEEPALIVE_S", "DEFAULT_MAX_BODY_BYTES", "LOAD_SERIES", "Prober"]

#: The largest answer a probe reads before giving up on it.
DEFAULT_MAX_BODY_BYTES = 1 << 20
#: How long an agent's idle connection is kept for its next probe: longer than any
#: sensible probe interval, so a steady fleet is probed over connections already open.
DEFAULT_KEEPALIVE_S = 60.0
#: Sent with every probe: a compressed answer could unpack past the body cap.
_HEADERS = {"Accept-Encoding": "identity"}
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
    """Probes agents over HTTP (aiohttp) or gRPC; one instance serves many agents at once."""

    def __init__(
        self,
        *,
        timeout_s: float = 1.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        keepalive_s: float = DEFAULT_KEEPALIVE_S,
    ) -> None:
        """Bound each probe by ``timeout_s`` and each body by ``max_body_bytes``.

        The HTTP session is made at the first probe (aiohttp wants a running loop); it
        ignores proxy settings from the environment: agents are reached directly.
        """
        if timeout_s <= 0 or max_body_bytes <= 0:
            raise ValueError("timeout_s and max_body_bytes must be > 0")
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes
        self._keepalive_s = keepalive_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def _timed_out(self) -> str:
        # "1.0 s", not "1 s": the reason reads the same as the option it comes from.
        return f"probe: timeout after {float(self.timeout_s)!r} s"

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0,  # the scheduler bounds how many probes run at once
                limit_per_host=1,  # one connection per agent, reused probe after probe
                keepalive_timeout=self._keepalive_s,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # The whole probe runs under asyncio.timeout; aiohttp's own timers per
                # request would only add cost.
                timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                trust_env=False,
            )
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

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
        except _Failed as failure:
            result = ProbeResult(False, str(failure))
        return dataclasses.replace(result, duration_s=time.monotonic() - started)

    async def _by_engine(
        self, engine: Engine, host: str, port: int, path: str, full: bool
    ) -> ProbeResult:
        base = _base_url(host, port)
        if engine is Engine.OLLAMA:
            loaded = _model_names(await self._get_json(base, "/api/ps"), "/api/ps")
            models = (
                _model_names(await self._get_json(base, "/api/tags"), "/api/tags") if full else None
            )
            return ProbeResult(True, models=models, loaded_models=loaded)
        if engine in (Engine.VLLM, Engine.SGLANG):
            await self._get(base, "/health")
            if not full:
                return ProbeResult(True)
            return ProbeResult(True, metrics=_load_series(await self._get(base, "/metrics")))
        if engine is Engine.HTTP:
            await self._get(base, path if path.startswith("/") else f"/{path}")
            return ProbeResult(True)
        if engine is Engine.GRPC:
            return await _grpc_health(host, port, path)
        return ProbeResult(False, "probe: agent has no engine to probe")

    async def _get_json(self, base: str, path: str) -> Any:
        body = await self._get(base, path)
        try:
            return json.loads(body)
        except ValueError:
            raise _Failed(f"probe: bad JSON from {path}") from None

    async def _get(self, base: str, path: str) -> bytes:
        """The body of a 2xx answer to ``GET base+path``, read up to the cap."""
        try:
            try:
                return await self._get_once(base + path)
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection the agent closed just as it was reused (its
                # idle timeout met our interval): once more, on a new connection.
                return await self._get_once(base + path)
        except aiohttp.ClientConnectorError as error:
            raise _Failed(_connect_reason(error)) from None
        except (aiohttp.InvalidURL, ValueError):
            raise _Failed("probe: invalid agent address") from None
        except aiohttp.ClientResponseError:
            # What aiohttp's parser refused: not HTTP, headers past its limits, ...
            raise _Failed(f"probe: bad HTTP answer from {path}") from None
        except aiohttp.ServerDisconnectedError:
            raise _Failed(f"probe: agent hung up on {path}") from None
        except aiohttp.ClientError as error:
            # Resets mid-body and the like: the class name is the useful part.
            raise _Failed(f"probe: {type(error).__name__} from {path}") from None

    async def _get_once(self, url: str) -> bytes:
        async with self._http().get(url, allow_redirects=False, headers=_HEADERS) as response:
            _check_status(response)
            return await self._read_capped(response)

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, or a failure once it passes the cap (the connection is then dropped)."""
        cap = self.max_body_bytes
        declared = response.content_length
        if declared is not None:
            if declared > cap:
                raise _Failed(f"probe: body over {_size(cap)}")
            return await response.read()  # exactly the declared length: within the cap
        # No length (chunked, or until the agent closes): read in pieces, counting.
        chunks: list[bytes] = []
        size = 0
        while chunk := await response.content.read(cap + 1 - size):
            size += len(chunk)
            if size > cap:
                raise _Failed(f"probe: body over {_size(cap)}")
            chunks.append(chunk)
        return b"".join(chunks)


def _base_url(host: str, port: int) -> str:
    # An IPv6 literal needs brackets in a URL.
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _check_status(response: aiohttp.ClientResponse) -> None:
    code = response.status
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        raise _Failed(f"probe: redirect to {location[:100] or '(no location)'}")
    if not 200 <= code < 300:
        raise _Failed(f"probe: HTTP {code}")


def _connect_reason(error: aiohttp.ClientConnectorError) -> str:
    cause: BaseException | None = error.os_error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return "probe: connection refused"
        cause = cause.__cause__ or cause.__context__
    return f"probe: cannot connect ({str(error.os_error)[:80] or type(error).__name__})"


def _size(limit: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"


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
