"""The Store contract, run over the memory store and the Redis store alike.

Every test here holds both stores to the same behaviour through the protocol only: the
registry, weights and strategy, commits with and without a lease, session bindings,
request ids and every EndOutcome, expiry, forgetting idle history, counters and the
state version. Selections read ``pick_state`` before ``commit_pick``, as the balancer does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from lb_service import model_cost
from lb_service.capacity import CAPACITY_WINDOW
from lb_service.model import StrategyName
from lb_service.store.base import (
    AgentStats,
    Binding,
    Committed,
    Configuration,
    Counters,
    EndOutcome,
    EndResult,
    Lease,
    Limit,
    Pick,
    RequestEnd,
    UnknownAgent,
)
from lb_service.store.feedback import Ejection, Feedback
from lb_service.store.roles import Store
from tests.factories import FEEDBACK, START_MS, agent
from tests.store.conftest import EPOCH, MakeStore, started

#: Only a guard against a hung wait; no assertion depends on how long anything takes.
HANG_GUARD_S = 5.0
T1 = START_MS + 60_000


def ended(
    agent_id: str,
    request_id: str = "",
    latency_ms: float = 100.0,
    *,
    failed: bool = False,
    now_ms: int = START_MS,
    smoothing: float = 0.5,
) -> RequestEnd:
    """A request end with test defaults."""
    return RequestEnd(
        agent_id, request_id, latency_ms, failed, now_ms, Feedback(smoothing=smoothing)
    )


async def put(store: Store, *ids: str) -> None:
    """Register default agents with the given ids, in order."""
    for agent_id in ids:
        await store.put_agent(agent(agent_id), START_MS)


async def select(store: Store, pick: Pick) -> Committed:
    """Read the snapshot and commit, as a selection does; the commit must succeed."""
    state = await store.pick_state(pick.session_id)
    committed = await store.commit_pick(pick._replace(seen=state.binding))
    assert isinstance(committed, Committed), committed
    return committed


async def lease(store: Store, pick: Pick) -> str:
    """Commit an acquiring pick and return its request id."""
    return (await select(store, pick)).request_id


async def state(store: Store) -> tuple[dict[str, AgentStats], Counters, int]:
    """A copy of everything an end_request may change: stats, counters and version."""
    return dict(await store.stats()), await store.counters(), store.version()


async def binding(store: Store, session_id: str) -> Binding | None:
    """The session's current binding, as a selection would read it."""
    return (await store.pick_state(session_id)).binding


async def yield_to_loop() -> None:
    """Let other tasks run up to their next await (a zero-delay yield, not a timed sleep)."""
    for _ in range(3):
        await asyncio.sleep(0)


# Registry, weights and strategy.


async def test_agents_are_listed_in_registration_order(store: Store) -> None:
    """agents() returns every registered agent by id, in the order they were put."""
    await put(store, "c", "a", "b")
    assert list(await store.agents()) == ["c", "a", "b"]
    assert list((await store.pick_state("")).agents) == ["c", "a", "b"]


async def test_reput_replaces_agent_keeping_position_stats_and_weight(store: Store) -> None:
    """Re-putting an agent swaps its record but keeps its position, stats and weight override.

    Its slot count follows the new record (a CPU host becomes a GPU declared with 4
    slots), the busy time so far booked at the old count.
    """
    await put(store, "a", "b", "c")
    await store.set_weights({"b": 7.0})
    await started(store, "b", START_MS)
    replacement = agent("b", vram_gb=24.0, host="new-host", parallel_slots=4)

    await store.put_agent(replacement, START_MS + 5)

    agents = await store.agents()
    assert list(agents) == ["a", "b", "c"]
    assert agents["b"] == replacement
    assert (await store.stats())["b"] == AgentStats(
        active=1,
        last_request_at_ms=START_MS,
        total_requests=1,
        joined_ms=START_MS,
        activity_at_ms=START_MS + 5,
        busy_total_ms=5.0,
        slots=4,
        learn_slots=False,
    )
    assert dict(await store.weights()) == {"b": 7.0}


async def test_agent_fields_round_trip(store: Store) -> None:
    """An agent read back equals the one put, hardware, models, metadata and slots included."""
    gpu = agent("gpu-1", vram_gb=24.5, gpu="RTX 4090", models=("llama3:8b", "qwen:7b"))
    gpu = replace(
        gpu, metadata={"zone": "eu-1", "ünï": "cödé"}, max_connections=4, parallel_slots=8
    )
    await store.put_agent(gpu, START_MS)
    assert (await store.agents())["gpu-1"] == gpu


async def test_put_agent_stamps_the_declared_slots_and_a_reput_changes_them(store: Store) -> None:
    """The record counts declared parallel_slots; a re-put without them learns them again."""
    await store.put_agent(agent("a", max_connections=4, parallel_slots=8), START_MS)
    stats = (await store.stats())["a"]
    assert (stats.slots, stats.learn_slots) == (8, False)
    await store.put_agent(agent("a", max_connections=4, parallel_slots=2), START_MS + 5)
    stats = (await store.stats())["a"]
    assert (stats.slots, stats.learn_slots) == (2, False)
    # Withdrawn, the declaration stands until a completion shows what the agent serves.
    await store.put_agent(agent("a", max_connections=4), START_MS + 10)
    stats = (await store.stats())["a"]
    assert (stats.slots, stats.learn_slots) == (2, True)
    request_id = await started(store, "a", START_MS + 20)
    await store.end_request(ended("a", request_id, now_ms=START_MS + 30))
    assert (await store.stats())["a"].slots == 1


async def test_ends_that_overtake_older_leases_teach_the_slot_count(store: Store) -> None:
    """An end with two older leases of its agent still open shows three slots, unless declared."""
    await put(store, "a")
    await store.put_agent(agent("b", parallel_slots=2), START_MS)
    for agent_id in ("a", "b"):
        first, _, third = [await started(store, agent_id, START_MS + n) for n in range(3)]
        await store.end_request(ended(agent_id, third, now_ms=START_MS + 10))
        assert (await store.stats())[agent_id].overtaken_at == (1, 1)
        await store.end_request(ended(agent_id, first, now_ms=START_MS + 20))
    stats = await store.stats()
    assert (stats["a"].slots, stats["b"].slots) == (3, 2)
    assert stats["a"].overtaken_at == stats["b"].overtaken_at == (1, 1)


async def test_put_agent_starts_empty_stats(store: Store) -> None:
    """A newly put agent gets zeroed stats with no latency sample, stamped with its join time."""
    await put(store, "a")
    assert (await store.stats())["a"] == AgentStats(joined_ms=START_MS)


