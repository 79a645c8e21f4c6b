"""Health across three real replicas on one Redis: drains and missed heartbeats seen everywhere."""

from __future__ import annotations

import asyncio

from lb.v1 import load_balancer_pb2 as pb

from tests.cluster.conftest import Connect, StartCluster
from tests.cluster.replicas import eventually


async def test_a_drain_through_one_replica_stops_picks_on_all_at_once(
    cluster: StartCluster, connect: Connect
) -> None:
    """Once DrainAgent returned through replica 0, no replica's pick leases the agent."""
    replicas = cluster(3)
    client = connect(replicas)
    await client.register("a", "b")

    reply = await client.stub(0).DrainAgent(pb.DrainAgentRequest(agent_id="a"))

    assert reply.active_connections == 0
    for replica in (0, 1, 2):  # at once: every pick reads the agents out from Redis
        for _ in range(6):
            pick = await client.stub(replica).SelectAgent(pb.SelectAgentRequest(acquire=True))
            assert pick.agent.id == "b"
        load = (await client.loads(replica))["a"]
        assert (load.health, load.health_reason) == (pb.AGENT_HEALTH_DRAINING, "drained by admin")
    await client.stub(2).DrainAgent(pb.DrainAgentRequest(agent_id="a", undrain=True))
    assert (await client.loads(1))["a"].health == pb.AGENT_HEALTH_HEALTHY


async def test_a_silent_heartbeat_agent_is_unhealthy_on_every_replica(
    cluster: StartCluster, connect: Connect
) -> None:
    """An agent that stops heartbeating shows unhealthy through every replica, then comes back.

    How soon is not asserted here (the sweep runs every second, so TTL + 1 s by design,
    and a loaded machine adds to it); the fake-clock tests pin the rule itself.
    """
    replicas = cluster(3)
    client = connect(replicas)
    agent = pb.Agent(id="hb", host="10.0.0.1", port=8000, heartbeat_ttl_ms=500)
    await client.stub(1).RegisterAgent(pb.RegisterAgentRequest(agent=agent))
    await client.stub(2).Heartbeat(pb.HeartbeatRequest(agent_id="hb"))

    async def unhealthy_seen(replica: int) -> None:
        async def check() -> bool:
            return (await client.loads(replica))["hb"].health == pb.AGENT_HEALTH_UNHEALTHY

        await eventually(check, every_s=0.01)

    await asyncio.gather(*(unhealthy_seen(r) for r in (0, 1, 2)))
    reason = (await client.loads(0))["hb"].health_reason
    assert reason.startswith("heartbeat missed for ")
    await client.stub(0).Heartbeat(pb.HeartbeatRequest(agent_id="hb"))
    assert (await client.loads(2))["hb"].health == pb.AGENT_HEALTH_HEALTHY
