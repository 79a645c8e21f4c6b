"""The asyncio client: the values, errors, deadlines, retries and leases of the blocking one."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import grpc
import pytest

from lb_service.client import AsyncLoadBalancerClient, ClientError, Lease
from lb_service.model import (
    Agent,
    AgentLoad,
    Compute,
    Hardware,
    Selection,
    Statistics,
    StrategyName,
)
from tests.client.fakes import AsyncRecorder, AsyncStreamRecorder, ScriptedServer, Ticker
from tests.client.serving import ThreadServer

CPU = Agent("cpu-1", host="10.0.0.11", port=11434, models=("llama3:8b",),
            hardware=Hardware(cpu_cores=32))  # fmt: skip
GPU = Agent("gpu-1", host="10.0.0.21", port=11434, models=("llama3:8b", "llama3:70b"),
            hardware=Hardware(gpu="A100", vram_gb=80.0), metadata={"zone": "eu-1"})  # fmt: skip


class Boom(Exception):
    """The block's own failure."""


async def _fail_inside(
    acquiring: AbstractAsyncContextManager[Lease], clock: Ticker, seconds: float
) -> None:
    """Spend ``seconds`` of ``clock`` in the acquire block, then raise Boom."""
    async with acquiring:
        clock.now += seconds
        raise Boom


async def test_start_names_the_model_its_lease_is_for(server: ThreadServer) -> None:
    """start(model=...) sends the model, which the server's lease keeps."""
    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(CPU)
        request_id = await client.start("cpu-1", model="llama3:8b")
    assert server.balancer is not None
    leases = server.run(server.balancer._store.leases())  # only the store shows a lease's model
    assert leases[request_id].model == "llama3:8b"


async def test_every_method_round_trips(server: ThreadServer) -> None:
    """Every unary method, from register to statistics, returns exact domain values."""
    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(CPU)
        await client.register(GPU)
        await client.register(Agent("spare", host="10.0.0.1", port=11434))
        await client.deregister("spare")
        assert await client.agents() == [CPU, GPU]
        assert await client.select(model="llama3:70b", compute=Compute.GPU) == Selection(
            agent=GPU, strategy=StrategyName.LEAST_CONNECTIONS
        )
        request_id = await client.start("cpu-1")
        await client.end(request_id, latency_ms=20.0)
        [load] = await client.loads(["cpu-1"])
        assert load.last_request_at_ms > 0
        assert load == AgentLoad(
            "cpu-1", 0, 20.0, load.last_request_at_ms, 1, 0, 1.0, parallel_slots=1
        )
        assert await client.update_weights({"gpu-1": 8.0}) == {"cpu-1": 1.0, "gpu-1": 8.0}
        assert await client.set_strategy(StrategyName.WEIGHTED) == StrategyName.LEAST_CONNECTIONS
        assert await client.statistics() == Statistics(
            strategy=StrategyName.WEIGHTED,
            total_selections=1,
            failed_selections=0,
            total_requests=1,
            active_connections=0,
            avg_latency_ms=20.0,
            selections_by_agent={"gpu-1": 1},
        )


async def test_failed_precondition_is_a_client_error(server: ThreadServer) -> None:
    """A select no agent can serve raises ClientError with code, message and reason."""
    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(CPU)
        with pytest.raises(ClientError) as caught:
            await client.select(model="x")
    assert (caught.value.code, caught.value.message, caught.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "no agent serves model 'x'",
        "NO_ELIGIBLE_AGENT",
    )
    assert str(caught.value) == "FAILED_PRECONDITION: no agent serves model 'x'"


async def test_retries_unavailable_with_exact_waits(scripted: ScriptedServer) -> None:
    """UNAVAILABLE is retried after random() times 50, 100 ms; then the answer comes back."""
    scripted.servicer.failures = [grpc.StatusCode.UNAVAILABLE] * 2
    clock = Ticker()
    async with AsyncLoadBalancerClient(
        scripted.target, clock=clock, sleep=clock.asleep, random=lambda: 1.0
    ) as client:
        stats = await client.statistics()
    assert clock.sleeps == [0.05, 0.1]
    assert (scripted.servicer.calls, stats.total_selections) == (3, 3)


async def test_gives_up_on_a_dead_server(dead_target: str) -> None:
    """An unreachable server fails UNAVAILABLE after the default four attempts."""
    clock = Ticker()
    async with AsyncLoadBalancerClient(
        dead_target, clock=clock, sleep=clock.asleep, random=lambda: 1.0
    ) as client:
        with pytest.raises(ClientError) as caught:
            await client.agents()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert clock.sleeps == [0.05, 0.1, 0.2]