async def test_reput_keeps_the_join_time(store: Store) -> None:
    """Only a registration of an agent not registered until then stamps joined_ms."""
    await put(store, "a")
    await store.put_agent(agent("a", vram_gb=8.0), START_MS + 10)
    assert (await store.stats())["a"].joined_ms == START_MS
    await store.delete_agent("a")
    await store.put_agent(agent("a"), START_MS + 20)
    assert (await store.stats())["a"].joined_ms == START_MS + 20


async def test_delete_agent_drops_it_and_its_weight_override(store: Store) -> None:
    """Deleting an agent removes it from the registry and removes only its weight override."""
    await put(store, "a", "b")
    await store.set_weights({"a": 2.0, "b": 3.0})

    assert await store.delete_agent("a") is True

    assert list(await store.agents()) == ["b"]
    assert dict(await store.weights()) == {"b": 3.0}


async def test_deleted_then_reput_agent_goes_last_without_its_override(store: Store) -> None:
    """An agent put again after deletion is last in order and has no weight override."""
    await put(store, "a", "b")
    await store.set_weights({"a": 2.0})
    await store.delete_agent("a")
    await put(store, "a")
    assert dict(await store.weights()) == {}
    assert list(await store.agents()) == ["b", "a"]


async def test_delete_unknown_agent_returns_false(store: Store) -> None:
    """Deleting an id that is not registered (or no longer is) returns False and keeps the rest."""
    await put(store, "a")
    assert await store.delete_agent("ghost") is False
    assert await store.delete_agent("a") is True
    assert await store.delete_agent("a") is False
    assert dict(await store.agents()) == {}


async def test_set_weights_merges_and_clear_weights_drops(store: Store) -> None:
    """set_weights adds and replaces the given overrides; clear_weights drops only those named."""
    await store.set_weights({"a": 1.0, "b": 2.0})
    await store.set_weights({"b": 0.0, "c": 4.25})
    assert dict(await store.weights()) == {"a": 1.0, "b": 0.0, "c": 4.25}
    await store.clear_weights(["a", "ghost"])
    assert dict(await store.weights()) == {"b": 0.0, "c": 4.25}
    assert dict((await store.pick_state("")).weights) == {"b": 0.0, "c": 4.25}


async def test_set_strategy_returns_the_previous_one(store: Store) -> None:
    """set_strategy switches the strategy and returns the one it replaced."""
    assert await store.strategy() is StrategyName.LEAST_CONNECTIONS
    assert await store.set_strategy(StrategyName.WEIGHTED) is StrategyName.LEAST_CONNECTIONS
    assert await store.strategy() is StrategyName.WEIGHTED
    assert (await store.pick_state("")).strategy is StrategyName.WEIGHTED


# Selection: commit_pick.


async def test_commit_pick_counts_selection_and_bumps_sequence(store: Store) -> None:
    """Each commit adds one selection for its agent and advances the pick sequence by one."""
    await put(store, "a", "b")
    assert (await store.pick_state("")).sequence == 0

    for agent_id in ["a", "b", "a"]:
        await select(store, Pick(agent_id, START_MS))

    assert (await store.pick_state("")).sequence == 3
    counters = await store.counters()
    assert counters.total_selections == 3
    assert counters.selections_by_agent == {"a": 2, "b": 1}


async def test_commit_pick_without_acquire_opens_no_lease(store: Store) -> None:
    """A plain selection commits the agent without a request id and leaves its counts at 0."""
    await put(store, "a")
    assert await select(store, Pick("a", START_MS)) == Committed("a")
    assert (await store.stats())["a"] == AgentStats(joined_ms=START_MS)
    assert (await store.counters()).total_requests == 0
    assert dict(await store.leases()) == {}


async def test_commit_pick_with_acquire_opens_a_lease(store: Store) -> None:
    """An acquiring selection returns a fresh request id and counts an active request."""
    await put(store, "a")
    committed = await select(store, Pick("a", START_MS + 5, acquire=True))
    assert committed == Committed("a", f"{EPOCH}-1")
    assert (await store.stats())["a"] == AgentStats(
        active=1,
        last_request_at_ms=START_MS + 5,
        total_requests=1,
        joined_ms=START_MS,
        activity_at_ms=START_MS + 5,
    )
    assert dict(await store.leases()) == {"test-1": Lease("test-1", "a", START_MS + 5)}
    assert await store.end_request(ended("a", committed.request_id)) == EndResult(
        EndOutcome.CLOSED, agent_id="a"
    )


async def test_commit_pick_creates_stats_for_an_unregistered_candidate(store: Store) -> None:
    """Picking a caller-supplied candidate gives it a stats entry without registering it."""
    await select(store, Pick("cand", START_MS))
    assert (await store.stats())["cand"] == AgentStats()
    assert dict(await store.agents()) == {}
    assert (await store.pick_state("", ["cand", "other"])).stats == {"cand": AgentStats()}


# Pending picks (lb_service.store.pending).

HOLD_MS = 1_000


def held(agent_id: str, now_ms: int) -> Pick:
    """A pick without acquire, pending on its agent for HOLD_MS (as the balancer makes it)."""
    return Pick(agent_id, now_ms, hold_until_ms=now_ms + HOLD_MS)


async def pending(store: Store, now_ms: int | None = None) -> dict[str, int]:
    """Pending picks per agent, after a sweep at ``now_ms`` (None: no sweep); 0s left out.

    The three reads (stats, pick_state, overview) must agree.
    """
    if now_ms is not None:
        assert await store.expire_leases(0, now_ms, FEEDBACK) == []
    records = await store.stats()
    counts = {i: s.pending for i, s in records.items() if s.pending}
    picked = {
        i: s.pending
        for i, s in (await store.pick_state("", tuple(records))).stats.items()
        if s.pending
    }
    shown = {i: s.pending for i, s in (await store.overview()).stats.items() if s.pending}
    assert counts == picked == shown
    return counts


@pytest.mark.parametrize("ended_by", ["sweep", "commit", "start"])
async def test_a_pick_without_acquire_is_pending_until_its_hold_ends(
    store: Store, ended_by: str
) -> None:
    """It counts in flight on its agent, not as a lease; a sweep, pick or start ends it on time."""
    await put(store, "a", "b")
    assert await select(store, held("a", START_MS)) == Committed("a")
    record = (await store.stats())["a"]
    assert (record.active, record.pending, record.in_flight) == (0, 1, 1)
    assert await store.lease_count() == 0
    assert await pending(store, START_MS + HOLD_MS - 1) == {"a": 1}
    due = START_MS + HOLD_MS
    if ended_by == "sweep":
        assert await pending(store, due) == {}
    elif ended_by == "commit":
        await select(store, Pick("b", due))
        assert await pending(store) == {}
    else:
        await started(store, "b", due)
        assert await pending(store) == {}
        assert (await store.stats())["b"].in_flight == 1


