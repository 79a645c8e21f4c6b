"""Watchers share reads: one snapshot per store version, whatever the number of watchers."""

from __future__ import annotations

import asyncio

from lb_service.balancer import BalancerConfig
from tests.factories import agent, balancer

FAST = BalancerConfig(watch_min_interval_ms=10.0)
HANG_GUARD_S = 5.0


async def test_watchers_reading_the_same_version_share_one_snapshot() -> None:
    """Two watchers of the same agents opened between the same changes get the same object."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    first, second = lb.watch(["a"]), lb.watch(["a"])

    one = await asyncio.wait_for(anext(first), HANG_GUARD_S)
    other = await asyncio.wait_for(anext(second), HANG_GUARD_S)

    assert one is other
    await lb.start("a")
    assert await asyncio.wait_for(anext(first), HANG_GUARD_S) is await asyncio.wait_for(
        anext(second), HANG_GUARD_S
    )
    await first.aclose()
    await second.aclose()


async def test_watchers_of_different_agents_read_their_own() -> None:
    """A watcher of other agents is not handed a snapshot read for someone else."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    of_a, of_b = lb.watch(["a"]), lb.watch(["b"])

    assert [x.agent_id for x in (await anext(of_a)).loads] == ["a"]
    assert [x.agent_id for x in (await anext(of_b)).loads] == ["b"]
    await of_a.aclose()
    await of_b.aclose()


async def test_picks_that_leave_loads_alone_send_nothing() -> None:
    """Picks without acquire change the version but not the loads: no update is sent."""
    lb = balancer(config=FAST)
    await lb.register(agent("a"))
    stream = lb.watch()
    await anext(stream)
    pending = asyncio.ensure_future(anext(stream))
    for _ in range(5):
        await lb.select()
        await asyncio.sleep(0.01)

    assert not pending.done()
    await lb.start("a")
    update = await asyncio.wait_for(pending, HANG_GUARD_S)
    assert [x.active_connections for x in update.loads] == [1]
    await stream.aclose()
