"""What only the shared Redis store does, and the store factory.

Re-ranking at commit, one binding per session across replicas, cache invalidation and
change notification across replicas, outages and recovery, and prefixes that keep
balancers apart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from lb_service.errors import StoreUnavailable
from lb_service.model import StrategyName
from lb_service.store import close_store, open_store
from lb_service.store.base import Binding, Committed, Contender, LiveRank, Pick, RequestEnd
from lb_service.store.feedback import Feedback
from lb_service.store.memory import MemoryStore
from lb_service.store.redis import RedisStore
from tests.factories import START_MS, agent
from tests.redis_server import PrivateRedis, unique_prefix
from tests.store.conftest import EPOCH, drop_keys

#: The most a change made through one replica may take to reach another's waiters.
PROPAGATION_S = 1.0

Replica = Callable[..., RedisStore]


@pytest.fixture
def replica(redis_stores: list[RedisStore], redis_url: str, redis_prefix: str) -> Replica:
    """Makes stores over this test's prefix, as separate replicas of one balancer would be."""

    def make(
        prefix: str = redis_prefix,
        strategy: StrategyName = StrategyName.LEAST_CONNECTIONS,
        **options: Any,
    ) -> RedisStore:
        store = RedisStore(redis_url, prefix=prefix, strategy=strategy, epoch=EPOCH, **options)
        redis_stores.append(store)
        return store

    return make


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain client, for what only an operator would do to the server."""
    client = redis.asyncio.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def registered(store: RedisStore, *specs: tuple[str, int]) -> None:
    """Register agents (id, max_connections) in order."""
    for agent_id, limit in specs:
        await store.put_agent(agent(agent_id, max_connections=limit), START_MS)


def pick(agent_id: str, *contenders: Contender, **fields: Any) -> Pick:
    """An acquiring pick of ``agent_id`` among ``contenders``."""
    return Pick(agent_id, START_MS, acquire=True, contenders=contenders, **fields)


# Re-ranking at commit.


async def test_picks_on_one_stale_snapshot_go_to_different_agents(replica: Replica) -> None:
    """Two picks of the same idle agent, decided on one snapshot, are spread at commit."""
    first, second = replica(), replica()
    await registered(first, ("a", 0), ("b", 0))
    await first.pick_state("")
    await second.pick_state("")
    contenders = (Contender("a"), Contender("b"))

    one = await first.commit_pick(pick("a", *contenders))
    two = await second.commit_pick(pick("a", *contenders))

    assert one is not None
    assert two is not None
    assert {one.agent_id, two.agent_id} == {"a", "b"}
    assert {s.active for s in (await first.stats()).values()} == {1}


async def test_a_contender_at_its_limit_is_passed_over(replica: Replica) -> None:
    """A contender that reached max_connections since the snapshot is skipped at commit."""
    store = replica()
    await registered(store, ("a", 1), ("b", 1))
    await store.open_lease("a", START_MS)  # another replica filled "a" meanwhile
    committed = await store.commit_pick(pick("a", Contender("a", 1), Contender("b", 1)))
    assert committed == Committed("b", "test-2")


async def test_all_contenders_full_commits_nothing(replica: Replica) -> None:
    """When every contender is full the commit returns None and records nothing at all."""
    store = replica()
    await registered(store, ("a", 1), ("b", 1))
    await store.open_lease("a", START_MS)
    await store.open_lease("b", START_MS)
    before = (dict(await store.stats()), await store.counters(), store.version())
    sequence = (await store.pick_state("s")).sequence

    committed = await store.commit_pick(
        pick("a", Contender("a", 1), Contender("b", 1), session_id="s", bind=True)
    )

    assert committed is None
    assert (dict(await store.stats()), await store.counters(), store.version()) == before
    state = await store.pick_state("s")
    assert (state.sequence, state.binding, state.lease_count) == (sequence, None, 2)


async def test_capability_rank_keeps_the_smallest_fit(replica: Replica) -> None:
    """LiveRank.ACTIVE ranks by fixed_rank first: a busier small GPU beats an idle big one."""
    store = replica()
    await registered(store, ("small", 0), ("big", 0))
    await store.open_lease("small", START_MS)
    contenders = (Contender("big", fixed_rank=80.0), Contender("small", fixed_rank=16.0))
    assert (await store.commit_pick(pick("big", *contenders))) == Committed("small", "test-2")


async def test_average_rank_measures_unmeasured_agents_first(replica: Replica) -> None:
    """LiveRank.AVERAGE puts an agent without a sample first, then the lowest average."""
    store = replica()
    await registered(store, ("fast", 0), ("slow", 0), ("new", 0))
    await store.end_request(RequestEnd("fast", "", 50.0, False, START_MS, Feedback()))
    await store.end_request(RequestEnd("slow", "", 500.0, False, START_MS, Feedback()))
    everyone = tuple(Contender(i) for i in ("fast", "slow", "new"))
    committed = await store.commit_pick(pick("fast", *everyone, rank=LiveRank.AVERAGE))
    assert committed is not None
    assert committed.agent_id == "new"
    measured = everyone[:2]
    committed = await store.commit_pick(pick("slow", *measured, rank=LiveRank.AVERAGE))
    assert committed is not None
    assert committed.agent_id == "fast"


async def test_peak_ewma_rank_weighs_the_estimate_by_queued_work(replica: Replica) -> None:
    """LiveRank.PEAK_EWMA ranks by estimate x (active + 1) on the loads at commit."""
    store = replica()
    await registered(store, ("quick", 0), ("steady", 0))
    await store.end_request(RequestEnd("quick", "", 100.0, False, START_MS, Feedback()))
    await store.end_request(RequestEnd("steady", "", 250.0, False, START_MS, Feedback()))
    contenders = (Contender("quick"), Contender("steady"))
    rank = LiveRank.PEAK_EWMA
    # 100 x 1 < 250 x 1, then 100 x 2 < 250, then 100 x 3 > 250 x 1.
    chosen = []
    for _ in range(3):
        committed = await store.commit_pick(pick("quick", *contenders, rank=rank))
        assert committed is not None
        chosen.append(committed.agent_id)
    assert chosen == ["quick", "quick", "steady"]


async def test_ties_take_turns_by_the_sequence(replica: Replica) -> None:
    """Equal contenders are committed in turn, the sequence-th of the ties, without acquire."""
    store = replica()
    await registered(store, ("a", 0), ("b", 0), ("c", 0))
    contenders = tuple(Contender(i) for i in "abc")
    chosen = []
    for _ in range(4):
        committed = await store.commit_pick(Pick("a", START_MS, contenders=contenders))
        assert committed is not None
        chosen.append(committed.agent_id)
    assert chosen == ["a", "b", "c", "a"]


# One binding per session.


async def test_concurrent_first_picks_of_a_session_bind_it_once(replica: Replica) -> None:
    """Twenty first picks of one session through three replicas all get the same agent."""
    stores = [replica() for _ in range(3)]
    await registered(stores[0], ("a", 0), ("b", 0), ("c", 0))
    for store in stores:
        assert (await store.pick_state("s")).binding is None
    picks = [
        stores[n % 3].commit_pick(
            Pick("abc"[n % 3], START_MS + n, session_id="s", bind=True, acquire=True)
        )
        for n in range(20)
    ]

    results = await asyncio.gather(*picks)

    assert all(r is not None for r in results)
    agents = {r.agent_id for r in results if r is not None}
    assert len(agents) == 1
    assert sum(not r.sticky for r in results if r is not None) == 1
    binding = (await stores[1].pick_state("s")).binding
    assert binding is not None
    assert binding.agent_id in agents


async def test_a_binding_the_snapshot_showed_is_replaced(replica: Replica) -> None:
    """bind=True replaces the binding its own snapshot showed (its agent was unfit or gone)."""
    store = replica()
    await registered(store, ("a", 0), ("b", 0))
    await store.commit_pick(Pick("a", START_MS, session_id="s", bind=True))
    shown = (await store.pick_state("s")).binding
    assert shown == Binding("a", START_MS)
    replacing = Pick("b", START_MS + 5, session_id="s", bind=True, seen=shown)
    committed = await store.commit_pick(replacing)
    assert committed == Committed("b")
    assert (await store.pick_state("s")).binding == Binding("b", START_MS + 5)


async def test_a_binding_made_meanwhile_wins_unless_idle(replica: Replica) -> None:
    """A binding another replica made after the snapshot wins if used since fresh_since_ms."""
    mine, theirs = replica(), replica()
    await registered(mine, ("a", 0), ("b", 0))
    assert (await mine.pick_state("s")).binding is None
    await theirs.commit_pick(Pick("a", START_MS, session_id="s", bind=True))

    stale = Pick("b", START_MS + 10, session_id="s", bind=True, fresh_since_ms=START_MS + 1)
    assert await mine.commit_pick(stale) == Committed("b")

    assert (await mine.pick_state("t")).binding is None
    await theirs.commit_pick(Pick("a", START_MS, session_id="t", bind=True))
    live = Pick("b", START_MS + 10, session_id="t", bind=True, fresh_since_ms=START_MS)
    assert await mine.commit_pick(live) == Committed("a", sticky=True)
    assert (await theirs.pick_state("t")).binding == Binding("a", START_MS + 10)


# Cache invalidation and change notification across replicas.


async def test_configuration_changes_reach_other_replicas_next_pick(replica: Replica) -> None:
    """Registry, weight and strategy changes through one replica show in another's next read."""
    writer, reader = replica(), replica()
    await registered(writer, ("a", 0))
    assert list((await reader.pick_state("")).agents) == ["a"]  # cached from here on

    await registered(writer, ("b", 0))
    await writer.set_weights({"a": 2.5})
    await writer.set_strategy(StrategyName.WEIGHTED)
    await writer.put_agent(agent("a", vram_gb=24.0), START_MS)

    state = await reader.pick_state("")
    assert list(state.agents) == ["a", "b"]
    assert state.agents["a"].hardware.vram_gb == 24.0
    assert dict(state.weights) == {"a": 2.5}
    assert state.strategy is StrategyName.WEIGHTED
    assert (state.shared, state.index) == (True, None)

    await writer.delete_agent("a")
    assert list(await reader.agents()) == ["b"]
    assert dict(await reader.weights()) == {}