async def test_a_pick_with_acquire_or_no_hold_is_not_pending(store: Store) -> None:
    """A lease is counted as active only; a hold that ends by the pick's own time holds nothing."""
    await put(store, "a")
    await select(store, held("a", START_MS)._replace(acquire=True))
    await select(store, Pick("a", START_MS, hold_until_ms=START_MS))
    assert await pending(store) == {}
    assert (await store.stats())["a"].in_flight == 1


async def test_a_start_confirms_the_agents_oldest_pending_pick(store: Store) -> None:
    """A start turns the agent's oldest pending pick into its lease; a later one keeps its hold."""
    await put(store, "a", "b")
    await select(store, held("a", START_MS))
    await select(store, held("b", START_MS + 50))
    await select(store, held("a", START_MS + 100))
    await started(store, "a", START_MS + 200)
    record = (await store.stats())["a"]
    assert (record.active, record.pending, record.in_flight) == (1, 1, 2)
    assert await pending(store) == {"a": 1, "b": 1}
    # Past the first pick's hold: "a" still holds its second (the first was confirmed).
    assert await pending(store, START_MS + HOLD_MS + 60) == {"a": 1}
    assert await pending(store, START_MS + HOLD_MS + 100) == {}
    assert (await store.stats())["a"].in_flight == 1


async def test_a_confirmed_pick_is_not_expired_again(store: Store) -> None:
    """When a confirmed pick's hold ends, the agent's later pending pick is left counted."""
    await put(store, "a")
    await select(store, held("a", START_MS))
    await started(store, "a", START_MS + 10)
    await select(store, held("a", START_MS + 500))
    assert await pending(store, START_MS + HOLD_MS) == {"a": 1}
    assert await pending(store, START_MS + 500 + HOLD_MS) == {}
    record = (await store.stats())["a"]
    assert (record.active, record.in_flight) == (1, 1)


async def test_a_start_without_a_pending_pick_confirms_nothing(store: Store) -> None:
    """Starts beyond the agent's pending picks open leases and leave other agents' picks."""
    await put(store, "a", "b")
    await select(store, held("b", START_MS))
    await started(store, "a", START_MS + 1)
    await started(store, "a", START_MS + 2)
    assert await pending(store) == {"b": 1}
    assert (await store.stats())["a"].in_flight == 2


async def test_forgetting_an_idle_id_drops_its_pending_picks(store: Store) -> None:
    """A forgotten candidate's old holds do not end the picks it gets afterwards."""
    await select(store, held("x", START_MS))
    assert await store.forget_idle(START_MS + 1, keep=0) == 1
    await select(store, held("x", START_MS + 500))
    assert await pending(store, START_MS + HOLD_MS + 100) == {"x": 1}
    assert await pending(store, START_MS + 500 + HOLD_MS) == {}


@pytest.mark.parametrize(
    ("existing", "pick", "expected"),
    [
        (None, Pick("a", T1, session_id="s", bind=True), Binding("a", T1)),
        (None, Pick("a", T1, session_id="s", bind=False), None),
        (Binding("a", START_MS), Pick("b", T1, session_id="s", bind=True), Binding("b", T1)),
        (Binding("a", START_MS), Pick("a", T1, session_id="s", bind=True), Binding("a", T1)),
        (Binding("a", START_MS), Pick("a", T1, session_id="s", bind=False), Binding("a", T1)),
        (
            Binding("a", START_MS),
            Pick("b", T1, session_id="s", bind=False),
            Binding("a", START_MS),
        ),
        (
            Binding("a", START_MS),
            Pick("a", T1, acquire=True, session_id="s", bind=False),
            Binding("a", T1),
        ),
    ],
    ids=[
        "bind-new",
        "no-bind-no-binding",
        "rebind-to-other",
        "rebind-same",
        "refresh-same-agent",
        "spill-over-leaves-binding",
        "refresh-while-acquiring",
    ],
)
async def test_commit_pick_session_binding(
    store: Store, existing: Binding | None, pick: Pick, expected: Binding | None
) -> None:
    """bind=True (re)binds the binding the snapshot showed; bind=False only refreshes its agent."""
    await put(store, "a", "b")
    if existing is not None:
        await select(
            store, Pick(existing.agent_id, existing.last_used_ms, session_id="s", bind=True)
        )
    await select(store, pick)
    assert await binding(store, "s") == expected


async def test_commit_pick_without_session_id_binds_nothing(store: Store) -> None:
    """bind=True with an empty session id stores no binding at all."""
    await put(store, "a")
    await select(store, Pick("a", START_MS, session_id="", bind=True))
    assert await store.session_count() == 0
    assert await store.expire_sessions(START_MS + 10**9) == 0


async def test_bindings_are_per_session(store: Store) -> None:
    """Binding one session leaves other sessions unbound."""
    await put(store, "a")
    await select(store, Pick("a", START_MS, session_id="s1", bind=True))
    assert await binding(store, "s1") == Binding("a", START_MS)
    assert await binding(store, "s2") is None
    assert await store.session_count() == 1


async def test_pick_state_counts_sessions_and_leases(store: Store) -> None:
    """pick_state carries the binding and lease counts the limits are checked against."""
    await put(store, "a")
    await select(store, Pick("a", START_MS, acquire=True, session_id="s1", bind=True))
    await select(store, Pick("a", START_MS, session_id="s2", bind=True))
    snapshot = await store.pick_state("")
    assert (snapshot.session_count, snapshot.lease_count) == (2, 1)


# Leases and request ids.


async def test_request_ids_count_up_across_open_lease_and_acquire(store: Store) -> None:
    """open_lease and acquiring picks share one counter: ids are '<epoch>-1', '<epoch>-2', ..."""
    await put(store, "a", "b")
    ids = [
        await started(store, "a", START_MS),
        await lease(store, Pick("b", START_MS, acquire=True)),
        await started(store, "b", START_MS),
    ]
    assert ids == ["test-1", "test-2", "test-3"]
    assert (await store.counters()).total_requests == 3


async def test_default_epoch_is_random_hex(new_store: MakeStore) -> None:
    """Without a fixed epoch, request ids are '<hex epoch>-<n>'."""
    store = new_store(epoch=None, fresh_prefix=True)
    epoch, _, number = (await started(store, "a", START_MS)).rpartition("-")
    assert number == "1"
    assert epoch
    assert all(ch in "0123456789abcdef" for ch in epoch)


