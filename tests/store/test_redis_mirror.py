"""A replica's copy of the load records: a pick reads only what changed, and reads it right.

``store.redis.mirror``: each change to a record or a pending count is numbered in Redis,
a pick's reply carries only the records changed since the replica's last read, and the
copy they are folded into must always equal what a fresh replica reads in full.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from lb_service.model import StrategyName, Task
from lb_service.store.base import AgentStats, Pick, PickState, RequestEnd
from lb_service.store.redis import RedisStore
from lb_service.store.redis.core import Config
from lb_service.store.redis.mirror import Mirror
from lb_service.store.redis.records import Record
from tests.factories import FEEDBACK, START_MS, agent
from tests.store.conftest import EPOCH, drop_keys, started

Replica = Callable[..., RedisStore]
#: Where ``pick_state.lua``'s reply lists the ids whose records it carries (None: all).
CHANGED_IDS = 9


@pytest.fixture
def replica(redis_stores: list[RedisStore], redis_url: str, redis_prefix: str) -> Replica:
    """Makes stores over this test's prefix, as separate replicas of one balancer would be."""

    def make(**options: Any) -> RedisStore:
        store = RedisStore(redis_url, prefix=redis_prefix, epoch=EPOCH, **options)
        redis_stores.append(store)
        return store

    return make


def carried(store: RedisStore) -> list[list[str] | None]:
    """Record the ids each of the store's pick_state replies carries records for."""
    seen: list[list[str] | None] = []
    run = store._eval

    async def spy(name: str, args: Any, **options: Any) -> Any:
        reply = await run(name, args, **options)
        if name == "pick_state":
            seen.append(reply[CHANGED_IDS])
        return reply

    store._eval = spy  # type: ignore[method-assign]  # a spy on the one call under test
    return seen


def registered_stats(state: PickState) -> dict[str, AgentStats]:
    """The registered agents' records a snapshot holds."""
    return {i: s for i, s in state.stats.items() if i in state.agents}


async def test_a_pick_reads_only_the_records_changed_since_the_last(replica: Replica) -> None:
    """Of 40 agents, the next pick's reply carries the one another replica started a request on."""
    reader, writer = replica(), replica()
    for n in range(40):
        await writer.put_agent(agent(f"agent-{n}"), START_MS)
        await started(writer, f"agent-{n}", START_MS)
    replies = carried(reader)
    await reader.pick_state("")
    await started(writer, "agent-7", START_MS + 1)
    state = await reader.pick_state("")
    await reader.pick_state("")

    assert replies == [None, ["agent-7"], []]  # every record, then what moved, then none
    assert state.stats["agent-7"].active == 2
    assert state.pool is not None
    pool = state.pool(Task())
    position = pool.position("agent-7")
    assert position is not None
    assert pool.candidate(position, False).active == 2  # the index read the change too


@pytest.mark.parametrize("seed", range(3))
async def test_random_histories_read_as_a_fresh_replica_reads_them(
    replica: Replica, seed: int
) -> None:
    """Registrations, weights, starts, ends and held picks on two replicas: the copy stays exact."""
    rng = random.Random(seed)
    reader, writer = replica(), replica()
    ids = [f"agent-{n}" for n in range(8)]
    for agent_id in ids[:5]:
        await writer.put_agent(agent(agent_id), START_MS)
    open_leases: list[tuple[str, str]] = []
    now = START_MS
    for _ in range(60):
        now += rng.randrange(1, 50)
        through = rng.choice([reader, writer])
        action = rng.random()
        registered = list((await through.pick_state("")).agents)
        if action < 0.1:
            await through.put_agent(agent(rng.choice(ids)), now)
        elif action < 0.15 and len(registered) > 1:
            await through.delete_agent(rng.choice(registered))
        elif action < 0.2 and registered:
            await through.set_weights({rng.choice(registered): rng.choice([0.5, 2.0])})
        elif action < 0.55 and registered:
            agent_id = rng.choice(registered)
            open_leases.append((agent_id, await started(through, agent_id, now)))
        elif action < 0.8 and open_leases:
            agent_id, request_id = open_leases.pop(rng.randrange(len(open_leases)))
            end = RequestEnd(agent_id, request_id, rng.uniform(50, 900), False, now, FEEDBACK)
            await through.end_request(end)
        elif registered:
            hold = now + rng.choice([0, 30, 200])
            await through.commit_pick(Pick(rng.choice(registered), now, hold_until_ms=hold))
        mine, fresh = await reader.pick_state(""), await replica().pick_state("")
        assert dict(mine.agents) == dict(fresh.agents)
        assert dict(mine.weights) == dict(fresh.weights)
        assert registered_stats(mine) == registered_stats(fresh)


