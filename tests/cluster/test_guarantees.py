"""The scale-out guarantees: three real replicas on one real Redis answer as one balancer.

Each test starts its own replicas under a key prefix of its own, drives them over
loopback gRPC, and reads the outcome back through every replica. Nothing here times
anything but the issue's own "within 1 s" propagation bounds, measured from the moment
the write RPC returned.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

import grpc
from lb.v1 import load_balancer_pb2 as pb

from tests.cluster.conftest import Connect, StartCluster
from tests.cluster.replicas import Client, eventually

AGENTS = ("agent-0", "agent-1", "agent-2", "agent-3")
#: The issue's propagation bound.
PROPAGATION_S = 1.0


async def _end(client: Client, replica: int, pick: pb.SelectAgentResponse) -> None:
    await client.stub(replica).RecordRequestEnd(
        pb.RecordRequestEndRequest(
            agent_id=pick.agent.id, request_id=pick.request_id, latency_ms=5.0
        ),
        timeout=10,
    )


async def test_acquire_end_pairs_through_every_replica_balance_exactly(
    cluster: StartCluster, connect: Connect
) -> None:
    """12 clients x 250 acquire/end pairs over 3 replicas leave every count at 0, 3000 requests.

    While they run, every load read (one atomic snapshot of the store, ``overview``)
    counts no more leases than the 12 clients can hold at once, and a read through
    GetLoads counts at least the leases the clients held for the whole of it: an end
    booked twice, or a start not booked, shows as too few open, even where a clamp
    or the other leases on the agent would keep the count at 0 or above.
    """
    replicas = cluster(3)
    client = connect(replicas)
    await client.register(*AGENTS)
    # Leases a client holds: from the moment SelectAgent answered until it sends the end.
    held: set[tuple[int, int]] = set()
    # Each GetLoads read: (leases held from before it was sent until it answered, total
    # active); each WatchLoads snapshot: its total active (when it was taken is unknown).
    polled: list[tuple[int, int]] = []
    watched: list[int] = []
    done = asyncio.Event()

    async def watch() -> None:
        stream = client.stub(2).WatchLoads(pb.WatchLoadsRequest(min_interval_ms=20))
        async for update in stream:
            watched.append(sum(load.active_connections for load in update.loads))
            if done.is_set():
                stream.cancel()

    async def poll() -> None:
        turn = 0
        while not done.is_set():
            before = set(held)
            loads = await client.loads(turn)
            # A lease in both sets was open in the store during the whole read (one
            # event loop: the sets cannot change while they are compared).
            throughout = len(before & held)
            polled.append((throughout, sum(load.active_connections for load in loads.values())))
            turn += 1
            await asyncio.sleep(0.01)

    async def pairs(worker: int) -> None:
        # Worker w is one of 4 homed on replica w % 3; pair i acquires through one
        # replica and ends through the next, so every pair crosses replicas.
        for i in range(250):
            pick = await client.stub(worker + i).SelectAgent(
                pb.SelectAgentRequest(acquire=True), timeout=10
            )
            held.add((worker, i))
            if i % 5 == 0:
                # A longer request: its lease stays open across whole reads (a read takes
                # a few ms), so the lower bound below has leases to count.
                await asyncio.sleep(0.05)
            held.discard((worker, i))  # from here on the end may land at any moment
            await _end(client, worker + i + 1, pick)

    watcher, poller = asyncio.ensure_future(watch()), asyncio.ensure_future(poll())
    await asyncio.gather(*(pairs(worker) for worker in range(12)))
    done.set()
    await poller
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(watcher, 5)

    assert len(polled) > 100  # the reads saw the load come and go...
    assert max(total for _, total in polled) > 0
    # ...never fewer open than the clients held throughout a read, never more than the
    # 12 clients hold at once (each holds one lease at a time).
    assert max(throughout for throughout, _ in polled) > 0  # the lower bound was put to work
    assert [(throughout, total) for throughout, total in polled if total < throughout] == []
    assert max(total for _, total in polled) <= 12
    assert watched  # a stream's first snapshot comes at once
    assert max(watched) <= 12
    for replica in range(3):
        loads = await client.loads(replica)
        assert {a: load.active_connections for a, load in loads.items()} == dict.fromkeys(AGENTS, 0)
        assert sum(load.total_requests for load in loads.values()) == 3000
        stats = await client.stub(replica).GetStatistics(pb.GetStatisticsRequest(), timeout=5)
        assert (stats.total_requests, stats.total_selections, stats.active_connections) == (
            3000,
            3000,
            0,
        )


async def test_concurrent_acquires_over_replicas_spread_like_one_balancer(
    cluster: StartCluster, connect: Connect
) -> None:
    """40 concurrent least-connections acquires via 3 replicas put at most 12 on any of 4 agents."""
    replicas = cluster(3)
    client = connect(replicas)
    await client.register(*AGENTS)

    picks = await asyncio.gather(
        *(
            client.stub(i).SelectAgent(pb.SelectAgentRequest(acquire=True), timeout=10)
            for i in range(40)
        )
    )

    held = collections.Counter(pick.agent.id for pick in picks)
    assert sum(held.values()) == 40
    assert max(held.values()) <= 12, held
    loads = await client.loads(1)
    assert {a: load.active_connections for a, load in loads.items() if held[a]} == held
    await asyncio.gather(*(_end(client, i + 1, pick) for i, pick in enumerate(picks)))
    assert all(load.active_connections == 0 for load in (await client.loads(2)).values())


async def test_a_new_session_binds_once_whichever_replicas_its_first_requests_reach(
    cluster: StartCluster, connect: Connect
) -> None:
    """20 concurrent first requests of a new session, through 3 replicas, all get one agent.

    Without pending picks (``--pick-hold 0``): held, 20 picks at once would fill the bound
    agent past its bounded share and spill over (keeping the binding), which is not what
    this test is about.
    """
    replicas = cluster(3, "--pick-hold", "0")
    client = connect(replicas)
    await client.register(*AGENTS)

    for session in ("session-a", "session-b", "session-c", "session-d", "session-e"):
        picks = await asyncio.gather(
            *(
                client.stub(i).SelectAgent(pb.SelectAgentRequest(session_id=session), timeout=10)
                for i in range(20)
            )
        )
        agents = {pick.agent.id for pick in picks}
        assert len(agents) == 1, (session, collections.Counter(p.agent.id for p in picks))
        later = await client.stub(1).SelectAgent(pb.SelectAgentRequest(session_id=session))
        assert later.agent.id in agents


async def test_leases_of_a_killed_replica_expire_through_the_survivors(
    cluster: StartCluster, connect: Connect
) -> None:
    """Leases held via a replica killed with SIGKILL expire once each, and counts return to 0."""
    replicas = cluster(3, "--request-timeout", "2")
    client = connect(replicas)
    await client.register(*AGENTS)
    for _ in range(8):
        await client.stub(0).SelectAgent(pb.SelectAgentRequest(acquire=True), timeout=10)
    assert sum(load.active_connections for load in (await client.loads(1)).values()) == 8

    replicas[0].kill()

    async def drained() -> bool:
        loads = [await client.loads(r) for r in (1, 2)]
        return all(load.active_connections == 0 for each in loads for load in each.values())

    await eventually(drained)
    for replica in (1, 2):
        loads = await client.loads(replica)
        # Each expired lease counts once as a failed request, however many replicas swept.
        assert sum(load.failed_requests for load in loads.values()) == 8
        assert sum(load.total_requests for load in loads.values()) == 8
    expired = sum(event["count"] for r in replicas[1:] for event in r.named("leases_expired"))
    assert expired == 8


async def test_weights_and_strategy_set_through_one_replica_apply_on_the_others_within_1s(
    cluster: StartCluster, connect: Connect
) -> None:
    """UpdateWeights and SetStrategy through one replica take effect on the other two within 1 s."""
    replicas = cluster(3, "--strategy", "weighted")
    client = connect(replicas)
    await client.register("heavy", "zero")

    await client.stub(0).UpdateWeights(pb.UpdateWeightsRequest(weights={"zero": 0.0}))
    written = asyncio.get_running_loop().time()

    async def weight_seen(replica: int) -> float:
        async def check() -> bool:
            return (await client.loads(replica))["zero"].weight == 0.0

        await eventually(check, every_s=0.01)
        return asyncio.get_running_loop().time() - written

    assert max(await asyncio.gather(weight_seen(1), weight_seen(2))) <= PROPAGATION_S
    for replica in (1, 2):  # weighted never picks a weight-0 agent
        for _ in range(10):
            pick = await client.stub(replica).SelectAgent(pb.SelectAgentRequest())
            assert pick.agent.id == "heavy"

    await client.stub(1).SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_ROUND_ROBIN))
    written = asyncio.get_running_loop().time()

    async def strategy_seen(replica: int) -> float:
        async def check() -> bool:
            stats: pb.GetStatisticsResponse = await client.stub(replica).GetStatistics(
                pb.GetStatisticsRequest()
            )
            return stats.strategy == pb.STRATEGY_ROUND_ROBIN

        await eventually(check, every_s=0.01)
        return asyncio.get_running_loop().time() - written

    assert max(await asyncio.gather(strategy_seen(0), strategy_seen(2))) <= PROPAGATION_S
    for replica in (0, 2):  # round robin takes turns, weights aside
        picks = [await client.stub(replica).SelectAgent(pb.SelectAgentRequest()) for _ in range(4)]
        assert {pick.agent.id for pick in picks} == {"heavy", "zero"}


async def test_watch_on_one_replica_sees_changes_made_through_another_within_1s(
    cluster: StartCluster, connect: Connect
) -> None:
    """A WatchLoads stream on one replica shows an acquire and its end via others within 1 s."""
    replicas = cluster(3)
    client = connect(replicas)
    await client.register(*AGENTS)
    stream = client.stub(2).WatchLoads(pb.WatchLoadsRequest(min_interval_ms=20))
    first = await stream.read()
    assert isinstance(first, pb.WatchLoadsResponse)
    loop = asyncio.get_running_loop()

    async def until(agent_id: str, active: int) -> None:
        while True:
            update = await stream.read()
            assert update is not grpc.aio.EOF
            if {load.agent_id: load.active_connections for load in update.loads}[
                agent_id
            ] == active:
                return

    pick = await client.stub(0).SelectAgent(pb.SelectAgentRequest(acquire=True))
    written = loop.time()
    await asyncio.wait_for(until(pick.agent.id, 1), 5)
    assert loop.time() - written <= PROPAGATION_S

    await _end(client, 1, pick)
    written = loop.time()
    await asyncio.wait_for(until(pick.agent.id, 0), 5)
    assert loop.time() - written <= PROPAGATION_S
    stream.cancel()
