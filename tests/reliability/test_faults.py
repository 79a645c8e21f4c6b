"""Faults: cancelled and expired calls, a dispatcher killed mid-request, SIGTERM under load.

Each leaves nothing behind: no stream, no task, no lease, no count that does not return.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.health.state import HealthRecord
from lb_service.model import Agent, StrategyName
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.base import (
    Configuration,
    Counters,
    EndResult,
    Limit,
    Overview,
    PickState,
    Registered,
    RequestEnd,
    UnknownAgent,
)
from lb_service.store.memory import MemoryStore
from tests.reliability.server_process import ServerProcess

HANG_GUARD_S = 20.0
CYCLES = 1000
#: How long the slow store holds each read: long enough for any deadline below to pass.
SLOW_S = 0.2


class SlowStore(MemoryStore):
    """A memory store whose reads (and registrations) suspend, so RPCs can be cancelled mid-way."""

    slow = False
    pause_s = SLOW_S

    def __init__(self) -> None:
        super().__init__()
        #: Set once a call is held inside the store: an RPC is then surely in flight.
        self.holding = asyncio.Event()

    async def _pause(self) -> None:
        if self.slow:
            self.holding.set()
            await asyncio.sleep(self.pause_s)

    async def agents(self) -> Mapping[str, Any]:
        await self._pause()
        return await super().agents()

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        await self._pause()
        return await super().pick_state(session_id, candidate_ids)

    async def counters(self) -> Counters:
        await self._pause()
        return await super().counters()

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        await self._pause()
        return await super().set_strategy(strategy)

    async def delete_agent(self, agent_id: str) -> bool:
        await self._pause()
        return await super().delete_agent(agent_id)

    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        # Registration is one store step (it checks max_agents itself): hold it before it.
        await self._pause()
        return await super().put_agent(agent, now_ms, max_agents)

    # Each of these is the one store step of its RPC, which checks its own ids and
    # limits: hold it before the step, as a registration.
    async def overview(self) -> Overview:
        await self._pause()
        return await super().overview()

    async def open_lease(
        self,
        agent_id: str,
        now_ms: int,
        max_leases: int = 0,
        *,
        only_known: bool = False,
        model: str = "",
    ) -> str | Limit | UnknownAgent:
        await self._pause()
        return await super().open_lease(
            agent_id, now_ms, max_leases, only_known=only_known, model=model
        )

    async def end_request(self, end: RequestEnd) -> EndResult:
        await self._pause()
        return await super().end_request(end)

    async def health_of(self, agent_id: str) -> HealthRecord | None:
        # A heartbeat's first store step: its read of the agent's health record.
        await self._pause()
        return await super().health_of(agent_id)

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        await self._pause()
        return await super().set_weights(weights, only_registered=only_registered)


class InProcess:
    """A real grpc.aio server in this process, so its tasks and streams can be counted."""

    def __init__(self, server: LoadBalancerServer, store: SlowStore, stub: Any) -> None:
        self.server = server
        self.store = store
        self.stub: pb_grpc.LoadBalancerStub = stub

    async def settled(self, baseline: int) -> dict[str, int]:
        """Activity once cancelled calls have unwound (polled; the guard fails a leak)."""
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            activity = self.server.activity()
            settled = activity["open_streams"] == 0 and activity["tasks"] <= baseline
            if settled or time.monotonic() > deadline:
                return activity
            await asyncio.sleep(0.05)

    async def state(self) -> tuple[object, ...]:
        store = self.store
        return (
            dict(await MemoryStore.agents(store)),
            dict(await store.stats()),
            dict(await store.leases()),
            await store.session_count(),
            await MemoryStore.strategy(store),
            dict(await store.weights()),
        )


@pytest.fixture
async def target() -> AsyncIterator[InProcess]:
    """An in-process server over a store that can be made slow, with two agents."""
    store = SlowStore()
    server = LoadBalancerServer(
        LoadBalancer(store, BalancerConfig()),
        ServerOptions(listen="127.0.0.1:0", grace_period_s=2.0),
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            for agent_id in ("a", "b"):
                await stub.RegisterAgent(
                    pb.RegisterAgentRequest(
                        agent=pb.Agent(id=agent_id, host="10.0.0.1", port=11434)
                    )
                )
            yield InProcess(server, store, stub)
    finally:
        await server.stop(0)


async def test_a_thousand_watch_cancellations_leave_nothing_behind(target: InProcess) -> None:
    """1,000 WatchLoads opened and cancelled (half by the client, half by deadline) leak nothing."""
    stub = target.stub
    await stub.GetStatistics(pb.GetStatisticsRequest())  # the channel's own tasks exist now
    baseline = target.server.activity()["tasks"]
    expired = 0
    for cycle in range(CYCLES):
        if cycle % 2:
            call = stub.WatchLoads(pb.WatchLoadsRequest())
            await asyncio.wait_for(call.read(), HANG_GUARD_S)
            call.cancel()
        else:
            # The snapshot arrives, then the stream waits for a change until the deadline.
            call = stub.WatchLoads(pb.WatchLoadsRequest(), timeout=0.005)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                async for _ in call:
                    pass
            expired += caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert expired == CYCLES // 2
    activity = await target.settled(baseline)
    assert activity["open_streams"] == 0
    assert activity["tasks"] <= baseline


#: The service's RPCs, as its descriptor declares them: CALLS must cover every one.
SERVICE = pb.DESCRIPTOR.services_by_name["LoadBalancer"]
#: Every RPC, called so that the slow store holds it past its deadline.
CALLS: dict[str, Callable[[pb_grpc.LoadBalancerStub], Any]] = {
    "RegisterAgent": lambda s: s.RegisterAgent(
        pb.RegisterAgentRequest(agent=pb.Agent(id="c", host="10.0.0.1", port=11434))
    ),
    "DeregisterAgent": lambda s: s.DeregisterAgent(pb.DeregisterAgentRequest(agent_id="a")),
    "ListAgents": lambda s: s.ListAgents(pb.ListAgentsRequest()),
    "SelectAgent": lambda s: s.SelectAgent(pb.SelectAgentRequest(session_id="s", acquire=True)),
    "RecordRequestStart": lambda s: s.RecordRequestStart(
        pb.RecordRequestStartRequest(agent_id="a")
    ),
    "RecordRequestEnd": lambda s: s.RecordRequestEnd(
        pb.RecordRequestEndRequest(agent_id="a", latency_ms=1.0)
    ),
    "GetLoads": lambda s: s.GetLoads(pb.GetLoadsRequest()),
    "GetStatistics": lambda s: s.GetStatistics(pb.GetStatisticsRequest()),
    "WatchLoads": lambda s: s.WatchLoads(pb.WatchLoadsRequest()).read(),
    "UpdateWeights": lambda s: s.UpdateWeights(pb.UpdateWeightsRequest(weights={"a": 2.0})),
    "SetStrategy": lambda s: s.SetStrategy(pb.SetStrategyRequest(strategy=pb.STRATEGY_WEIGHTED)),
    "SelectAgents": lambda s: s.SelectAgents(
        pb.SelectAgentsRequest(requests=[pb.SelectAgentRequest(session_id="s", acquire=True)])
    ),
    "Heartbeat": lambda s: s.Heartbeat(pb.HeartbeatRequest(agent_id="a")),
    "DrainAgent": lambda s: s.DrainAgent(pb.DrainAgentRequest(agent_id="a")),
}


def test_every_rpc_the_service_declares_is_cut_off_by_its_deadline() -> None:
    """CALLS has a call for exactly the RPCs the service descriptor declares."""
    assert set(CALLS) == {method.name for method in SERVICE.methods}


async def test_deadline_expiry_mid_rpc_changes_nothing_and_leaks_nothing(
    target: InProcess,
) -> None:
    """Each RPC cut off by its deadline part-way through leaves no state change and no task."""
    stub = target.stub
    await stub.GetStatistics(pb.GetStatisticsRequest())
    baseline = target.server.activity()["tasks"]
    before = await target.state()
    target.store.slow = True
    # In the descriptor's order: an RPC added to the proto is called here too, or the
    # lookup fails naming it.
    for name in (method.name for method in SERVICE.methods):
        call = CALLS[name]
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await _with_deadline(stub, call, SLOW_S / 4)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, name
    target.store.slow = False
    activity = await target.settled(baseline)
    assert activity["open_streams"] == 0
    assert activity["tasks"] <= baseline
    assert await target.state() == before


async def _draining(target: InProcess) -> None:
    """Return once the server refuses new calls (polled; the guard fails a stop that hangs)."""
    for _ in range(int(HANG_GUARD_S / 0.005)):
        if target.server.draining:
            return
        await asyncio.sleep(0.005)
    pytest.fail("the server never began draining")


async def _with_deadline(
    stub: pb_grpc.LoadBalancerStub, call: Callable[[Any], Any], timeout_s: float
) -> Any:
    # The generated stubs take the deadline per call; wrap the stub so `call` stays short.
    class Deadlined:
        def __getattr__(self, name: str) -> Callable[..., Any]:
            method = getattr(stub, name)
            return lambda request: method(request, timeout=timeout_s)

    return await call(Deadlined())


async def test_stop_lets_in_flight_rpcs_finish_and_refuses_new_ones(target: InProcess) -> None:
    """During a graceful stop an RPC already running completes, new ones get UNAVAILABLE."""
    stub = target.stub
    watch = stub.WatchLoads(pb.WatchLoadsRequest())
    await asyncio.wait_for(watch.read(), HANG_GUARD_S)
    target.store.slow, target.store.pause_s = True, 1.0  # the stop happens within this second
    in_flight = asyncio.ensure_future(stub.SelectAgent(pb.SelectAgentRequest(acquire=True)))
    await asyncio.wait_for(target.store.holding.wait(), HANG_GUARD_S)
    stopping = asyncio.ensure_future(target.server.stop(grace_period_s=5.0))
    await _draining(target)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetStatistics(pb.GetStatisticsRequest(), timeout=HANG_GUARD_S)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    picked = await asyncio.wait_for(in_flight, HANG_GUARD_S)
    assert picked.request_id
    await asyncio.wait_for(stopping, HANG_GUARD_S)
    assert await watch.code() == grpc.StatusCode.OK  # the stream ended cleanly


async def test_draining_refuses_new_calls_and_streams_with_unavailable(
    target: InProcess,
) -> None:
    """While the server drains, a new call or WatchLoads is UNAVAILABLE, saying why."""
    target.store.slow, target.store.pause_s = True, 1.0  # the stop happens within this second
    in_flight = asyncio.ensure_future(target.stub.ListAgents(pb.ListAgentsRequest()))
    await asyncio.wait_for(target.store.holding.wait(), HANG_GUARD_S)
    stopping = asyncio.ensure_future(target.server.stop(grace_period_s=5.0))
    await _draining(target)  # and the listing still in flight, held in the store
    for call in (
        target.stub.GetLoads(pb.GetLoadsRequest()),
        target.stub.WatchLoads(pb.WatchLoadsRequest()).read(),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await asyncio.wait_for(call, HANG_GUARD_S)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "shutting down" in (caught.value.details() or "")
    assert [a.id for a in (await asyncio.wait_for(in_flight, HANG_GUARD_S)).agents] == ["a", "b"]
    await asyncio.wait_for(stopping, HANG_GUARD_S)


# Real processes.

DISPATCHER = """
import sys, time, grpc
from lb.v1 import load_balancer_pb2 as pb, load_balancer_pb2_grpc as pb_grpc
stub = pb_grpc.LoadBalancerStub(grpc.insecure_channel(sys.argv[1]))
for _ in range(5):
    stub.SelectAgent(pb.SelectAgentRequest(acquire=True), timeout=10)
