"""Health behind the store interface, memory and Redis alike: compare-and-set, out map, claims."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lb_service.health import state
from lb_service.health.state import HEALTHY_RECORD, HealthRecord
from lb_service.model import AgentHealth
from lb_service.store.base import HealthWrite, Pick
from lb_service.store.memory import MemoryStore
from lb_service.store.roles import Store
from tests.factories import START_MS, agent
from tests.store.conftest import MakeStore

DRAINED = state.drained(HEALTHY_RECORD, True)
PROBED_OUT = HealthRecord(probe_ok=False, probe_reason="probe: HTTP 503", started=True)


async def _register(store: Store, *ids: str) -> None:
    for agent_id in ids:
        await store.put_agent(agent(agent_id), START_MS)


async def test_put_health_is_compare_and_set(store: Store) -> None:
    """A write applies only over the record expected; a stale expectation changes nothing."""
    await _register(store, "a")

    assert await store.put_health("a", PROBED_OUT, None) is HealthWrite.APPLIED
    assert await store.put_health("a", DRAINED, None) is HealthWrite.CONFLICT
    assert await store.health_of("a") == PROBED_OUT
    assert await store.put_health("a", DRAINED, PROBED_OUT) is HealthWrite.APPLIED
    assert await store.health() == {"a": DRAINED}


async def test_put_health_of_an_unregistered_agent_changes_nothing(store: Store) -> None:
    """A record for an id that is not registered is refused as UNKNOWN_AGENT."""
    assert await store.put_health("ghost", DRAINED, None) is HealthWrite.UNKNOWN_AGENT
    assert await store.health_of("ghost") is None


async def test_pick_state_shows_the_agents_out(store: Store) -> None:
    """pick_state's out map holds exactly the unhealthy and draining agents, by state."""
    await _register(store, "a", "b", "c")
    await store.put_health("a", PROBED_OUT, None)
    await store.put_health("b", DRAINED, None)
    await store.put_health("c", replace(PROBED_OUT, probe_ok=True), None)

    out = (await store.pick_state("")).out

    assert dict(out) == {"a": AgentHealth.UNHEALTHY, "b": AgentHealth.DRAINING}


async def test_overview_carries_the_records(store: Store) -> None:
    """Overview (GetLoads) reads every health record in the same call."""
    await _register(store, "a")
    await store.put_health("a", PROBED_OUT, None)

    assert dict((await store.overview()).health) == {"a": PROBED_OUT}


async def test_deregistering_drops_the_record_and_the_out_entry(store: Store) -> None:
    """delete_agent forgets the agent's health; registered again it has none."""
    await _register(store, "a")
    await store.put_health("a", DRAINED, None)
    await store.delete_agent("a")
    await _register(store, "a")

    assert await store.health_of("a") is None
    assert dict((await store.pick_state("")).out) == {}


async def test_a_health_change_moves_the_version(store: Store) -> None:
    """A write that changes an agent's health is a change watchers wake for."""
    await _register(store, "a")
    before = store.version()

    await store.put_health("a", DRAINED, None)

    assert store.version() != before


async def test_a_probe_claim_holds_for_its_time_then_lapses(store: Store) -> None:
    """One claim per agent at a time; it lapses after its hold, so a dead claimant is replaced."""
    await _register(store, "a")

    assert await store.claim_probe("a", START_MS, 200)
    assert not await store.claim_probe("a", START_MS + 10, 200)
    assert await store.claim_probe("b", START_MS + 10, 200)  # claims are per agent


async def test_replicas_see_health_at_once(new_store: MakeStore) -> None:
    """Two stores over one state (replicas): a drain through one is in the other's next pick."""
    one = new_store()
    if isinstance(one, MemoryStore):
        pytest.skip("every memory store is a state of its own: nothing is shared")
    other = new_store()
    await _register(one, "a")
    await one.put_health("a", DRAINED, None)

    assert dict((await other.pick_state("")).out) == {"a": AgentHealth.DRAINING}
    assert await other.claim_probe("a", START_MS, 1_000)
    assert not await one.claim_probe("a", START_MS, 1_000)  # probed once across replicas


async def test_a_commit_passes_over_a_contender_drained_after_the_snapshot(
    new_store: MakeStore,
) -> None:
    """Redis: a pick read before DrainAgent and committed after it never lands on the agent."""
    store = new_store()
    if isinstance(store, MemoryStore):
        pytest.skip("the memory store never suspends between read and commit: no window")
    await _register(store, "a")
    await store.pick_state("")
    await store.put_health("a", DRAINED, None)

    committed = await store.commit_pick(Pick("a", START_MS, acquire=True))

    assert committed is None
    assert await store.lease_count() == 0
