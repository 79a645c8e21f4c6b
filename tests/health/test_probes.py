"""Prober against real loopback sockets: each engine's check, and every way an agent misbehaves."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from lb_service.errors import InvalidArgument
from lb_service.health.probes import Prober, report_from_metrics
from lb_service.model import Engine, LoadReport
from lb_service.reports import check_report
from tests.health.servers import (
    Answer,
    Route,
    canned,
    chunked,
    endless,
    free_port,
    serve,
    serve_kept_alive,
    silent,
    trickle,
)

PS = json.dumps({"models": [{"name": "llama3:8b", "model": "llama3:8b", "size": 1}]}).encode()
TAGS = json.dumps({"models": [{"name": "llama3:8b"}, {"name": "phi3:mini"}]}).encode()
VLLM_METRICS = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m1"} 3.0
vllm:num_requests_running{model_name="m2"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m1"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m1"} 0.5
# HELP other_total Something else.
# TYPE other_total counter
other_total 7.0
"""
#: A vLLM agent's answers on a kept-alive server.
VLLM_ROUTES: dict[str, Route] = {"/health": (200, b"", {}), "/metrics": (200, VLLM_METRICS, {})}


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    """A prober with a short timeout, closed after the test."""
    made = Prober(timeout_s=0.5)
    try:
        yield made
    finally:
        await made.aclose()


async def test_ollama_probe_reports_loaded_models(prober: Prober) -> None:
    """An Ollama agent is up when /api/ps answers; its loaded models come from models[].name."""
    async with serve({"/api/ps": canned(200, PS), "/api/tags": canned(500)}) as port:
        result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    assert result.ok
    assert result.reason == ""
    assert result.loaded_models == ("llama3:8b",)
    # /api/ps has no queue figure: the report says only what is loaded.
    assert result.report == LoadReport(loaded_models=("llama3:8b",))
    assert result.models is None  # /api/tags is only asked for by a full probe


async def test_full_ollama_probe_also_lists_the_models_it_has(prober: Prober) -> None:
    """A full Ollama probe adds /api/tags' models."""
    async with serve({"/api/ps": canned(200, PS), "/api/tags": canned(200, TAGS)}) as port:
        result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port, full=True)
    assert result.ok
    assert result.models == ("llama3:8b", "phi3:mini")
    assert result.duration_s > 0


@pytest.mark.parametrize("engine", [Engine.VLLM, Engine.SGLANG])
async def test_vllm_probe_keeps_the_load_series_summed_over_labels(
    prober: Prober, engine: Engine
) -> None:
    """A full vLLM/SGLang probe: /health 2xx, /metrics parsed; known series summed, others left."""
    routes = {"/health": canned(200), "/metrics": canned(200, VLLM_METRICS)}
    async with serve(routes) as port:
        result = await prober.probe_address(engine, "127.0.0.1", port, full=True)
    assert result.ok
    assert result.metrics == {
        "vllm:num_requests_running": 4.0,
        "vllm:num_requests_waiting": 2.0,
        "vllm:kv_cache_usage_perc": 0.5,
    }


@pytest.mark.parametrize("engine", [Engine.VLLM, Engine.SGLANG])
async def test_every_vllm_probe_reads_the_metrics_into_a_load_report(
    prober: Prober, engine: Engine
) -> None:
    """Usual probes ask /health then /metrics too: the load series are the agent's report."""
    async with serve_kept_alive(VLLM_ROUTES) as (port, seen):
        usual = await prober.probe_address(engine, "127.0.0.1", port)
    assert usual.ok
    assert usual.report == LoadReport(queued_requests=2, running_requests=4, kv_cache_usage=0.5)
    assert seen.paths == ["/health", "/metrics"]


async def test_without_load_reports_a_usual_probe_asks_health_alone() -> None:
    """Prober(load_reports=False): /metrics waits for a full probe, and no probe has a report."""
    prober = Prober(timeout_s=2.0, load_reports=False)
    try:
        async with serve_kept_alive(VLLM_ROUTES) as (port, seen):
            usual = await prober.probe_address(Engine.VLLM, "127.0.0.1", port)
            full = await prober.probe_address(Engine.VLLM, "127.0.0.1", port, full=True)
        async with serve({"/api/ps": canned(200, PS)}) as port:
            ollama = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    finally:
        await prober.aclose()
    assert (usual.ok, usual.metrics, usual.report) == (True, None, None)
    assert (full.metrics is not None, full.report) == (True, None)
    assert seen.paths == ["/health", "/health", "/metrics"]
    assert (ollama.loaded_models, ollama.report) == (("llama3:8b",), None)