async def test_a_change_through_one_replica_wakes_anothers_waiters(replica: Replica) -> None:
    """wait_for_change on one replica returns within a second of a write through another."""
    writer, watcher = replica(), replica()
    await registered(writer, ("a", 0))
    await watcher.start()
    seen = watcher.version()
    waiters = [asyncio.create_task(watcher.wait_for_change(seen)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)

    await writer.open_lease("a", START_MS)

    versions = await asyncio.wait_for(asyncio.gather(*waiters), PROPAGATION_S)
    assert versions == [writer.version()] * 3


async def test_the_initial_strategy_is_written_only_once(replica: Replica) -> None:
    """A replica's strategy option applies only when the prefix has none stored yet."""
    first = replica(strategy=StrategyName.WEIGHTED)
    assert await first.strategy() is StrategyName.WEIGHTED
    second = replica(strategy=StrategyName.ROUND_ROBIN)
    assert await second.strategy() is StrategyName.WEIGHTED
    assert await second.set_strategy(StrategyName.ROUND_ROBIN) is StrategyName.WEIGHTED
    assert await first.strategy() is StrategyName.ROUND_ROBIN


async def test_prefixes_keep_balancers_apart(replica: Replica) -> None:
    """Two prefixes on one Redis share nothing: registry, loads, ids, strategy or counters."""
    one, two = replica(prefix=unique_prefix()), replica(prefix=unique_prefix())
    await registered(one, ("a", 0))
    await one.set_strategy(StrategyName.ROUND_ROBIN)
    await one.commit_pick(Pick("a", START_MS, acquire=True, session_id="s", bind=True))

    assert dict(await two.agents()) == {}
    assert dict(await two.stats()) == {}
    assert await two.strategy() is StrategyName.LEAST_CONNECTIONS
    assert (await two.counters()).total_selections == 0
    assert (await two.pick_state("s")).binding is None
    assert await two.open_lease("x", START_MS) == "test-1"


async def test_scripts_are_loaded_again_after_a_script_flush(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A server that forgot the scripts (SCRIPT FLUSH, a restart) gets them again transparently."""
    store = replica()
    await registered(store, ("a", 0))
    await raw.script_flush()
    assert await store.commit_pick(Pick("a", START_MS, acquire=True)) == Committed("a", "test-1")


# Outages.


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A redis-server of this test's own, which it may stop and start again."""
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


async def test_outage_raises_store_unavailable_then_recovers(private_redis: PrivateRedis) -> None:
    """Redis down: every call raises StoreUnavailable naming it; back up: the same store works."""
    store = RedisStore(private_redis.url, prefix="outage", timeout_ms=300.0, epoch=None)
    try:
        await store.put_agent(agent("a"), START_MS)
        old_id = (
            await store.commit_pick(Pick("a", START_MS, acquire=True)) or Committed("")
        ).request_id
        private_redis.stop()

        calls = [
            store.check(),
            store.pick_state("s"),
            store.commit_pick(Pick("a", START_MS)),
            store.end_request(RequestEnd("a", old_id, 1.0, False, START_MS, Feedback())),
            store.agents(),
            store.stats(),
            store.counters(),
            store.leases(),
            store.expire_leases(START_MS, START_MS, Feedback()),
        ]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                await call
            message = str(caught.value)
            assert f"Redis store at 127.0.0.1:{private_redis.port} is unreachable" in message
            assert "(Connection refused)" in message
            assert isinstance(caught.value.__cause__, redis.exceptions.RedisError)

        private_redis.start()  # empty: the server keeps no data across restarts

        await store.check()
        assert dict(await store.agents()) == {}  # the cached registry was re-validated
        await store.put_agent(agent("b"), START_MS)
        state = await store.pick_state("s")
        assert list(state.agents) == ["b"]
        committed = await store.commit_pick(Pick("b", START_MS, acquire=True))
        assert committed is not None
        assert committed.request_id.endswith("-1")
        assert committed.request_id != old_id  # a new epoch: old ids never match new leases
    finally:
        await store.close()


async def test_a_server_that_does_not_answer_in_time_is_unavailable(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A call Redis does not answer within timeout_ms fails fast, saying the outcome is unknown."""
    store = replica(timeout_ms=100.0)
    await registered(store, ("a", 0))
    await raw.client_pause(400, all=True)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open_lease("a", START_MS)
    assert "did not answer within 100 ms" in str(caught.value)
    assert "may or may not have been made" in str(caught.value)
    await raw.client_unpause()


# The factory.


async def test_open_store_builds_the_store_a_url_names(redis_url: str, redis_prefix: str) -> None:
    """'memory' gives a MemoryStore, a redis:// URL a RedisStore; anything else is refused."""
    memory = open_store("memory", "lb", 500.0, 32, 1, StrategyName.WEIGHTED)
    assert isinstance(memory, MemoryStore)
    assert await memory.strategy() is StrategyName.WEIGHTED

    shared = open_store(redis_url, redis_prefix, 250.0, 4, 0, StrategyName.ROUND_ROBIN)
    try:
        assert isinstance(shared, RedisStore)
        assert shared.prefix == redis_prefix
        assert await shared.strategy() is StrategyName.ROUND_ROBIN
    finally:
        await close_store(shared)
        await drop_keys(redis_url, redis_prefix)

    with pytest.raises(ValueError, match="memory"):
        open_store("postgres://db", "lb", 500.0, 32, 1, StrategyName.WEIGHTED)
