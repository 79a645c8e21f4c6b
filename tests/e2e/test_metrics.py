"""Prometheus metrics, scraped over real HTTP from a live server."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.metrics import Metrics
from lb_service.service.server import LoadBalancerServer, ServerOptions
from lb_service.store.memory import MemoryStore
from tests.factories import agent

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


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


async def _scrape(port: int) -> Samples:
    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode())

    text = await asyncio.to_thread(get)  # the exporter thread answers; keep the loop free
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_scrape_shows_rpcs_selections_and_agent_loads(
    served: tuple[LoadBalancerServer, LoadBalancer],
) -> None:
    """After real RPCs, /metrics counts them by code and shows selections and per-agent load."""
    server, balancer = served
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
    await server.metrics.refresh(balancer)  # what the server's sweep does every second
    samples = await _scrape(server.metrics_port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, frozenset(labels.items()))]

    service = "lb.v1.LoadBalancer"
    assert (
        value(
            "grpc_server_handled_total",
            grpc_service=service,
            grpc_method="SelectAgent",
            grpc_code="OK",
        )
        == 2
    )
    assert (
        value(
            "grpc_server_handled_total",
            grpc_service=service,
            grpc_method="SelectAgent",
            grpc_code="FAILED_PRECONDITION",
        )
        == 1
    )
    assert (
        value("grpc_server_handling_seconds_count", grpc_service=service, grpc_method="SelectAgent")
        == 3
    )
    strategy = "least-connections"
    assert value("lb_selections_total", strategy=strategy, outcome="selected") == 1
    assert value("lb_selections_total", strategy=strategy, outcome="sticky") == 1
    assert value("lb_selections_total", strategy=strategy, outcome="no_eligible_agent") == 1
    assert value("lb_agent_active_connections", agent="gpu") == 1
    assert value("lb_agent_weight", agent="gpu") == 24
    assert value("lb_agent_healthy", agent="gpu") == 1
    assert value("lb_sticky_sessions") == 1
    assert value("lb_leases_expired_total") == 0


async def test_expired_leases_are_counted() -> None:
    """Leases expired by the sweep show in lb_leases_expired_total."""
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