async def test_after_redis_loses_everything_a_replica_reads_every_record_again(
    replica: Replica, redis_url: str, redis_prefix: str
) -> None:
    """A replica holding a copy reads the fleet anew after the prefix's keys are gone."""
    reader, writer = replica(), replica()
    await writer.put_agent(agent("old"), START_MS)
    await started(writer, "old", START_MS)
    await reader.pick_state("")
    await drop_keys(redis_url, redis_prefix)  # a Redis restart without persistence
    await writer.put_agent(agent("new"), START_MS)
    await started(writer, "new", START_MS)

    state = await reader.pick_state("")

    assert list(state.agents) == ["new"]
    assert registered_stats(state) == registered_stats(await replica().pick_state(""))
    assert state.stats["new"].active == 1


async def test_candidates_read_their_records_beside_the_copy(replica: Replica) -> None:
    """Caller-supplied candidates come with their records and pending picks; the copy stays."""
    store = replica()
    await store.put_agent(agent("registered"), START_MS)
    await store.commit_pick(Pick("outside", START_MS, hold_until_ms=START_MS + 500))
    await started(store, "outside", START_MS)

    state = await store.pick_state("", ("outside", "never-seen"))

    assert state.stats["outside"].active == 1
    assert "never-seen" not in state.stats
    assert set(registered_stats(state)) <= {"registered"}


def _config(version: str, *ids: str) -> Config:
    agents = {agent_id: agent(agent_id) for agent_id in ids}
    return Config(
        version, StrategyName.LEAST_CONNECTIONS, MappingProxyType(agents), ids, MappingProxyType({})
    )


def _record(active: int) -> tuple[str, Record]:
    return f"text-{active}", Record(AgentStats(active=active), 1, 0)


def test_an_older_reply_never_replaces_a_newer_record() -> None:
    """Replies folded out of order keep each agent's newest record and the highest counter."""
    mirror = Mirror(_config("1", "a", "b"))
    mirror.fold(["a", "b"], [_record(3), _record(1)], ["12", "9"], [None, "2"], "12")
    mirror.fold(["a"], [_record(2)], ["10"], [None], "10")  # left Redis before the first

    assert mirror.stats["a"].active == 3
    assert (mirror.stats["b"].active, mirror.stats["b"].pending) == (1, 2)
    assert mirror.since == 12


def test_records_of_agents_not_registered_stay_out_of_the_copy() -> None:
    """A reply's record for an id outside the configuration (a candidate) is not kept."""
    mirror = Mirror(_config("1", "a"))
    taken = mirror.fold(["a", "outside"], [_record(1), _record(5)], ["3", "4"], [None, None], "4")

    assert [agent_id for agent_id, _ in taken] == ["a"]
    assert set(mirror.stats) == {"a"}


async def test_ids_named_only_as_candidates_leave_no_copies_behind(replica: Replica) -> None:
    """Picks among ever-new candidate ids keep copies of registered agents' records only."""
    store = replica()
    await store.put_agent(agent("registered"), START_MS)
    for n in range(30):
        await store.pick_state("", (f"outside-{n}",))
        await store.commit_pick(Pick(f"outside-{n}", START_MS, acquire=True))
        await store.pick_state("")

    assert set(store._decoded) <= {"registered"}
