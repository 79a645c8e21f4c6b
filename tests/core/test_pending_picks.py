"""Pending picks: a pick without a lease counts on its agent until its start or its hold ends."""

from __future__ import annotations

import dataclasses

from lb_service.balancer import BalancerConfig
from lb_service.store.base import AgentStats, with_pending
from lb_service.store.memory import MemoryStore
from lb_service.store.pending import PendingPicks
from tests.factories import BASE_RULES, FakeClock, agent, balancer

HELD = BalancerConfig(choice_count=0, peak_ewma=False, pick_hold_s=1.0)


def test_with_pending_copies_every_field_and_sets_only_pending() -> None:
    """The generated copy equals ``dataclasses.replace`` on a record whose every field is set."""
    values: dict[str, object] = {}
    for n, field in enumerate(dataclasses.fields(AgentStats), start=1):
        default = getattr(AgentStats(), field.name)
        if isinstance(default, bool):
            values[field.name] = not default
        elif isinstance(default, tuple):
            values[field.name] = (("llama3:8b", 0.5, n, 0.25),)
        else:
            values[field.name] = n
    record = AgentStats(**values)  # type: ignore[arg-type]  # each field given a value of its type

    copy = with_pending(record, 99)

    assert copy == dataclasses.replace(record, pending=99)
    assert record.pending != 99  # the original is untouched


def test_a_start_confirms_the_agents_oldest_pick_and_expiry_skips_it() -> None:
    """Confirmed picks are not expired again; unconfirmed ones end at their deadline."""
    pending = PendingPicks()
    pending.hold("a", 1_000)
    pending.hold("a", 1_100)
    pending.hold("b", 1_200)
    assert pending.confirm("a")
    assert not pending.confirm("c")
    assert pending.expire(999) == {}
    assert pending.expire(1_150) == {"a": 1}  # a's first was confirmed: only its second
    assert pending.expire(5_000) == {"b": 1}
    assert not pending.confirm("a")


async def test_picks_without_a_lease_spread_while_their_starts_are_late() -> None:
    """Four picks in a row with no start reported go to four agents, not all to the first."""
    lb = balancer(config=HELD)
    for name in "abcd":
        await lb.register(agent(name))
    chosen = [(await lb.select()).agent.id for _ in range(4)]
    assert sorted(chosen) == ["a", "b", "c", "d"]


async def test_without_a_hold_every_pick_sees_the_same_picture() -> None:
    """With pick_hold_s 0 (the base rules) the idle agents take turns by rotation only."""
    lb = balancer(config=BASE_RULES)
    for name in "ab":
        await lb.register(agent(name))
    await lb.start("b")
    assert [(await lb.select()).agent.id for _ in range(3)] == ["a", "a", "a"]


async def test_a_reported_start_turns_the_pending_pick_into_the_lease() -> None:
    """Pick then start on the same agent: one request in flight there, not two."""
    lb = balancer(config=HELD)
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    assert (await lb.select()).agent.id == "a"
    await lb.start("a")
    # a holds one lease and no pending pick, so idle b takes the next pick.
    assert (await lb.select()).agent.id == "b"
    loads = {load.agent_id: load.active_connections for load in await lb.loads()}
    assert loads == {"a": 1, "b": 0}  # GetLoads counts leases only


async def test_a_pick_stops_counting_when_its_hold_ends() -> None:
    """After pick_hold_s without a start, the pick no longer counts on its agent."""
    clock = FakeClock()
    store = MemoryStore(epoch="test")
    lb = balancer(clock, config=HELD, store=store)
    await lb.register(agent("a"))
    assert (await lb.select()).agent.id == "a"
    clock.advance(0.9)
    await lb.sweep()
    assert (await store.stats())["a"].pending == 1
    clock.advance(0.2)
    await lb.sweep()
    assert (await store.stats())["a"].pending == 0