def test_the_older_vllm_kv_cache_name_and_sglang_series_make_reports() -> None:
    """gpu_cache_usage_perc stands in for kv_cache_usage_perc; SGLang has its own names."""
    assert report_from_metrics({"vllm:gpu_cache_usage_perc": 0.7}) == LoadReport(kv_cache_usage=0.7)
    sglang = {
        "sglang:num_queue_reqs": 3.0,
        "sglang:num_running_reqs": 8.0,
        "sglang:token_usage": 0.4,
    }
    assert report_from_metrics(sglang) == LoadReport(
        queued_requests=3, running_requests=8, kv_cache_usage=0.4
    )
    assert report_from_metrics({}) == LoadReport()


def test_a_broken_count_makes_a_report_the_checks_refuse() -> None:
    """A NaN or negative count becomes -1, which check_report refuses naming the field."""
    report = report_from_metrics({"vllm:num_requests_waiting": math.nan})
    assert report.queued_requests == -1
    with pytest.raises(InvalidArgument, match=r"report\.queued_requests"):
        check_report(report)


async def test_an_agent_is_probed_over_one_kept_alive_connection(prober: Prober) -> None:
    """Probe after probe of one agent reuses one connection instead of opening one each time."""
    async with serve_kept_alive(VLLM_ROUTES) as (port, seen):
        for n in range(6):
            result = await prober.probe_address(Engine.VLLM, "127.0.0.1", port, full=n == 0)
            assert result.ok
    assert len(seen.connections) == 1
    assert len(seen.paths) == 12  # /health and /metrics, six times


async def test_probes_ask_for_an_uncompressed_answer(prober: Prober) -> None:
    """Every probe says Accept-Encoding: identity: a compressed body could unpack past the cap."""
    async with serve_kept_alive({"/": (200, b"", {})}) as (port, seen):
        await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    (head,) = seen.connections[0]
    assert b"\r\naccept-encoding: identity\r\n" in head.lower()


async def test_vllm_probe_fails_on_metrics_that_do_not_parse(prober: Prober) -> None:
    """A /metrics answer that is not Prometheus text fails the probe."""
    routes = {"/health": canned(200), "/metrics": canned(200, b"vllm:x{model_name= 1 2 3\n")}
    async with serve(routes) as port:
        result = await prober.probe_address(Engine.VLLM, "127.0.0.1", port, full=True)
    assert (result.ok, result.reason) == (False, "probe: bad metrics from /metrics")


