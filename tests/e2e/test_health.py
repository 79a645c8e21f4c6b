"""Health in a live server: the prober it is given, DrainAgent over gRPC, and the metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.health import ProbeResult
from lb_service.model import Agent
from lb_service.service.metrics import Metrics
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore
from tests.e2e.test_metrics import scrape, value

#: Only a guard against a hang; no assertion depends on how long anything takes.
HANG_GUARD_S = 10.0


class FakeProber:
    """Answers probes of ids starting with "dead" as refused, every other one as up."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.probed: dict[str, int] = {}
        self.changed = asyncio.Event()
        self.closed = False

    async def probe(self, agent: Agent, *, full: bool) -> ProbeResult:
        self.probed[agent.id] = self.probed.get(agent.id, 0) + 1
        self.changed.set()
        if agent.id.startswith("dead"):
            return ProbeResult(False, "probe: connection refused", 0.003)
        return ProbeResult(True, "", 0.002)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
async def served() -> AsyncIterator[
    tuple[LoadBalancerServer, FakeProber, pb_grpc.LoadBalancerStub]
]:
    """A server probing with a FakeProber, with metrics, and a stub talking to it."""
    made: list[FakeProber] = []

    def factory(timeout_s: float) -> FakeProber:
        made.append(FakeProber(timeout_s))
        return made[-1]

    metrics = Metrics()
    balancer = LoadBalancer(MemoryStore(), BalancerConfig(probe_timeout_s=0.5), observer=metrics)
    options = ServerOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0")
    server = LoadBalancerServer(balancer, options, metrics, probe_factory=factory)
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, made[0], pb_grpc.LoadBalancerStub(channel)
    finally:
        await channel.close()
        await server.stop(0)
    assert made[0].closed  # the server closed the prober it built


async def _probed(prober: FakeProber, *ids: str) -> None:
    async with asyncio.timeout(HANG_GUARD_S):
        while not all(prober.probed.get(i) for i in ids):
            prober.changed.clear()
            await prober.changed.wait()


def _engine_agent(agent_id: str) -> pb.Agent:
    return pb.Agent(id=agent_id, host="127.0.0.1", port=9, engine=pb.ENGINE_VLLM)


async def test_the_server_probes_engine_agents_and_picks_only_live_ones(
    served: tuple[LoadBalancerServer, FakeProber, pb_grpc.LoadBalancerStub],
) -> None:
    """A dead engine agent stays out after its first probe; picks go to the live one."""
    server, prober, stub = served
    assert prober.timeout_s == 0.5  # built with the configured probe timeout
    for agent_id in ("live", "dead"):
        await stub.RegisterAgent(pb.RegisterAgentRequest(agent=_engine_agent(agent_id)))
    await stub.RegisterAgent(
        pb.RegisterAgentRequest(agent=pb.Agent(id="plain", host="127.0.0.1", port=9))
    )

    await _probed(prober, "live", "dead")
    loads = {load.agent_id: load for load in (await stub.GetLoads(pb.GetLoadsRequest())).loads}
    picks = {(await stub.SelectAgent(pb.SelectAgentRequest())).agent.id for _ in range(6)}

    assert "plain" not in prober.probed
    assert (loads["dead"].health, loads["dead"].health_reason) == (
        pb.AGENT_HEALTH_UNHEALTHY,
        "probe: connection refused",
    )
    assert loads["live"].health == pb.AGENT_HEALTH_HEALTHY
    assert picks == {"live", "plain"}
    samples = await scrape(server.metrics_port)
    assert value(samples, "lb_agent_health", agent="dead", state="unhealthy") == 1
    assert value(samples, "lb_agent_health", agent="dead", state="healthy") == 0
    assert value(samples, "lb_agent_healthy", agent="dead") == 0
    assert value(samples, "lb_agent_healthy", agent="live") == 1
    assert value(samples, "lb_probe_failures_total", reason="connection refused") >= 1
    assert value(samples, "lb_probe_duration_seconds_count") >= 2


async def test_drain_agent_over_grpc_shows_in_loads_and_metrics(
    served: tuple[LoadBalancerServer, FakeProber, pb_grpc.LoadBalancerStub],
) -> None:
    """DrainAgent answers the open leases; the agent then shows DRAINING and gets no picks."""
    server, _, stub = served
    for agent_id in ("a", "b"):
        agent = pb.Agent(id=agent_id, host="127.0.0.1", port=9)
        await stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent))
    await stub.RecordRequestStart(pb.RecordRequestStartRequest(agent_id="a"))

    drained = await stub.DrainAgent(pb.DrainAgentRequest(agent_id="a"))

    assert drained.active_connections == 1
    picks = {(await stub.SelectAgent(pb.SelectAgentRequest())).agent.id for _ in range(4)}
    assert picks == {"b"}
    samples = await scrape(server.metrics_port)
    assert value(samples, "lb_agent_health", agent="a", state="draining") == 1
    assert value(samples, "lb_agent_health_transitions_total", state="draining") == 1