async def test_open_lease_counts_an_active_request(store: Store) -> None:
    """Each open lease adds one active and one total request and stamps the start time."""
    await put(store, "a")
    await started(store, "a", START_MS)
    await started(store, "a", START_MS + 10)
    assert (await store.stats())["a"] == AgentStats(
        active=2,
        last_request_at_ms=START_MS + 10,
        total_requests=2,
        joined_ms=START_MS,
        # Busy since the first opened: 10 ms until the second.
        busy_total_ms=10.0,
        activity_at_ms=START_MS + 10,
    )


async def test_leases_lists_open_leases_in_start_order(store: Store) -> None:
    """leases() holds exactly the open leases by request id, oldest first, with their lessons.

    The third opens on "a" behind its one (learned) slot, taken: its end teaches no model.
    """
    await put(store, "a", "b")
    first = await started(store, "a", START_MS)
    second = await lease(store, Pick("b", START_MS + 1, acquire=True))
    third = await started(store, "a", START_MS + 2)
    await store.end_request(ended("a", first))
    leases = await store.leases()
    assert list(leases.items()) == [
        (second, Lease(second, "b", START_MS + 1)),
        (third, Lease(third, "a", START_MS + 2, None)),
    ]
    await store.expire_leases(START_MS + 3, START_MS + 3, FEEDBACK)
    assert dict(await store.leases()) == {}


async def test_lease_count_follows_opens_ends_and_expiry(store: Store) -> None:
    """lease_count() is the number of open leases, as pick_state's lease_count says too."""
    await put(store, "a")
    assert await store.lease_count() == 0
    first = await started(store, "a", START_MS)
    await lease(store, Pick("a", START_MS + 1, acquire=True))
    await started(store, "a", START_MS + 2)
    assert await store.lease_count() == 3 == (await store.pick_state("")).lease_count
    await store.end_request(ended("a", first))
    assert await store.lease_count() == 2
    await store.expire_leases(START_MS + 3, START_MS + 3, FEEDBACK)
    assert await store.lease_count() == 0


# Request ends.


async def test_end_closes_the_lease_and_records_the_sample(store: Store) -> None:
    """Ending an open lease returns CLOSED, frees the slot and records latency and time."""
    await put(store, "a")
    request_id = await started(store, "a", START_MS)

    result = await store.end_request(ended("a", request_id, 250.0, now_ms=START_MS + 250))

    assert result == EndResult(EndOutcome.CLOSED, agent_id="a")
    assert (await store.stats())["a"] == AgentStats(
        active=0,
        avg_latency_ms=250.0,
        last_request_at_ms=START_MS + 250,
        total_requests=1,
        cost_ms=250.0,
        cost_at_ms=START_MS + 250,
        joined_ms=START_MS,
        busy_total_ms=250.0,
        activity_at_ms=START_MS + 250,
        # A success that closed a lease: one completion of the 250 ms it was busy.
        completions=1,
        cap_done=1.0,
        cap_busy_ms=250.0,
        cap_mark_ms=250.0,
        # The lease named no model: the sample is of the agent's "" model (model_cost).
        model_latency=(("", math.log(250.0), 1, 1.0),),
    )
    counters = await store.counters()
    assert (counters.latency_sum_ms, counters.latency_samples) == (250.0, 1)


async def test_end_with_request_id_and_no_agent_id_uses_the_lease_agent(store: Store) -> None:
    """An end naming only the request id closes that lease on its own agent."""
    await put(store, "a")
    request_id = await started(store, "a", START_MS)
    assert await store.end_request(ended("", request_id, 40.0)) == EndResult(
        EndOutcome.CLOSED, agent_id="a"
    )
    stats = await store.stats()
    assert stats["a"].active == 0
    assert stats["a"].avg_latency_ms == 40.0
    assert "" not in stats


async def test_repeated_end_is_already_ended_and_changes_nothing(store: Store) -> None:
    """A second end of the same id returns ALREADY_ENDED; counts, average and version stay."""
    await put(store, "a")
    request_id = await started(store, "a", START_MS)
    await store.end_request(ended("a", request_id, 100.0))
    before = await state(store)

    result = await store.end_request(ended("a", request_id, 900.0, failed=True, now_ms=T1))

    assert result == EndResult(EndOutcome.ALREADY_ENDED)
    assert await state(store) == before


@pytest.mark.parametrize(
    "request_id",
    [
        "other-1",  # another store's epoch
        "test-3",  # above the highest id issued
        "test-0",  # numbering starts at 1
        "test-",
        "-1",
        "test",
        "garbage",
        "test-abc",
        "test--1",
        "test-1-1",
        "test- 1",
        "test-+1",
        "test-1.0",
        "TEST-1",
        "test-01",  # leading zero: "test-1" was issued, "test-01" never was
        "test-002",
        "test-\u00b2",  # superscript two: str.isdigit() accepts it
        "test-\u0661",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
        "test-\uff12",  # FULLWIDTH DIGIT TWO: int() reads it as 2
        pytest.param("test-" + "9" * 21, id="test-21-digits"),
        pytest.param("test-" + "1" * 10_000, id="test-10000-digits"),
    ],
)
async def test_never_issued_id_is_unknown_and_changes_nothing(
    store: Store, request_id: str
) -> None:
    """An id never issued (or an issued one spelled otherwise) is unknown and changes nothing."""
    await put(store, "a")
    await started(store, "a", START_MS)
    done = await started(store, "a", START_MS)
    await store.end_request(ended("a", done))
    before = await state(store)

    result = await store.end_request(ended("a", request_id))

    assert result == EndResult(EndOutcome.UNKNOWN_REQUEST)
    assert await state(store) == before


async def test_issued_ids_compare_as_numbers_not_text(store: Store) -> None:
    """With ten ids issued, 'test-9' (shorter, bigger as text) and 'test-10' were both issued."""
    await put(store, "a")
    ids = [await started(store, "a", START_MS) for _ in range(10)]
    for request_id in ids:
        await store.end_request(ended("a", request_id))
    assert (await store.end_request(ended("a", "test-9"))).outcome is EndOutcome.ALREADY_ENDED
    assert (await store.end_request(ended("a", "test-10"))).outcome is EndOutcome.ALREADY_ENDED
    assert (await store.end_request(ended("a", "test-11"))).outcome is EndOutcome.UNKNOWN_REQUEST