async def test_vllm_probe_fails_when_health_is_not_2xx(prober: Prober) -> None:
    """A 503 from /health fails the probe with the status in the reason."""
    async with serve({"/health": canned(503), "/metrics": canned(200, b"")}) as port:
        result = await prober.probe_address(Engine.VLLM, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: HTTP 503")


async def test_http_probe_uses_the_given_path(prober: Prober) -> None:
    """A plain HTTP agent is probed at its path (leading slash optional), 2xx being up."""
    async with serve({"/ready": canned(204), "/": canned(500)}) as port:
        ok = await prober.probe_address(Engine.HTTP, "127.0.0.1", port, path="ready")
        root = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    assert ok.ok
    assert (root.ok, root.reason) == (False, "probe: HTTP 500")


async def test_refused_connection_is_named(prober: Prober) -> None:
    """Nothing listening is 'probe: connection refused'."""
    result = await prober.probe_address(Engine.HTTP, "127.0.0.1", free_port())
    assert (result.ok, result.reason) == (False, "probe: connection refused")


async def test_an_agent_that_never_answers_times_out(prober: Prober) -> None:
    """An agent that accepts and never answers fails with the timeout in the reason."""
    async with serve({"/api/ps": silent()}) as port:
        result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: timeout after 0.5 s")
    assert result.duration_s < 5  # bounded by the prober, not by the server


async def test_the_default_timeout_is_named_as_the_option_writes_it() -> None:
    """With the default 1 s timeout the reason says '1.0 s', as --probe-timeout reads."""
    prober = Prober()
    try:
        async with serve({"/": silent()}) as port:
            result = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    finally:
        await prober.aclose()
    assert (result.ok, result.reason) == (False, "probe: timeout after 1.0 s")


async def test_a_slow_trickle_is_bounded_by_the_total_timeout(prober: Prober) -> None:
    """A body that arrives a byte at a time fails at the probe's total timeout."""
    async with serve({"/api/ps": trickle(0.05)}) as port:
        result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: timeout after 0.5 s")


async def test_a_huge_body_stops_at_the_cap() -> None:
    """A body that never ends is read only up to max_body_bytes, then the probe fails."""
    prober = Prober(timeout_s=5.0, max_body_bytes=1 << 20)
    try:
        async with serve({"/api/ps": endless()}) as port:
            result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    finally:
        await prober.aclose()
    assert (result.ok, result.reason) == (False, "probe: body over 1 MiB")


@pytest.mark.parametrize("body", [chunked(2 << 20), canned(200, b"{" * ((1 << 20) + 1))])
async def test_a_body_over_the_cap_fails_whether_or_not_its_length_is_declared(
    body: Answer,
) -> None:
    """A body past the cap fails the probe, chunked (counted) or with a Content-Length (refused)."""
    prober = Prober(timeout_s=5.0, max_body_bytes=1 << 20)
    try:
        async with serve({"/api/ps": body}) as port:
            result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    finally:
        await prober.aclose()
    assert (result.ok, result.reason) == (False, "probe: body over 1 MiB")


async def test_a_body_at_the_cap_is_read() -> None:
    """A body of exactly the cap, declared or chunked, is read whole."""
    document = json.dumps({"models": [], "pad": "x" * 1000}).encode()
    prober = Prober(timeout_s=5.0, max_body_bytes=len(document))
    try:
        async with serve({"/api/ps": canned(200, document)}) as port:
            result = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    finally:
        await prober.aclose()
    assert result.ok


async def test_garbage_json_is_a_failure(prober: Prober) -> None:
    """Garbage, or JSON of the wrong shape, from /api/ps fails the probe."""
    async with serve({"/api/ps": canned(200, b"<html>not json")}) as port:
        garbage = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    async with serve({"/api/ps": canned(200, b'{"models": [{"size": 1}]}')}) as port:
        shape = await prober.probe_address(Engine.OLLAMA, "127.0.0.1", port)
    assert (garbage.ok, garbage.reason) == (False, "probe: bad JSON from /api/ps")
    assert (shape.ok, shape.reason) == (False, "probe: bad JSON from /api/ps")


async def test_a_redirect_is_a_failure_and_not_followed(prober: Prober) -> None:
    """A 3xx (here a loop to itself) fails the probe and names where it pointed."""
    async with serve({"/health": canned(302, headers={"Location": "/health"})}) as port:
        result = await prober.probe_address(Engine.HTTP, "127.0.0.1", port, path="/health")
    assert (result.ok, result.reason) == (False, "probe: redirect to /health")


async def test_a_redirect_to_a_working_path_is_still_not_followed(prober: Prober) -> None:
    """A 3xx to a path that would answer 200 fails the probe; that path is never asked."""
    routes = {"/": (301, b"", {"Location": "/ok"}), "/ok": (200, b"", {})}
    async with serve_kept_alive(routes) as (port, seen):
        result = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: redirect to /ok")
    assert seen.paths == ["/"]


async def test_headers_past_the_head_bound_are_a_failure(prober: Prober) -> None:
    """A head longer than 64 KiB fails the probe, whether it came in one read or many."""

    async def endless_head(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(2_000):
            writer.write(b"X-More: " + b"y" * 1000 + b"\r\n")
            await writer.drain()

    async with serve({"/": canned(200, headers={"X-Huge": "y" * 100_000})}) as port:
        huge = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    async with serve({"/": endless_head}) as port:
        endless = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    assert (huge.ok, huge.reason) == (False, "probe: headers from / too long")
    assert (endless.ok, endless.reason) == (False, "probe: headers from / too long")


async def test_an_agent_that_hangs_up_without_answering_is_a_failure(prober: Prober) -> None:
    """A connection closed before any answer (asked twice: it may be a stale one) fails."""

    async def hang_up(writer: asyncio.StreamWriter) -> None:
        pass

    async with serve({"/": hang_up}) as port:
        result = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: agent hung up on /")


async def test_a_protocol_violation_is_a_failure(prober: Prober) -> None:
    """Bytes that are not HTTP fail the probe instead of raising."""

    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    async with serve({"/": garbage}) as port:
        result = await prober.probe_address(Engine.HTTP, "127.0.0.1", port)
    assert (result.ok, result.reason) == (False, "probe: bad HTTP answer from /")


async def test_unspecified_engine_is_not_probed(prober: Prober) -> None:
    """An agent without an engine gets a failed result saying there is nothing to probe."""
    result = await prober.probe_address(Engine.UNSPECIFIED, "127.0.0.1", free_port())
    assert (result.ok, result.reason) == (False, "probe: agent has no engine to probe")


async def test_grpc_probe_follows_the_health_service(prober: Prober) -> None:
    """A gRPC agent is up while grpc.health.v1 says SERVING, down when NOT_SERVING."""
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        up = await prober.probe_address(Engine.GRPC, "127.0.0.1", port)
        await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        down = await prober.probe_address(Engine.GRPC, "127.0.0.1", port)
    finally:
        await server.stop(0)
    assert up.ok
    assert (down.ok, down.reason) == (False, "probe: gRPC health NOT_SERVING")


async def test_grpc_probe_of_a_closed_port_fails(prober: Prober) -> None:
    """A gRPC agent with nothing listening fails without raising."""
    result = await prober.probe_address(Engine.GRPC, "127.0.0.1", free_port())
    assert not result.ok
    assert result.reason.startswith("probe: ")


def test_bounds_must_be_positive() -> None:
    """A prober without a positive timeout or body cap is refused at construction."""
    with pytest.raises(ValueError, match="must be > 0"):
        Prober(timeout_s=0)