async def test_never_retries_other_codes(scripted: ScriptedServer) -> None:
    """RESOURCE_EXHAUSTED is raised after one attempt, without waiting."""
    scripted.servicer.failures = [grpc.StatusCode.RESOURCE_EXHAUSTED]
    clock = Ticker()
    async with AsyncLoadBalancerClient(scripted.target, clock=clock, sleep=clock.asleep) as client:
        with pytest.raises(ClientError) as caught:
            await client.statistics()
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (scripted.servicer.calls, clock.sleeps) == (1, [])


async def test_default_deadline_and_none_on_watch(scripted: ScriptedServer) -> None:
    """Unary calls carry the 5 s default (or the per-call timeout); the watch carries none."""
    recorder = AsyncRecorder()
    interceptors = [recorder, AsyncStreamRecorder(recorder.seen)]
    async with AsyncLoadBalancerClient(
        scripted.target, interceptors=interceptors, clock=Ticker()
    ) as client:
        await client.statistics()
        await client.statistics(timeout=1.5)
        updates = client.watch()
        await anext(updates)
        await updates.aclose()
    assert [seen.timeout for seen in recorder.seen] == [5.0, 1.5, None]


async def test_slow_server_raises_deadline_exceeded(scripted: ScriptedServer) -> None:
    """A server slower than the deadline gives DEADLINE_EXCEEDED after one attempt."""
    async with AsyncLoadBalancerClient(scripted.target, timeout=0.2) as client:
        with pytest.raises(ClientError) as caught:
            await client.agents()
    assert (caught.value.code, scripted.servicer.calls) == (grpc.StatusCode.DEADLINE_EXCEEDED, 1)


async def test_closing_a_watch_cancels_the_stream(scripted: ScriptedServer) -> None:
    """aclose() on the watch ends the RPC on the server, and the snapshot was converted."""
    async with AsyncLoadBalancerClient(scripted.target) as client:
        updates = client.watch(["a"], min_interval_ms=250)
        snapshot = await anext(updates)
        assert not scripted.servicer.watch_ended.is_set()
        await updates.aclose()
        assert scripted.servicer.watch_ended.wait(10)
    assert snapshot.timestamp_ms == 7
    assert snapshot.loads == (AgentLoad("a", 2, 0.0, 0, 0, 0, 0.0),)


async def test_watch_follows_changes(server: ThreadServer) -> None:
    """The live watch yields the current snapshot, then the next one after a change."""
    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(CPU)
        updates = client.watch(["cpu-1"])
        assert (await anext(updates)).loads[0].active_connections == 0
        await client.start("cpu-1")
        assert (await anext(updates)).loads[0].active_connections == 1
        await updates.aclose()


async def test_acquire_records_latency(server: ThreadServer) -> None:
    """``async with acquire`` ends the lease on exit with the block's latency in ms."""
    clock = Ticker(now=5.0)
    async with AsyncLoadBalancerClient(server.target, clock=clock) as client:
        await client.register(GPU)
        async with client.acquire(model="llama3:70b") as lease:
            assert lease.agent == GPU
            assert (await client.loads())[0].active_connections == 1
            clock.now += 0.125
        load = (await client.loads())[0]
    assert (load.active_connections, load.failed_requests, load.avg_latency_ms) == (0, 0, 125.0)


async def test_acquire_failure_propagates_and_counts(server: ThreadServer) -> None:
    """A raising block ends the lease failed=True and its exception propagates."""
    clock = Ticker()
    async with AsyncLoadBalancerClient(server.target, clock=clock) as client:
        await client.register(GPU)
        with pytest.raises(Boom):
            await _fail_inside(client.acquire(), clock, 0.01)
        load = (await client.loads())[0]
    assert (load.active_connections, load.failed_requests, load.avg_latency_ms) == (0, 1, 10.0)


async def test_acquire_end_failure_does_not_mask(
    server: ThreadServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If ending fails as well, the block's own exception still propagates, with a note."""

    async def end_fails(*args: object, **kwargs: object) -> None:
        raise ClientError(grpc.StatusCode.UNAVAILABLE, "server gone")

    async with AsyncLoadBalancerClient(server.target) as client:
        await client.register(GPU)
        monkeypatch.setattr(client, "end", end_fails)
        with pytest.raises(Boom) as caught:
            await _fail_inside(client.acquire(), Ticker(), 0.0)
    assert len(caught.value.__notes__) == 1
    assert caught.value.__notes__[0].endswith("failed: UNAVAILABLE: server gone")


async def test_health_and_a_watch_deadline(server: ThreadServer) -> None:
    """health() reads the server's SERVING status; a watch with timeout ends DEADLINE_EXCEEDED."""
    async with AsyncLoadBalancerClient(server.target) as client:
        assert await client.health() == "SERVING"
        updates = client.watch(timeout=0.2)
        try:
            assert (await updates.__anext__()).loads == ()
            with pytest.raises(ClientError) as caught:
                await updates.__anext__()  # nothing changes, so no second update comes
        finally:
            await updates.aclose()
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