async def test_end_for_the_wrong_agent_changes_nothing(store: Store) -> None:
    """Ending another agent's lease returns WRONG_AGENT with the owner and leaves it open."""
    await put(store, "a", "b")
    request_id = await started(store, "a", START_MS)
    before = await state(store)

    result = await store.end_request(ended("b", request_id, 75.0, failed=True))

    assert result == EndResult(EndOutcome.WRONG_AGENT, lease_agent_id="a")
    assert await state(store) == before
    assert await store.end_request(ended("a", request_id)) == EndResult(
        EndOutcome.CLOSED, agent_id="a"
    )


async def test_end_without_id_and_no_lease_records_latency_only(store: Store) -> None:
    """With no id and no open lease: NO_OPEN_LEASE, latency averaged, active stays 0."""
    await put(store, "a")

    result = await store.end_request(ended("a", "", 60.0, now_ms=START_MS + 1))

    assert result == EndResult(EndOutcome.NO_OPEN_LEASE, agent_id="a")
    assert (await store.stats())["a"] == AgentStats(
        active=0,
        avg_latency_ms=60.0,
        last_request_at_ms=START_MS + 1,
        cost_ms=60.0,
        cost_at_ms=START_MS + 1,
        joined_ms=START_MS,
        model_latency=(("", math.log(60.0), 1, 1.0),),
    )
    counters = await store.counters()
    assert (counters.latency_sum_ms, counters.latency_samples) == (60.0, 1)


async def test_end_without_id_closes_the_oldest_lease_of_that_agent(store: Store) -> None:
    """An end without an id closes the agent's oldest open lease, not another agent's."""
    await put(store, "a", "b")
    b_first = await started(store, "b", START_MS)
    first = await started(store, "a", START_MS + 1)
    second = await started(store, "a", START_MS + 2)

    assert await store.end_request(ended("a")) == EndResult(EndOutcome.CLOSED, agent_id="a")

    stats = await store.stats()
    assert (stats["a"].active, stats["b"].active) == (1, 1)
    assert await store.end_request(ended("a", first)) == EndResult(EndOutcome.ALREADY_ENDED)
    assert await store.end_request(ended("a", second)) == EndResult(EndOutcome.CLOSED, agent_id="a")
    assert await store.end_request(ended("b", b_first)) == EndResult(
        EndOutcome.CLOSED, agent_id="b"
    )


#: A model name as users write it: spaces, separators and a percent sign.
MODEL = "llama3.2:3b; chat 100%"


async def test_leases_keep_the_model_they_were_opened_for(store: Store) -> None:
    """A lease keeps open_lease's model or an acquiring pick's, listed and expired with it."""
    await store.put_agent(agent("a", parallel_slots=3), START_MS)  # a slot free for each
    chat = await store.open_lease("a", START_MS, model=MODEL)
    embed = await lease(store, Pick("a", START_MS + 1, acquire=True, model="embed v1,2"))
    plain = await started(store, "a", START_MS + 2)
    assert isinstance(chat, str)
    leases = [
        Lease(chat, "a", START_MS, MODEL),
        Lease(embed, "a", START_MS + 1, "embed v1,2"),
        Lease(plain, "a", START_MS + 2),
    ]
    assert list((await store.leases()).values()) == leases
    assert await store.expire_leases(START_MS + 3, START_MS + 3, FEEDBACK) == leases


async def test_an_end_folds_into_the_model_of_the_lease_it_closes(store: Store) -> None:
    """A success teaches the model its lease was opened for: by id, or the agent's oldest.

    A failure teaches no model, nor does an end that closes no lease (it has none).
    """
    await store.put_agent(agent("a", parallel_slots=3), START_MS)  # a slot free for each
    embed = await lease(store, Pick("a", START_MS, acquire=True, model="embed"))
    chat = await store.open_lease("a", START_MS + 1, model=MODEL)
    failing = await store.open_lease("a", START_MS + 2, model="other")
    assert isinstance(chat, str)
    assert isinstance(failing, str)

    await store.end_request(ended("a", chat, 400.0, now_ms=START_MS + 400))
    await store.end_request(ended("a", "", 50.0, now_ms=START_MS + 401))  # closes `embed`
    await store.end_request(ended("a", failing, 9.0, failed=True, now_ms=START_MS + 402))
    await store.end_request(ended("a", "", 70.0, now_ms=START_MS + 403))  # no lease open

    assert dict(await store.leases()) == {}
    assert await store.end_request(ended("a", embed)) == EndResult(EndOutcome.ALREADY_ENDED)
    taught = AgentStats()
    for model, latency in ((MODEL, 400.0), ("embed", 50.0), ("", 70.0)):
        taught = model_cost.observe(taught, model, latency)
    stats = (await store.stats())["a"]
    assert stats.model_latency == taught.model_latency
    assert [(name, samples) for name, _, samples, _ in stats.model_latency] == [
        (MODEL, 1),
        ("embed", 1),
        ("", 1),
    ]


async def test_a_lease_opened_behind_full_slots_teaches_no_model_cost(store: Store) -> None:
    """Its latency holds a wait for a slot: the capacity counts its end, the model's cost not."""
    await store.put_agent(agent("a", parallel_slots=1), START_MS)
    served = await store.open_lease("a", START_MS, model=MODEL)
    waited = await lease(store, Pick("a", START_MS + 1, acquire=True, model="embed"))
    assert isinstance(served, str)
    assert [lease.model for lease in (await store.leases()).values()] == [MODEL, None]

    await store.end_request(ended("a", served, 400.0, now_ms=START_MS + 400))
    await store.end_request(ended("a", waited, 450.0, now_ms=START_MS + 450))

    stats = (await store.stats())["a"]
    assert [(name, samples) for name, _, samples, _ in stats.model_latency] == [(MODEL, 1)]
    assert stats.completions == 2


async def test_later_samples_follow_the_moving_average(store: Store) -> None:
    """The first sample seeds the average; later ones move it by alpha * (sample - previous)."""
    await put(store, "a")
    averages = []
    for latency, alpha in [(100.0, 0.25), (300.0, 0.25), (50.0, 0.25), (50.0, 0.5)]:
        await store.end_request(ended("a", "", latency, smoothing=alpha))
        averages.append((await store.stats())["a"].avg_latency_ms)
    assert averages == [100.0, 150.0, 125.0, 87.5]


async def test_failed_flag_counts_failed_requests(store: Store) -> None:
    """Only ends flagged failed add to failed_requests."""
    await put(store, "a")
    for failed in [True, False, True, False]:
        request_id = await started(store, "a", START_MS)
        await store.end_request(ended("a", request_id, failed=failed))
    stats = (await store.stats())["a"]
    assert (stats.failed_requests, stats.total_requests, stats.active) == (2, 4, 0)


# Expiry.


