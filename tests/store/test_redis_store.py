"""What only the shared Redis store does, and the store factory.

Re-ranking at commit (one generic comparison, equal to strategies.base's), the Lua
bookkeeping (equal to feedback.open_lease/close_lease), estimates written back by
compare-and-set across replicas, one binding per session across replicas, cache
invalidation and change notification across replicas, outages and recovery, and
prefixes that keep balancers apart.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import fields, replace
from typing import Any

import pytest
import redis.asyncio
import redis.exceptions

from lb_service.errors import StoreUnavailable
from lb_service.model import StrategyName
from lb_service.model_cost import lesson
from lb_service.store import close_store, open_store
from lb_service.store.base import (
    AgentStats,
    Binding,
    Committed,
    Configuration,
    Contender,
    Lease,
    Pick,
    RequestEnd,
)
from lb_service.store.feedback import (
    Ejection,
    Feedback,
    close_lease,
    fold_end,
    fold_expiry,
    open_lease,
)
from lb_service.store.memory import MemoryStore
from lb_service.store.redis import BOOKKEEPING, ESTIMATES, RedisStore
from lb_service.store.redis.estimates import OpenedHere
from lb_service.strategies.base import Candidate, LoadRank, Rank, rotate_lowest
from tests.factories import START_MS, agent
from tests.redis_server import PrivateRedis, unique_prefix
from tests.store.conftest import EPOCH, drop_keys, started

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
    contenders = (Contender("a", per_request=1.0), Contender("b", per_request=1.0))

    one = await first.commit_pick(pick("a", *contenders))
    two = await second.commit_pick(pick("a", *contenders))

    assert isinstance(one, Committed)
    assert isinstance(two, Committed)
    assert {one.agent_id, two.agent_id} == {"a", "b"}
    assert {s.active for s in (await first.stats()).values()} == {1}


async def test_a_contender_at_its_limit_is_passed_over(replica: Replica) -> None:
    """A contender that reached max_connections since the snapshot is skipped at commit."""
    store = replica()
    await registered(store, ("a", 1), ("b", 1))
    await started(store, "a", START_MS)  # another replica filled "a" meanwhile
    committed = await store.commit_pick(pick("a", Contender("a", 1), Contender("b", 1)))
    assert committed == Committed("b", "test-2")


async def test_all_contenders_full_commits_nothing(replica: Replica) -> None:
    """When every contender is full the commit returns None, counting one failed selection only.

    The failure is counted in the commit's own step, so a refusal costs no extra round trip.
    """
    store = replica()
    await registered(store, ("a", 1), ("b", 1))
    await started(store, "a", START_MS)
    await started(store, "b", START_MS)
    before = (dict(await store.stats()), await store.counters(), store.version())
    sequence = (await store.pick_state("s")).sequence

    committed = await store.commit_pick(
        pick("a", Contender("a", 1), Contender("b", 1), session_id="s", bind=True)
    )

    assert committed is None
    stats, counters, version = before
    counted = replace(counters, failed_selections=counters.failed_selections + 1)
    assert (dict(await store.stats()), await store.counters(), store.version()) == (
        stats,
        counted,
        version,
    )
    state = await store.pick_state("s")
    assert (state.sequence, state.binding, state.lease_count) == (sequence, None, 2)


async def test_the_tier_ranks_before_the_load(replica: Replica) -> None:
    """The first rank key (capability-match's fit) decides first: a busier small GPU wins."""
    store = replica()
    await registered(store, ("small", 0), ("big", 0))
    await started(store, "small", START_MS)
    contenders = (
        Contender("big", tier=80.0, per_request=1.0),
        Contender("small", tier=16.0, per_request=1.0),
    )
    assert (await store.commit_pick(pick("big", *contenders))) == Committed("small", "test-2")


async def test_the_rank_moves_with_the_live_active_count(replica: Replica) -> None:
    """Each rank is max(floor, per_request x (active + 1) + offset) on the count at commit."""
    store = replica()
    await registered(store, ("quick", 0), ("steady", 0))
    # quick: 250 while the floor holds (active 0 and 1), then 300, 400; steady: 200, 300, 400.
    contenders = (
        Contender("quick", tier=1.0, per_request=100.0, floor=250.0),
        Contender("steady", tier=1.0, per_request=100.0, offset=100.0),
    )
    chosen = []
    for _ in range(5):
        committed = await store.commit_pick(pick("quick", *contenders))
        assert isinstance(committed, Committed)
        chosen.append(committed.agent_id)
    # The fourth is a tie at 300: the pick's own agent stands.
    assert chosen == ["steady", "quick", "quick", "quick", "steady"]


def _ranked(ranks: dict[str, LoadRank], candidate: Candidate) -> Rank:
    """A candidate's rank at its active count, as a strategy computes it."""
    return ranks[candidate.agent.id].at(candidate.active)


@pytest.mark.parametrize("seed", range(4))
async def test_the_commit_ranks_as_strategies_base(replica: Replica, seed: int) -> None:
    """On any loads, the commit keeps its pick while lowest, else picks as rotate_lowest."""
    store = replica()
    rng = random.Random(seed)
    ids = [f"agent-{n}" for n in range(6)]
    limits = {agent_id: rng.choice([0, 0, 2, 3]) for agent_id in ids}
    await registered(store, *limits.items())
    active = dict.fromkeys(ids, 0)
    for _ in range(40):
        drawn = rng.sample(ids, rng.randint(1, len(ids)))
        ranks = {
            agent_id: LoadRank(
                float(rng.choice([0, 1, 16, 80])),
                rng.choice([0.0, 0.25, 1 / 3, 1.0, 10.0]),
                rng.choice([0.0, -1.0, 7.5]),
                rng.choice([0.0, 2.0, 40.0]),
            )
            for agent_id in drawn
        }
        room = [
            Candidate(agent(agent_id), active[agent_id], None, 1.0)
            for agent_id in drawn
            if not limits[agent_id] or active[agent_id] < limits[agent_id]
        ]
        sequence = (await store.pick_state("")).sequence
        contenders = tuple(Contender(i, limits[i], *ranks[i]) for i in drawn)
        acquire = rng.random() < 0.6
        committed = await store.commit_pick(
            Pick(drawn[0], START_MS, acquire=acquire, contenders=contenders)
        )
        if not room:
            assert committed is None
            continue
        ranked = functools.partial(_ranked, ranks)
        expected = rotate_lowest(room, ranked, sequence)
        own = next((c for c in room if c.agent.id == drawn[0]), None)
        if own is not None and ranked(own) == ranked(expected):
            expected = own  # the pick's own agent stands while it is among the lowest
        assert isinstance(committed, Committed)
        assert committed.agent_id == expected.agent.id
        active[expected.agent.id] += acquire


async def test_a_choice_still_among_the_lowest_stands_however_many_tie(replica: Replica) -> None:
    """Equal contenders: the pick's own agent is committed each time, not the sequence-th."""
    store = replica()
    await registered(store, ("a", 0), ("b", 0), ("c", 0))
    contenders = tuple(Contender(i) for i in "abc")
    chosen = []
    for _ in range(3):
        committed = await store.commit_pick(Pick("b", START_MS, contenders=contenders))
        assert isinstance(committed, Committed)
        chosen.append(committed.agent_id)
    assert chosen == ["b", "b", "b"]


async def test_ties_take_turns_by_the_sequence_once_the_choice_ranks_worse(
    replica: Replica,
) -> None:
    """Equal contenders ranked below the pick's own agent are committed in turn by the sequence."""
    store = replica()
    await registered(store, ("a", 0), ("b", 0), ("c", 0), ("slow", 0))
    contenders = (Contender("slow", tier=1.0), *(Contender(i) for i in "abc"))
    chosen = []
    for _ in range(4):
        committed = await store.commit_pick(Pick("slow", START_MS, contenders=contenders))
        assert isinstance(committed, Committed)
        chosen.append(committed.agent_id)
    assert chosen == ["a", "b", "c", "a"]


# Pending picks across replicas.

HOLD_UNTIL = START_MS + 1_000


def held(agent_id: str, *contenders: Contender) -> Pick:
    """A pick without acquire, pending on its agent until HOLD_UNTIL."""
    return Pick(agent_id, START_MS, contenders=contenders, hold_until_ms=HOLD_UNTIL)


async def in_flight(store: RedisStore, agent_id: str) -> tuple[int, int]:
    """The agent's (active, pending) as a pick through ``store`` reads them."""
    record = (await store.pick_state("")).stats[agent_id]
    return record.active, record.pending


async def test_picks_through_two_replicas_are_both_pending(replica: Replica) -> None:
    """Replicas see each other's pending picks; a start or sweep through one ends them for all."""
    first, second = replica(), replica()
    await registered(first, ("a", 0))
    assert await first.commit_pick(held("a")) == Committed("a")
    assert await second.commit_pick(held("a")) == Committed("a")
    assert await in_flight(first, "a") == await in_flight(second, "a") == (0, 2)

    await started(second, "a", START_MS + 10)  # confirms the one picked through first
    assert await in_flight(first, "a") == (1, 1)
    await first.expire_leases(0, HOLD_UNTIL, Feedback())  # ends the one through second
    assert await in_flight(second, "a") == (1, 0)


async def test_a_pick_pending_through_another_replica_moves_the_rerank(replica: Replica) -> None:
    """Two picks without acquire of one idle agent, on one snapshot, are spread at commit.

    Ranked by load (per_request 1), in an order that makes a tie go to "a": only its
    pending pick sends this one to "b".
    """
    first, second = replica(), replica()
    await registered(first, ("a", 0), ("b", 0))
    await first.pick_state("")
    await second.pick_state("")
    by_load = (Contender("b", per_request=1.0), Contender("a", per_request=1.0))

    assert await first.commit_pick(held("a")) == Committed("a")
    assert await second.commit_pick(held("a", *by_load)) == Committed("b")


async def test_a_contender_full_of_pending_picks_is_passed_over(replica: Replica) -> None:
    """A contender whose pending picks reached max_connections since the snapshot is skipped."""
    first, second = replica(), replica()
    await registered(first, ("a", 1), ("b", 1))
    await first.commit_pick(held("a"))
    both = (Contender("a", 1), Contender("b", 1))
    assert await second.commit_pick(pick("a", *both)) == Committed("b", "test-1")
    assert await second.commit_pick(pick("a", *both)) is None


# Bookkeeping in Lua, estimates in Python.


def test_every_field_is_bookkeeping_or_an_estimate() -> None:
    """The Lua bookkeeping and the estimates written back partition AgentStats."""
    names = [f.name for f in fields(AgentStats)]
    assert sorted(BOOKKEEPING + ESTIMATES) == sorted(names)
    assert not set(BOOKKEEPING) & set(ESTIMATES)


@pytest.mark.parametrize("failed", [False, True])
def test_folds_never_touch_the_bookkeeping(failed: bool) -> None:
    """fold_end and fold_expiry change no bookkeeping field, so the write loses none."""
    booked = AgentStats(
        active=2, total_requests=9, joined_ms=5, busy_total_ms=123.5, activity_at_ms=START_MS
    )
    for after in (
        fold_end(booked, True, 50.0, failed, START_MS, Feedback(), 0, 4),
        fold_end(booked, False, 50.0, failed, START_MS, Feedback(), 0, 4),
        fold_expiry(booked),
    ):
        assert {n: getattr(after, n) for n in BOOKKEEPING} == {
            n: getattr(booked, n) for n in BOOKKEEPING
        }


@pytest.mark.parametrize("seed", range(3))
async def test_lua_bookkeeping_equals_feedback_open_and_close(replica: Replica, seed: int) -> None:
    """Every open, end and expiry books what feedback.open_lease/close_lease say, lessons too.

    Records of every kind come up: idle and busy, several leases open, a clock that
    goes back (another replica's), starts and ends in the same millisecond. Each end
    teaches what model_cost.lesson said when its lease opened (nothing behind full slots).
    """
    store = replica()
    rules = Feedback(ejection=Ejection(consecutive_failures=0))
    await registered(store, ("a", 0), ("b", 0))
    rng = random.Random(seed)
    now = START_MS
    held: list[tuple[str, str, str | None]] = []
    for _ in range(60):
        now += rng.choice([0, 0, 1, 3, 250, 1_000, -40])
        agent_id = rng.choice("ab")
        before = (await store.stats())[agent_id]
        roll = rng.random()
        if roll < 0.45 or not held:
            request_id = await started(store, agent_id, now)
            held.append((agent_id, request_id, lesson(before, "")))
            assert (await store.stats())[agent_id] == open_lease(before, now)
        elif roll < 0.9:
            index = rng.randrange(len(held))
            agent_id, request_id, taught = held.pop(index)
            overtook = sum(entry[0] == agent_id for entry in held[:index])
            before = (await store.stats())[agent_id]
            failed = rng.random() < 0.3
            latency = rng.choice([1.0, 12.5, 300.0])
            await store.end_request(RequestEnd(agent_id, request_id, latency, failed, now, rules))
            booked = close_lease(before, now)
            expected = fold_end(booked, True, latency, failed, now, rules, 0, 2, taught, overtook)
            assert (await store.stats())[agent_id] == expected
        else:
            stats = dict(await store.stats())
            expired = await store.expire_leases(now + 1, now, rules)
            for lease in expired:
                stats[lease.agent_id] = fold_expiry(close_lease(stats[lease.agent_id], now))
            assert dict(await store.stats()) == stats
            gone = {lease.request_id for lease in expired}
            held = [entry for entry in held if entry[1] not in gone]


async def test_concurrent_ends_fold_every_sample_once(replica: Replica) -> None:
    """Ends of one agent through three replicas at once: each estimate write lands once.

    Their estimate writes conflict (each computed from the record before the others'),
    are computed again from the record as it is then, and every sample counts.
    """
    stores = [replica() for _ in range(3)]
    await registered(stores[0], ("a", 0))
    ids = [await started(stores[0], "a", START_MS) for _ in range(12)]
    rules = Feedback(ejection=Ejection(consecutive_failures=0))
    ends = [
        stores[n % 3].end_request(
            RequestEnd("a", request_id, 10.0 * (n + 1), n % 4 == 0, START_MS + 100, rules)
        )
        for n, request_id in enumerate(ids)
    ]
    await asyncio.gather(*ends)
    stats = (await stores[1].stats())["a"]
    assert (stats.active, stats.total_requests, stats.failed_requests) == (0, 12, 3)
    assert stats.completions == 9
    assert stats.cost_at_ms == START_MS + 100
    assert stats.avg_latency_ms is not None


async def test_concurrent_ejections_never_exceed_the_share(replica: Replica) -> None:
    """Failures on four agents through four replicas at once eject two (max_share 0.5).

    Each fold saw nobody ejected; the write that ejects re-checks that count, so the
    later ones are computed again with the ejections made meanwhile.
    """
    stores = [replica() for _ in range(4)]
    await registered(stores[0], ("a", 0), ("b", 0), ("c", 0), ("d", 0))
    rules = Feedback(ejection=Ejection(consecutive_failures=1, max_share=0.5))
    await asyncio.gather(
        *(
            store.end_request(RequestEnd(agent_id, "", 5.0, True, START_MS, rules))
            for store, agent_id in zip(stores, "abcd", strict=True)
        )
    )
    ejections = (await stores[0].pick_state("")).ejections
    assert len(ejections) == 2
    stats = await stores[0].stats()
    assert {i for i, s in stats.items() if s.ejected_until_ms > START_MS} == set(ejections)


async def test_an_end_whose_estimate_write_fails_is_still_closed_once(
    replica: Replica, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that loses Redis between the two steps: the lease is closed, the sample lost.

    The end reports success (it must not be retried: the lease closed), a repeat is
    ALREADY_ENDED, and the estimates are as before; the next end folds normally.
    """
    store = replica()
    await registered(store, ("a", 0))
    first = await started(store, "a", START_MS)
    second = await started(store, "a", START_MS)
    script = store._scripts["write_estimates"]

    async def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setitem(store._scripts, "write_estimates", unreachable)
    done = await store.end_request(RequestEnd("a", first, 80.0, False, START_MS + 5, Feedback()))
    assert done.outcome.value == "closed"
    stats = (await store.stats())["a"]
    assert (stats.active, stats.avg_latency_ms, stats.completions) == (1, None, 0)
    assert (await store.counters()).latency_samples == 1  # counted with the close
    again = await store.end_request(RequestEnd("a", first, 80.0, False, START_MS + 6, Feedback()))
    assert again.outcome.value == "already-ended"

    monkeypatch.setitem(store._scripts, "write_estimates", script)
    await store.end_request(RequestEnd("a", second, 40.0, False, START_MS + 10, Feedback()))
    stats = (await store.stats())["a"]
    assert (stats.active, stats.avg_latency_ms, stats.completions) == (0, 40.0, 1)
    # The lost completion's busy time went to the next one.
    assert (stats.cap_busy_ms, stats.busy_total_ms) == (10.0, 10.0)


async def test_records_written_before_the_capacity_fields_read_as_zero(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A record of an older release (13 fields) reads with the new fields at 0, and books on."""
    store = replica()
    old = f"2 150 {START_MS} 7 1 180 {START_MS} 0 0 0 {START_MS} {START_MS} 1"
    await raw.hset(f"{store.prefix}:stats", "a", old)
    stats = (await store.stats())["a"]
    assert stats == replace(
        AgentStats(),
        active=2,
        avg_latency_ms=150.0,
        last_request_at_ms=START_MS,
        total_requests=7,
        failed_requests=1,
        cost_ms=180.0,
        cost_at_ms=START_MS,
        joined_ms=START_MS,
    )
    await started(store, "a", START_MS + 10)
    assert (await store.stats())["a"] == open_lease(stats, START_MS + 10)


async def test_records_written_before_the_model_cost_field_read_as_none(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A record of the release before model cost (21 fields) reads with none, and learns on.

    Bookkeeping carries the model-cost field through as it is; only an estimate write
    changes it, and every record written since has all 24 fields (the slot fields,
    learning and no evidence, last).
    """
    store = replica()
    await store.put_agent(agent("a"), START_MS)

    async def fields() -> list[str]:
        return str(await raw.hget(f"{store.prefix}:stats", "a")).split(" ")

    current = await fields()
    assert (len(current), current[21:]) == (24, ["-", "1", "-"])
    await raw.hset(f"{store.prefix}:stats", "a", " ".join(current[:21]))
    assert (await store.stats())["a"] == AgentStats(joined_ms=START_MS)
    request_id = str(await store.open_lease("a", START_MS, model="m"))
    assert (await fields())[21:] == ["-", "1", "-"]
    await store.end_request(RequestEnd("a", request_id, 20.0, False, START_MS + 20, Feedback()))
    learned = await fields()
    assert (await store.stats())["a"].model_latency == (("m", math.log(20.0), 1, 1.0),)
    await started(store, "a", START_MS + 30)
    assert (await fields())[21] == learned[21] != "-"


async def test_model_cost_figures_keep_any_model_name_in_one_field(replica: Replica) -> None:
    """Model names with spaces, separators, percent signs and non-ASCII read back exactly."""
    store, other = replica(), replica()
    await store.put_agent(agent("a"), START_MS)
    names = ["a b", "x,y;z", "100% -", "-", "模型:7b", "m\t\n"]
    for n, name in enumerate(names * 3):
        request_id = await store.open_lease("a", START_MS + n, model=name)
        latency = 10.0 * (n + 1)
        end = RequestEnd("a", str(request_id), latency, False, START_MS + n, Feedback())
        await store.end_request(end)
    read = (await other.stats())["a"]
    assert [entry[0] for entry in read.model_latency] == names
    assert all(samples == 3 for _, _, samples, _ in read.model_latency)
    assert read == (await store.stats())["a"]


async def test_lease_records_keep_the_model_beside_the_start_time(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A lease with no model is stored as before (older records read); a model is percent-encoded.

    Its field holds no space, so the agent id after it may hold anything, spaces too. A
    lease opened behind the agent's full slots keeps "*", no lesson (model_cost.lesson).
    """
    store = replica()
    plain = await store.open_lease("a b", START_MS)
    modelled = await store.open_lease("c d", START_MS + 1, model="x y,%")
    waiting = await store.open_lease("c d", START_MS + 2, model="x y,%")
    stored = await raw.hgetall(f"{store.prefix}:leases")
    assert stored == {
        plain: f"{START_MS} a b",
        modelled: f"{START_MS + 1},x%20y%2C%25 c d",
        waiting: f"{START_MS + 2},* c d",
    }
    assert list((await store.leases()).values()) == [
        Lease(str(plain), "a b", START_MS),
        Lease(str(modelled), "c d", START_MS + 1, "x y,%"),
        Lease(str(waiting), "c d", START_MS + 2, None),
    ]


def test_the_models_of_leases_opened_here_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """What an end guesses a lease's model from: oldest first, forgotten when idle or past LIMIT."""
    monkeypatch.setattr(OpenedHere, "LIMIT", 3)
    opened = OpenedHere()
    opened.add("a", "r1", "m1")
    opened.add("a", "r2", "m2")
    opened.add("b", "r3", "")
    assert [opened.model("a", ""), opened.model("a", "r2"), opened.model("a", "r9")] == [
        "m1",
        "m2",
        "",
    ]
    opened.discard("a", "r1")
    opened.discard("a", "r9")  # not held: nothing to forget
    assert opened.model("a", "") == "m2"
    opened.idle("a")
    assert opened.model("a", "r2") == ""
    opened.add("c", "r4", "m4")
    opened.add("c", "r5", "m5")
    opened.add("c", "r6", "m6")  # the fourth held: all forgotten, then this one kept
    assert [opened.model("b", "r3"), opened.model("c", "r4"), opened.model("c", "")] == [
        "",
        "",
        "m6",
    ]


async def test_an_agent_written_before_parallel_slots_reads_as_undeclared(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """A registry entry of an older release (ten fields) reads back with parallel_slots 0."""
    store = replica()
    old = '["a","h.local",11434,["m"],"A10",24.0,16,64.0,{},2]'
    await raw.hset(f"{store.prefix}:agents", "a", old)
    await raw.zadd(f"{store.prefix}:order", {"a": 1})
    await raw.incr(f"{store.prefix}:config")
    [read] = (await store.agents()).values()
    assert (read.id, read.max_connections, read.parallel_slots) == ("a", 2, 0)


async def test_an_undeclared_slot_count_is_left_out_for_older_replicas(
    replica: Replica, raw: redis.asyncio.Redis
) -> None:
    """An agent without parallel_slots is stored in the older ten fields; a declared one adds it."""
    store = replica()
    await store.put_agent(agent("a"), START_MS)
    await store.put_agent(agent("b", parallel_slots=6), START_MS)
    stored = await raw.hgetall(f"{store.prefix}:agents")
    assert (len(json.loads(stored["a"])), json.loads(stored["b"])[10:]) == (10, [6])


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

    committed = [r for r in results if isinstance(r, Committed)]
    assert len(committed) == len(results)
    agents = {r.agent_id for r in committed}
    assert len(agents) == 1
    assert sum(not r.sticky for r in committed) == 1
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


async def test_set_weights_answers_with_the_configuration_it_leaves(replica: Replica) -> None:
    """set_weights returns the registry and overrides after it, whether the cache was current.

    With the cache current the replica applies the overrides to its copy; after another
    replica's change it takes the whole configuration from the same reply. Either way
    its later reads agree with a fresh replica's.
    """
    mine, theirs = replica(), replica()
    await registered(theirs, ("a", 0), ("b", 0))
    await mine.agents()  # cached

    applied = await mine.set_weights({"a": 2.0}, only_registered=True)
    assert isinstance(applied, Configuration)
    assert (list(applied.agents), dict(applied.weights)) == (["a", "b"], {"a": 2.0})

    await registered(theirs, ("c", 0))
    await theirs.set_weights({"b": 0.5})
    applied = await mine.set_weights({"c": 3.0}, only_registered=True)
    assert isinstance(applied, Configuration)
    assert list(applied.agents) == ["a", "b", "c"]
    assert dict(applied.weights) == {"a": 2.0, "b": 0.5, "c": 3.0}

    fresh = replica()
    assert dict(await mine.weights()) == dict(await fresh.weights())
    assert list(await mine.agents()) == list(await fresh.agents())


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
    assert state.shared

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

    await started(writer, "a", START_MS)

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
    assert await started(two, "x", START_MS) == "test-1"


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
        old = await store.commit_pick(Pick("a", START_MS, acquire=True))
        assert isinstance(old, Committed)
        old_id = old.request_id
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
        assert isinstance(committed, Committed)
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
        await started(store, "a", START_MS)
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
