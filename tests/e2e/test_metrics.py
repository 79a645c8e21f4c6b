"""Prometheus metrics, scraped over real HTTP from a live server."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.model import LoadReport
from lb_service.service.metrics import GO_CODE_NAMES, Metrics, package_version
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore
from tests.factories import agent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
SERVICE = "lb.v1.LoadBalancer"


@pytest.fixture
async def served() -> AsyncIterator[tuple[LoadBalancerServer, LoadBalancer]]:
    """A server with metrics on an ephemeral HTTP port, and its balancer."""
    metrics = Metrics()
    balancer = LoadBalancer(MemoryStore(), BalancerConfig(), observer=metrics)
    options = ServerOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    server = LoadBalancerServer(balancer, options, metrics)
    await server.start()
    yield server, balancer
    await server.stop(0)


async def scrape_text(port: int) -> str:
    """GET /metrics from the exporter thread, keeping the event loop free to answer it."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    return await asyncio.to_thread(get)


async def scrape(port: int) -> Samples:
    """Every sample of one scrape, by name and labels."""
    text = await scrape_text(port)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; a KeyError names what is missing."""
    return samples[(name, frozenset(labels.items()))]


def rpc(method: str, kind: str = "unary") -> dict[str, str]:
    """The labels go-grpc-prometheus gives a lb.v1 method."""
    return {"grpc_type": kind, "grpc_service": SERVICE, "grpc_method": method}


async def test_scrape_shows_rpcs_selections_and_agent_loads(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """After real RPCs, /metrics counts them go-grpc-prometheus's way and shows per-agent load."""
    server, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        await stub.RegisterAgent(
            pb.RegisterAgentRequest(
                agent=pb.Agent(
                    id="gpu",
                    host="10.0.0.1",
                    port=11434,
                    models=["m"],
                    hardware=pb.Hardware(vram_gb=24),
                )
            )
        )
        await stub.SelectAgent(pb.SelectAgentRequest(acquire=True, session_id="s"))
        await stub.SelectAgent(pb.SelectAgentRequest(session_id="s"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.SelectAgent(pb.SelectAgentRequest(task=pb.TaskRequirements(model="x")))
    assert server.metrics is not None
    samples = await scrape(server.metrics_port)

    select = rpc("SelectAgent")
    assert value(samples, "grpc_server_started_total", **select) == 3
    assert value(samples, "grpc_server_handled_total", **select, grpc_code="OK") == 2
    assert (
        value(samples, "grpc_server_handled_total", **select, grpc_code="FailedPrecondition") == 1
    )
    assert value(samples, "grpc_server_msg_received_total", **select) == 3
    assert value(samples, "grpc_server_msg_sent_total", **select) == 2  # none for the failure
    assert value(samples, "grpc_server_handling_seconds_count", **select) == 3
    strategy = "least-connections"
    assert value(samples, "lb_selections_total", strategy=strategy, outcome="selected") == 1
    assert value(samples, "lb_selections_total", strategy=strategy, outcome="sticky") == 1
    assert (
        value(samples, "lb_selections_total", strategy=strategy, outcome="no_eligible_agent") == 1
    )
    # Read at scrape time: nothing refreshed a snapshot, yet the lease shows.
    assert value(samples, "lb_agent_active_connections", agent="gpu") == 1
    assert value(samples, "lb_agent_weight", agent="gpu") == 24
    assert value(samples, "lb_agent_healthy", agent="gpu") == 1
    assert value(samples, "lb_sticky_sessions") == 1
    assert value(samples, "lb_leases_expired_total") == 0


async def test_ejection_shows_on_the_very_next_scrape(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """The scrape right after the ejecting failure shows it, with the per-agent counters."""
    server, balancer = served
    for name in ("a", "b"):
        await balancer.register(agent(name))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        before = await scrape(server.metrics_port)
        assert value(before, "lb_agent_ejected", agent="a") == 0
        for _ in range(5):  # --ejection-consecutive-failures
            start = await stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="a"))
            await stub.RecordRequestEnd(
                pb.RecordRequestEndRequest(request_id=start.request_id, latency_ms=250, failed=True)
            )
    after = await scrape(server.metrics_port)
    assert value(after, "lb_agent_ejected", agent="a") == 1
    assert value(after, "lb_agent_healthy", agent="a") == 0
    assert value(after, "lb_agent_ejections_total", agent="a") == 1
    assert value(after, "lb_agent_requests_total", agent="a") == 5
    assert value(after, "lb_agent_failures_total", agent="a") == 5
    assert value(after, "lb_agent_request_duration_seconds_count", agent="a") == 5
    assert value(after, "lb_agent_request_duration_seconds_sum", agent="a") == 1.25
    assert value(after, "lb_agent_ejected", agent="b") == 0


async def test_load_reports_show_with_their_age_and_figures(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """An agent's report shows its age and stated figures; one without a report shows none."""
    server, balancer = served
    for name in ("a", "b"):
        await balancer.register(agent(name))
    await balancer.health.heartbeat("a", LoadReport(queued_requests=3, kv_cache_usage=0.5))

    samples = await scrape(server.metrics_port)

    assert 0 <= value(samples, "lb_agent_report_age_seconds", agent="a") < 60
    assert value(samples, "lb_agent_reported_queued_requests", agent="a") == 3
    assert value(samples, "lb_agent_kv_cache_usage", agent="a") == 0.5
    stated = {(name, dict(labels).get("agent")) for name, labels in samples}
    assert ("lb_agent_reported_running_requests", "a") not in stated  # not stated
    assert ("lb_agent_report_age_seconds", "b") not in stated  # no report


async def test_streams_are_typed_and_count_their_messages(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """WatchLoads is a server stream counting each update sent; health Watch still works."""
    server, balancer = served
    await balancer.register(agent("a"))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = pb_grpc.LoadBalancerStub(channel).WatchLoads(pb.WatchLoadsRequest())
        await call.read()  # the first snapshot
        await balancer.start("a")
        await call.read()  # the change
        call.cancel()
        # Health's Watch writes with context.write instead of yielding: it must still run.
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()
    samples = await scrape(server.metrics_port)
    stream = rpc("WatchLoads", "server_stream")
    assert value(samples, "grpc_server_started_total", **stream) == 1
    assert value(samples, "grpc_server_msg_received_total", **stream) == 1
    assert value(samples, "grpc_server_msg_sent_total", **stream) == 2
    health = {
        "grpc_type": "server_stream",
        "grpc_service": "grpc.health.v1.Health",
        "grpc_method": "Watch",
    }
    assert value(samples, "grpc_server_started_total", **health) == 1


async def test_no_created_series_and_the_build_is_named(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """The scrape has no ``*_created`` series, and ``lb_build_info`` names the version."""
    server, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        await pb_grpc.LoadBalancerStub(channel).GetStatistics(pb.GetStatisticsRequest())
    text = await scrape_text(server.metrics_port)
    assert "grpc_server_handled_total" in text
    assert "_created" not in text
    samples = await scrape(server.metrics_port)
    assert package_version() != "unknown"
    assert value(samples, "lb_build_info", version=package_version()) == 1


def test_every_status_code_has_its_go_spelling() -> None:
    """Every grpc status code maps to Go's spelling: CamelCase, and Canceled with one l."""
    assert set(GO_CODE_NAMES) == set(grpc.StatusCode)
    assert GO_CODE_NAMES[grpc.StatusCode.FAILED_PRECONDITION] == "FailedPrecondition"
    assert GO_CODE_NAMES[grpc.StatusCode.CANCELLED] == "Canceled"


async def test_expired_leases_are_counted() -> None:
    """A lease expired by the sweep counts in lb_leases_expired_total and as its agent's failure."""
    metrics = Metrics()
    clock = [1_000_000]
    balancer = LoadBalancer(
        MemoryStore(), BalancerConfig(request_timeout_s=1), clock=lambda: clock[0], observer=metrics
    )
    await balancer.register(agent("a"))
    await balancer.start("a")
    clock[0] += 2_000
    await balancer.sweep()
    assert metrics.registry.get_sample_value("lb_leases_expired_total") == 1
    assert metrics.registry.get_sample_value("lb_agent_failures_total", {"agent": "a"}) == 1
    assert metrics.registry.get_sample_value("lb_agent_requests_total", {"agent": "a"}) == 1


async def test_agent_counters_start_at_zero_and_leave_with_the_agent() -> None:
    """A new agent's counters start at 0 (rate() sees its first failure) and leave with it."""
    metrics = Metrics()
    balancer = LoadBalancer(MemoryStore(), BalancerConfig(), observer=metrics)
    await balancer.register(agent("a"))
    assert metrics.registry.get_sample_value("lb_agent_ejections_total", {"agent": "a"}) == 0
    assert metrics.registry.get_sample_value("lb_agent_failures_total", {"agent": "a"}) == 0
    await balancer.end("a", 10.0, await balancer.start("a"))
    assert metrics.registry.get_sample_value("lb_agent_requests_total", {"agent": "a"}) == 1
    await balancer.deregister("a")
    assert metrics.registry.get_sample_value("lb_agent_requests_total", {"agent": "a"}) is None


async def _count(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
    """A client-streaming method: answers with how many messages it read."""
    return str(len([r async for r in requests])).encode()


async def _echo(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
) -> AsyncIterator[bytes]:
    """A bidirectional method: echoes every message."""
    async for request in requests:
        yield request


async def test_client_and_bidi_streams_count_every_message() -> None:
    """Client-streaming and bidi calls are typed so and count each message each way."""
    metrics = Metrics()
    server = LoadBalancerServer(
        LoadBalancer(MemoryStore(), observer=metrics),
        ServerOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"),
        metrics,
    )
    handlers = {
        "Count": grpc.stream_unary_rpc_method_handler(_count),
        "Echo": grpc.stream_stream_rpc_method_handler(_echo),
    }
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Streams", handlers)]
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            count = channel.stream_unary("/test.Streams/Count")
            assert await count(iter([b"a", b"b", b"c"])) == b"3"
            echo = channel.stream_stream("/test.Streams/Echo")
            assert [reply async for reply in echo(iter([b"x", b"y"]))] == [b"x", b"y"]
        samples = await scrape(server.metrics_port)
    finally:
        await server.stop(0)
    client = {"grpc_type": "client_stream", "grpc_service": "test.Streams", "grpc_method": "Count"}
    assert value(samples, "grpc_server_msg_received_total", **client) == 3
    assert value(samples, "grpc_server_msg_sent_total", **client) == 1
    assert value(samples, "grpc_server_handled_total", **client, grpc_code="OK") == 1
    bidi = {"grpc_type": "bidi_stream", "grpc_service": "test.Streams", "grpc_method": "Echo"}
    assert value(samples, "grpc_server_msg_received_total", **bidi) == 2
    assert value(samples, "grpc_server_msg_sent_total", **bidi) == 2
    assert value(samples, "grpc_server_handled_total", **bidi, grpc_code="OK") == 1