async def test_expire_leases_closes_only_those_started_before_the_cutoff(store: Store) -> None:
    """Leases started before the cutoff expire in start order as failures; later ones stay open."""
    await put(store, "a", "b")
    first = await started(store, "a", START_MS + 1_000)
    second = await started(store, "b", START_MS + 2_000)
    third = await started(store, "a", START_MS + 3_000)

    expired = await store.expire_leases(START_MS + 3_000, START_MS + 3_000, FEEDBACK)

    assert expired == [Lease(first, "a", START_MS + 1_000), Lease(second, "b", START_MS + 2_000)]
    stats = await store.stats()
    assert (stats["a"].active, stats["a"].failed_requests) == (1, 1)
    assert (stats["b"].active, stats["b"].failed_requests) == (0, 1)
    assert await store.end_request(ended("a", first)) == EndResult(EndOutcome.ALREADY_ENDED)
    assert await store.end_request(ended("a", third)) == EndResult(EndOutcome.CLOSED, agent_id="a")


async def test_expire_leases_records_no_latency_sample(store: Store) -> None:
    """An expired lease is a failed request but lateness: no sample, no step to ejection.

    Its busy time is booked and then dropped from the capacity estimate (``fold_expiry``).
    """
    await put(store, "a")
    await started(store, "a", START_MS)
    await store.expire_leases(START_MS + 1, START_MS + 7_000, FEEDBACK)
    assert (await store.stats())["a"] == AgentStats(
        last_request_at_ms=START_MS,
        total_requests=1,
        failed_requests=1,
        joined_ms=START_MS,
        busy_total_ms=7_000.0,
        activity_at_ms=START_MS + 7_000,
        cap_mark_ms=7_000.0,
    )
    assert (await store.counters()).latency_samples == 0


async def test_expired_leases_never_eject(store: Store) -> None:
    """However many leases of one agent expire, it is not ejected (a dispatcher may have died)."""
    await put(store, "a", "b", "c")
    for _ in range(4):
        await started(store, "a", START_MS)
    await store.expire_leases(START_MS + 1, START_MS + 5, EJECT_FAST)
    stats = (await store.stats())["a"]
    assert (stats.failed_requests, stats.consecutive_failures, stats.ejected_until_ms) == (4, 0, 0)
    assert (await store.pick_state("")).ejections == {}


async def test_failed_ends_are_not_completions(store: Store) -> None:
    """Only a success that closes a lease counts towards the learned capacity."""
    await put(store, "a")
    for failed, at in [(False, 10), (True, 30), (False, 60)]:
        request_id = await started(store, "a", START_MS + at - 10)
        await store.end_request(ended("a", request_id, failed=failed, now_ms=START_MS + at))
    await store.end_request(ended("a", "", now_ms=START_MS + 70))  # no lease: no completion
    stats = (await store.stats())["a"]
    assert (stats.completions, stats.busy_total_ms, stats.cap_mark_ms) == (2, 30.0, 30.0)
    # The failure's 10 busy ms were dropped: the estimate holds the two successes' 20.
    assert stats.cap_busy_ms == pytest.approx(10.0 * (1 - 1 / CAPACITY_WINDOW) + 10.0)


async def test_expire_leases_with_none_due_returns_nothing(store: Store) -> None:
    """With no lease older than the cutoff nothing expires, active and version are untouched."""
    await put(store, "a")
    await started(store, "a", START_MS)
    before = store.version()
    assert await store.expire_leases(START_MS, START_MS, FEEDBACK) == []
    assert (await store.stats())["a"].active == 1
    assert store.version() == before


async def test_expire_sessions_drops_only_idle_bindings(store: Store) -> None:
    """Bindings last used before the cutoff are dropped; one used at or after it stays."""
    await put(store, "a")
    for session_id, used_at in [("old", START_MS), ("edge", START_MS + 10), ("new", T1)]:
        await select(store, Pick("a", used_at, session_id=session_id, bind=True))

    assert await store.expire_sessions(START_MS + 10) == 1

    assert await binding(store, "old") is None
    assert await binding(store, "edge") == Binding("a", START_MS + 10)
    assert await binding(store, "new") == Binding("a", T1)
    assert await store.session_count() == 2


async def test_refreshed_binding_survives_expiry(store: Store) -> None:
    """A binding refreshed by a same-agent pick counts as used at the refresh time."""
    await put(store, "a")
    await select(store, Pick("a", START_MS, session_id="s", bind=True))
    await select(store, Pick("a", T1, session_id="s"))
    assert await store.expire_sessions(T1) == 0
    assert await binding(store, "s") == Binding("a", T1)


EJECT_FAST = Feedback(ejection=Ejection(consecutive_failures=2, base_ms=1_000.0, max_ms=5_000.0))


async def test_consecutive_failures_eject_until_the_ejection_expires(store: Store) -> None:
    """Failures in a row eject an agent (in pick_state) until expire_ejections brings it back."""
    await put(store, "a", "b")
    for _ in range(2):
        await store.end_request(RequestEnd("a", "", 10.0, True, START_MS, EJECT_FAST))
    assert (await store.pick_state("")).ejections == {"a": START_MS + 1_000}
    assert (await store.stats())["a"].ejected_until_ms == START_MS + 1_000

    assert await store.expire_ejections(START_MS + 999) == []
    before = store.version()
    assert await store.expire_ejections(START_MS + 1_000) == ["a"]
    assert store.version() != before
    assert (await store.pick_state("")).ejections == {}


async def test_the_end_that_ejects_says_so_with_the_failures_in_a_row(store: Store) -> None:
    """Only the failing end that ejects reports it: the agent, until when, and the failures."""
    await put(store, "a", "b")
    first = await store.end_request(RequestEnd("a", "", 10.0, True, START_MS, EJECT_FAST))
    assert first == EndResult(EndOutcome.NO_OPEN_LEASE, agent_id="a")
    second = await store.end_request(RequestEnd("a", "", 10.0, True, START_MS, EJECT_FAST))
    assert second == EndResult(
        EndOutcome.NO_OPEN_LEASE, agent_id="a", ejected_until_ms=START_MS + 1_000, failures=2
    )


async def test_ejection_share_caps_how_many_are_out(store: Store) -> None:
    """No more than max_share of the registered agents are ejected at once."""
    await put(store, "a", "b", "c", "d")
    for agent_id in "abc":
        for _ in range(2):
            await store.end_request(RequestEnd(agent_id, "", 10.0, True, START_MS, EJECT_FAST))
    assert set((await store.pick_state("")).ejections) == {"a", "b"}
    assert (await store.stats())["c"].consecutive_failures == 2


# Forgetting idle history.