print("acquired", flush=True)
time.sleep(600)  # "calling the agent" until killed
"""


@pytest.fixture
def short_timeout_server() -> Iterator[ServerProcess]:
    """The real server, expiring leases after one second, with one agent."""
    running = ServerProcess("--request-timeout", "1")
    with grpc.insecure_channel(running.address) as channel:
        pb_grpc.LoadBalancerStub(channel).RegisterAgent(
            pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="10.0.0.1", port=11434)),
            timeout=HANG_GUARD_S,
        )
    yield running
    running.close()


def test_a_killed_dispatchers_leases_expire_and_counts_return(
    short_timeout_server: ServerProcess,
) -> None:
    """A dispatcher SIGKILLed holding five leases: they expire as failed and active returns to 0."""
    dispatcher = subprocess.Popen(
        [sys.executable, "-c", DISPATCHER, short_timeout_server.address],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert dispatcher.stdout is not None
        assert dispatcher.stdout.readline().strip() == "acquired"
    finally:
        dispatcher.kill()
        dispatcher.wait(HANG_GUARD_S)
    expired = short_timeout_server.wait_for("leases_expired")
    with grpc.insecure_channel(short_timeout_server.address) as channel:
        (load,) = pb_grpc.LoadBalancerStub(channel).GetLoads(pb.GetLoadsRequest()).loads
    assert expired["count"] == 5
    assert (load.active_connections, load.failed_requests, load.total_requests) == (0, 5, 5)


def test_sigterm_under_load_completes_calls_refuses_new_ones_and_exits_0() -> None:
    """SIGTERM mid-load: every call is OK or UNAVAILABLE, streams end OK, the process exits 0."""
    running = ServerProcess("--grace-period", "5")
    hammers, watchers = 8, 5
    codes: dict[str, set[grpc.StatusCode]] = {"unary": set(), "stream": set()}
    snapshots: list[int] = []
    lock = threading.Lock()
    busy: list[str] = []
    under_load = threading.Event()

    def going(who: str) -> None:
        # SIGTERM comes once every caller is mid-flow: hammers answered, watchers streaming.
        with lock:
            busy.append(who)
            if len(busy) == hammers + watchers:
                under_load.set()

    async def client() -> None:
        guard = time.monotonic() + HANG_GUARD_S
        async with grpc.aio.insecure_channel(running.address) as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            await stub.RegisterAgent(
                pb.RegisterAgentRequest(agent=pb.Agent(id="a", host="10.0.0.1", port=11434))
            )

            async def hammer() -> None:
                # Back to back until refused; then, as a dispatcher with another replica
                # would, it stops sending here.
                first = True
                while time.monotonic() < guard:
                    code = await _code(stub.SelectAgent(pb.SelectAgentRequest(), timeout=5))
                    with lock:
                        codes["unary"].add(code)
                    if code is not grpc.StatusCode.OK:
                        return
                    if first:
                        first = False
                        going("hammer")

            async def watch() -> None:
                call = stub.WatchLoads(pb.WatchLoadsRequest(min_interval_ms=100))
                count = 0
                with contextlib.suppress(grpc.aio.AioRpcError):  # its code is read below
                    async for _ in call:
                        count += 1
                        if count == 1:
                            going("watcher")
                snapshots.append(count)
                with lock:
                    codes["stream"].add(await call.code())

            await asyncio.gather(
                *[hammer() for _ in range(hammers)], *[watch() for _ in range(watchers)]
            )

    load = threading.Thread(target=asyncio.run, args=(client(),))
    load.start()
    try:
        assert under_load.wait(HANG_GUARD_S)
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(HANG_GUARD_S) == 0
        load.join(HANG_GUARD_S)
    finally:
        running.close()
    assert not load.is_alive()
    assert codes["unary"] == {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    assert codes["stream"] == {grpc.StatusCode.OK}
    assert len(snapshots) == watchers
    assert min(snapshots) >= 1
    assert running.named("stopped")


async def _code(call: Coroutine[Any, Any, Any] | Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK
