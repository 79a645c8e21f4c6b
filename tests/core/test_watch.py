"""WatchLoads in the core: first snapshot, coalesced updates, filtering and clean cancel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import AgentNotFound, InvalidArgument
from lb_service.model import LoadSnapshot
from tests.factories import START_MS, agent, balancer

# A short floor keeps the suite quick; pacing is not asserted, only what is sent.
FAST = BalancerConfig(watch_min_interval_ms=10.0)
HANG_GUARD_S = 5.0


async def _next(stream: AsyncIterator[LoadSnapshot]) -> LoadSnapshot:
    return await asyncio.wait_for(anext(stream), HANG_GUARD_S)


async def test_first_snapshot_is_immediate_and_full() -> None:
    """The stream opens with every registered agent's load, stamped with the clock's time."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    stream = lb.watch()
    first = await _next(stream)
    assert [load.agent_id for load in first.loads] == ["a", "b"]
    assert first.timestamp_ms == START_MS
    await stream.aclose()


async def test_changes_between_updates_are_coalesced() -> None:
    """Five starts made before the watcher runs again arrive as one snapshot showing all five."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    stream = lb.watch(["a"])
    await _next(stream)
    for _ in range(5):
        await lb.start("a")
    update = await _next(stream)
    assert [load.active_connections for load in update.loads] == [5]
    await stream.aclose()


async def test_changes_to_unwatched_agents_send_nothing() -> None:
    """A change to another agent does not produce an update for a watcher of one agent."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    stream = lb.watch(["a"])
    await _next(stream)
    await lb.start("b")
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.05)  # several intervals: an update, if any were due, would be ready
    assert not pending.done()
    await lb.start("a")
    update = await asyncio.wait_for(pending, HANG_GUARD_S)
    assert [load.active_connections for load in update.loads] == [1]
    await stream.aclose()


async def test_watch_all_follows_registration() -> None:
    """Watching every agent includes an agent registered after the stream opened."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    stream = lb.watch()
    await _next(stream)
    await lb.register(agent("late"))
    update = await _next(stream)
    assert [load.agent_id for load in update.loads] == ["a", "late"]
    await stream.aclose()


async def test_unknown_and_empty_ids_fail_before_streaming(lb: LoadBalancer) -> None:
    """An unknown id raises AgentNotFound and an empty id InvalidArgument, with no snapshot."""
    with pytest.raises(AgentNotFound):
        await anext(lb.watch(["ghost"]))
    with pytest.raises(InvalidArgument):
        await anext(lb.watch([""]))


async def test_cancelled_watcher_leaves_nothing_waiting() -> None:
    """Cancelling a watcher mid-wait ends it at once and a new write wakes no one."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    stream = lb.watch(["a"])
    await _next(stream)
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    before = {t for t in asyncio.all_tasks() if not t.done()}
    await lb.start("a")
    await asyncio.sleep(0.02)
    assert {t for t in asyncio.all_tasks() if not t.done()} == before