async def test_forget_idle_spares_registered_and_leased_ids(store: Store) -> None:
    """Only ids neither registered nor leased, unused since the cutoff, are forgotten."""
    await put(store, "reg")
    await select(store, Pick("old", START_MS))
    await select(store, Pick("recent", START_MS + 10))
    await started(store, "leased", START_MS)
    assert await store.forget_idle(START_MS + 5, keep=100) == 1
    assert set(await store.stats()) == {"reg", "recent", "leased"}
    assert (await store.counters()).selections_by_agent == {"": 1, "recent": 1}


async def test_forget_idle_keeps_the_most_recently_used(store: Store) -> None:
    """Past ``keep`` idle ids, the least recently used go first, whatever the cutoff."""
    for i in range(4):
        await store.end_request(ended(f"c{i}", now_ms=START_MS + i))
    assert await store.forget_idle(START_MS, keep=2) == 2
    assert set(await store.stats()) == {"c2", "c3"}


async def test_forget_idle_breaks_ties_by_first_seen(store: Store) -> None:
    """Ids last used at the same time are kept in the order they were first seen."""
    for agent_id in ["x", "y", "z"]:
        await store.end_request(ended(agent_id, now_ms=START_MS))
    assert await store.forget_idle(START_MS, keep=1) == 2
    assert set(await store.stats()) == {"x"}


async def test_forget_idle_changes_the_version_only_when_it_forgets(store: Store) -> None:
    """A sweep that forgets nothing leaves version() alone; one that forgets moves it."""
    await select(store, Pick("c", START_MS))
    before = store.version()
    assert await store.forget_idle(START_MS, keep=10) == 0
    assert store.version() == before
    assert await store.forget_idle(START_MS + 1, keep=10) == 1
    assert store.version() != before


# Counters.


async def test_counters_add_up(store: Store) -> None:
    """Selections, failures, requests and latency samples each total what was recorded."""
    await put(store, "a", "b")
    await select(store, Pick("a", START_MS))
    acquired = await lease(store, Pick("a", START_MS, acquire=True))
    await select(store, Pick("b", START_MS))
    on_b = await started(store, "b", START_MS)
    await store.record_failed_selection()
    await store.record_failed_selection()
    await store.end_request(ended("a", acquired, 100.0))
    await store.end_request(ended("b", on_b, 300.1))
    await store.end_request(ended("a", "", 50.0))  # NO_OPEN_LEASE still records a sample
    await store.end_request(ended("a", acquired, 999.0))  # ALREADY_ENDED records nothing

    assert await store.counters() == Counters(
        total_selections=3,
        failed_selections=2,
        total_requests=2,
        latency_sum_ms=100.0 + 300.1 + 50.0,
        latency_samples=3,
        selections_by_agent={"a": 2, "b": 1},
    )


async def test_counters_are_a_snapshot(store: Store) -> None:
    """A Counters value already returned does not change with later selections."""
    await select(store, Pick("a", START_MS))
    counters = await store.counters()
    await select(store, Pick("a", START_MS))
    assert counters.selections_by_agent == {"a": 1}


# Versions and change notification.

Write = Callable[[Store], Awaitable[object]]

WRITES: dict[str, Write] = {
    "put_agent": lambda s: s.put_agent(agent("new"), START_MS),
    "re-put_agent": lambda s: s.put_agent(agent("a", vram_gb=8.0), START_MS),
    "re-put_unchanged_agent": lambda s: s.put_agent(agent("a"), START_MS),
    "delete_agent": lambda s: s.delete_agent("a"),
    "set_weights": lambda s: s.set_weights({"a": 3.0}),
    "clear_weights": lambda s: s.clear_weights(["a"]),
    "set_strategy": lambda s: s.set_strategy(StrategyName.ROUND_ROBIN),
    "commit_pick": lambda s: s.commit_pick(Pick("a", START_MS)),
    "commit_pick_acquire": lambda s: s.commit_pick(Pick("a", START_MS, acquire=True)),
    "open_lease": lambda s: s.open_lease("a", START_MS),
    "end_request_closed": lambda s: s.end_request(ended("a", f"{EPOCH}-1")),
    "end_request_no_open_lease": lambda s: s.end_request(ended("b")),
    "expire_leases": lambda s: s.expire_leases(START_MS + 1, START_MS + 1, FEEDBACK),
}


async def with_one_lease(store: Store) -> Store:
    """The store with agents a and b and one open lease ('test-1') on a."""
    await put(store, "a", "b")
    await started(store, "a", START_MS)
    return store


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
async def test_every_write_changes_the_version(store: Store, write: Write) -> None:
    """Each state-changing operation moves version() to a new value."""
    await with_one_lease(store)
    before = store.version()
    await write(store)
    assert store.version() != before


async def test_reads_and_rejected_ends_keep_the_version(store: Store) -> None:
    """Reads, failed-selection counts and ends that change nothing leave version() as it was."""
    await with_one_lease(store)
    before = store.version()
    await store.agents()
    await store.stats()
    await store.weights()
    await store.counters()
    await store.strategy()
    await store.leases()
    await store.session_count()
    await store.lease_count()
    await store.pick_state("s")
    await store.record_failed_selection()
    await store.end_request(ended("b", f"{EPOCH}-1"))  # WRONG_AGENT
    await store.end_request(ended("a", f"{EPOCH}-9"))  # UNKNOWN_REQUEST
    await store.check()
    assert store.version() == before


async def test_wait_for_change_returns_at_once_when_already_changed(store: Store) -> None:
    """wait_for_change(seen) returns the current version without another write if it differs."""
    seen = store.version()
    await put(store, "a")
    current = store.version()
    assert await asyncio.wait_for(store.wait_for_change(seen), HANG_GUARD_S) == current


async def test_wait_for_change_wakes_on_the_next_write(store: Store) -> None:
    """A waiter whose version is current blocks until the next write, then gets the new version."""
    await put(store, "a")
    seen = store.version()
    waiter = asyncio.create_task(store.wait_for_change(seen))
    await yield_to_loop()
    assert not waiter.done()

    await started(store, "a", START_MS)

    assert await asyncio.wait_for(waiter, HANG_GUARD_S) == store.version() != seen


async def test_one_write_wakes_every_waiter(store: Store) -> None:
    """All waiters on the current version wake on a single write."""
    await put(store, "a")
    seen = store.version()
    waiters = [asyncio.create_task(store.wait_for_change(seen)) for _ in range(3)]
    await yield_to_loop()
    assert not any(w.done() for w in waiters)

    await store.set_weights({"a": 1.0})

    results = await asyncio.wait_for(asyncio.gather(*waiters), HANG_GUARD_S)
    assert results == [store.version()] * 3


