"""The dispatcher pattern: ``with client.acquire(...) as lease`` picks, holds and ends a lease."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager

import grpc
import pytest

from lb_service.client import ClientError, Lease, LoadBalancerClient
from lb_service.model import Agent, Hardware
from tests.client.fakes import Ticker
from tests.client.serving import ThreadServer

GPU = Agent("gpu-1", host="10.0.0.21", port=11434, models=("llama3:8b",),
            hardware=Hardware(vram_gb=24.0))  # fmt: skip


class Boom(Exception):
    """The block's own failure."""


def _fail_inside(
    acquiring: AbstractContextManager[Lease], clock: Ticker, seconds: float, leases: list[Lease]
) -> None:
    """Spend ``seconds`` of ``clock`` in the acquire block, keep its lease, then raise Boom."""
    with acquiring as lease:
        leases.append(lease)
        clock.now += seconds
        raise Boom


@pytest.fixture
def clock() -> Ticker:
    """The clock the client measures latency with."""
    return Ticker(now=100.0)


@pytest.fixture
def timed(server: ThreadServer, clock: Ticker) -> Iterator[LoadBalancerClient]:
    """A client on ``clock``, with one GPU agent registered."""
    with LoadBalancerClient(server.target, clock=clock, sleep=clock.sleep) as client:
        client.register(GPU)
        yield client


def test_acquire_records_the_end_with_the_blocks_latency(
    timed: LoadBalancerClient, clock: Ticker
) -> None:
    """Inside the block the lease is open; on exit it is ended with the measured latency in ms."""
    with timed.acquire(model="llama3:8b", session_id="chat-1") as lease:
        assert isinstance(lease, Lease)
        assert (lease.agent, lease.request_id) == (GPU, lease.selection.request_id)
        assert lease.request_id
        assert timed.loads()[0].active_connections == 1
        clock.now += 0.25
    load = timed.loads()[0]
    assert (load.active_connections, load.total_requests, load.failed_requests) == (0, 1, 0)
    assert load.avg_latency_ms == 250.0


def test_a_raising_block_ends_the_lease_as_failed(timed: LoadBalancerClient, clock: Ticker) -> None:
    """When the block raises, the end is recorded failed=True and the exception propagates."""
    with pytest.raises(Boom):
        _fail_inside(timed.acquire(model="llama3:8b"), clock, 0.5, [])
    load = timed.loads()[0]
    assert (load.active_connections, load.failed_requests, load.avg_latency_ms) == (0, 1, 500.0)


def test_mark_failed_ends_the_lease_as_failed(timed: LoadBalancerClient) -> None:
    """mark_failed() inside a block that returns normally still records a failure."""
    with timed.acquire() as lease:
        lease.mark_failed()
        assert lease.failed
    assert timed.loads()[0].failed_requests == 1


def test_a_failing_end_does_not_mask_the_blocks_exception(
    timed: LoadBalancerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If recording the end fails too, the block's exception propagates with a note about it."""

    def end_fails(*args: object, **kwargs: object) -> None:
        raise ClientError(grpc.StatusCode.UNAVAILABLE, "server gone")

    monkeypatch.setattr(timed, "end", end_fails)
    leases: list[Lease] = []
    with pytest.raises(Boom) as caught:
        _fail_inside(timed.acquire(), Ticker(), 0.0, leases)
    assert caught.value.__notes__ == [
        f"lb-service: ending lease {leases[0].request_id} failed: UNAVAILABLE: server gone"
    ]


def test_a_failing_end_after_a_clean_block_raises(
    timed: LoadBalancerClient, server: ThreadServer
) -> None:
    """When the block succeeds but the end cannot be recorded, ClientError says so."""
    with pytest.raises(ClientError) as caught, timed.acquire():
        server.stop()
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE


def test_a_refused_pick_never_enters_the_block(timed: LoadBalancerClient) -> None:
    """When no agent fits, acquire raises ClientError before the block runs."""
    entered = False
    with pytest.raises(ClientError) as caught, timed.acquire(model="mixtral"):
        entered = True
    assert (caught.value.code, entered) == (grpc.StatusCode.FAILED_PRECONDITION, False)