async def test_check_answers_when_the_store_is_up(store: Store) -> None:
    """check() returns without raising while the store is reachable."""
    await store.check()


# Moved from the memory store's own tests: they hold for every store.


async def test_deleted_then_reput_agent_has_no_weight_override(store: Store) -> None:
    """An agent put again after deletion does not get its old weight override back."""
    await put(store, "a", "b")
    await store.set_weights({"a": 2.0})
    await store.delete_agent("a")
    await put(store, "a")
    assert dict(await store.weights()) == {}
    assert list(await store.agents()) == ["b", "a"]


async def test_set_weights_merges_overrides(store: Store) -> None:
    """set_weights adds and replaces the given overrides and leaves the others alone."""
    await store.set_weights({"a": 1.0, "b": 2.0})
    await store.set_weights({"b": 0.0, "c": 4.0})
    assert dict(await store.weights()) == {"a": 1.0, "b": 0.0, "c": 4.0}


@pytest.mark.parametrize(
    "request_id",
    [
        "test-01",  # leading zero: "test-1" was issued (and is still open), "test-01" never was
        "test-002",
        "test-\u00b2",  # superscript two: str.isdigit() accepts it, int() raises ValueError
        "test-\u0661",  # ARABIC-INDIC DIGIT ONE: int() reads it as 1
        "test-\uff12",  # FULLWIDTH DIGIT TWO: int() reads it as 2
    ],
)
async def test_non_canonical_number_is_unknown_and_changes_nothing(
    store: Store, request_id: str
) -> None:
    """An id spelling an issued number differently was never issued: UNKNOWN_REQUEST, no raise.

    Catches a store that checks ``number.isdigit()`` and ``int(number)`` instead of
    comparing the exact decimal spelling it issued.
    """
    await put(store, "a")
    await started(store, "a", START_MS)
    done = await started(store, "a", START_MS)
    await store.end_request(ended("a", done))
    before = await state(store)

    result = await store.end_request(ended("a", request_id))

    assert result == EndResult(EndOutcome.UNKNOWN_REQUEST)
    assert await state(store) == before


async def test_first_sample_seeds_the_average(store: Store) -> None:
    """The first latency becomes the average as is, whatever the smoothing factor."""
    await put(store, "a")
    request_id = await started(store, "a", START_MS)
    await store.end_request(ended("a", request_id, 80.0, smoothing=0.1))
    assert (await store.stats())["a"].avg_latency_ms == pytest.approx(80.0)


async def test_expire_leases_records_no_latency(store: Store) -> None:
    """Expired leases count as failed requests but add no latency sample."""
    await put(store, "a")
    await started(store, "a", START_MS)
    await store.expire_leases(START_MS + 1, START_MS + 1, FEEDBACK)
    assert (await store.stats())["a"].avg_latency_ms is None
    assert (await store.counters()).latency_samples == 0


async def test_waiter_wakes_again_on_a_later_write(store: Store) -> None:
    """Waiting again with the version just returned blocks until the following write."""
    await put(store, "a")
    seen = store.version()
    waiter = asyncio.create_task(store.wait_for_change(seen))
    await yield_to_loop()
    assert not waiter.done()

    await started(store, "a", START_MS)

    assert await asyncio.wait_for(waiter, HANG_GUARD_S) == store.version() != seen


# Checks made in the step they guard: an id that must be known, and one read of all.


async def test_open_lease_only_known_refuses_an_unknown_id_and_changes_nothing(
    store: Store,
) -> None:
    """With only_known an id never registered nor seen is refused, before the lease limit.

    A registered agent, or a candidate that already has a load record, opens as usual.
    """
    await put(store, "a")
    await started(store, "candidate", START_MS)  # seen: it has a record now
    before = await state(store)

    refused = await store.open_lease("nobody", START_MS, max_leases=2, only_known=True)

    assert refused == UnknownAgent("nobody")
    assert await state(store) == before
    assert await store.open_lease("a", START_MS, only_known=True) == f"{EPOCH}-2"
    assert await store.open_lease("nobody", START_MS, max_leases=2, only_known=True) == (
        UnknownAgent("nobody")
    )
    assert await store.open_lease("candidate", START_MS, max_leases=2, only_known=True) is (
        Limit.LEASES
    )


async def test_end_without_request_id_only_known_refuses_an_unknown_agent(store: Store) -> None:
    """only_known refuses an end naming an unknown agent and no request; known ones record."""
    await put(store, "a")
    before = await state(store)

    unknown = await store.end_request(replace(ended("nobody"), only_known=True))

    assert unknown == EndResult(EndOutcome.UNKNOWN_AGENT)
    assert await state(store) == before
    known = await store.end_request(replace(ended("a"), only_known=True))
    assert known.outcome is EndOutcome.NO_OPEN_LEASE


async def test_set_weights_only_registered_is_all_or_nothing(store: Store) -> None:
    """An unregistered id refuses every override; otherwise the result is the new configuration."""
    await put(store, "a", "b")
    await store.set_weights({"a": 2.0})
    before = store.version()

    refused = await store.set_weights({"b": 3.0, "x": 1.0}, only_registered=True)

    assert refused == UnknownAgent("x")
    assert (dict(await store.weights()), store.version()) == ({"a": 2.0}, before)
    applied = await store.set_weights({"b": 3.0}, only_registered=True)
    assert isinstance(applied, Configuration)
    assert (list(applied.agents), dict(applied.weights)) == (["a", "b"], {"a": 2.0, "b": 3.0})
    changed = store.version()
    assert changed != before
    unchanged = await store.set_weights({}, only_registered=True)
    assert isinstance(unchanged, Configuration)
    assert dict(unchanged.weights) == {"a": 2.0, "b": 3.0}
    assert store.version() == changed


async def test_overview_is_what_the_separate_reads_return(store: Store) -> None:
    """overview() holds the strategy, registry, weights, records and counters of the reads."""
    await put(store, "a", "b")
    await store.set_weights({"b": 0.5})
    await store.set_strategy(StrategyName.WEIGHTED)
    request_id = await lease(store, Pick("b", START_MS, acquire=True))
    await store.end_request(ended("b", request_id))
    await started(store, "candidate", START_MS)

    overview = await store.overview()

    assert overview.strategy is await store.strategy()
    assert list(overview.agents.items()) == list((await store.agents()).items())
    assert dict(overview.weights) == dict(await store.weights())
    assert list(overview.stats.items()) == list((await store.stats()).items())
    assert overview.counters == await store.counters()
    assert list(overview.stats) == ["a", "b", "candidate"]
