"""Load reports behind the store interface, memory and Redis alike: kept, shown, dropped."""

from __future__ import annotations

import pytest

from lb_service.balancer import LoadBalancer
from lb_service.model import LoadReport
from lb_service.reports import ReceivedReport
from lb_service.store.base import Pick
from lb_service.store.redis import RedisStore
from lb_service.store.roles import Store
from tests.factories import BASE_RULES, START_MS, FakeClock, agent

FULL = LoadReport(
    queued_requests=3,
    running_requests=2,
    kv_cache_usage=0.45,
    loaded_models=("llama3:8b", "qwen2.5:14b"),
    cpu_utilization=0.25,
    gpu_utilization=0.9,
    named_metrics={"tokens_per_s": 812.5},
)


async def test_a_report_is_kept_with_its_time_and_the_leases_open_then(store: Store) -> None:
    """put_report keeps every figure, the arrival time and the agent's open leases at that time."""
    await store.put_agent(agent("a"), START_MS)
    for _ in range(2):
        await store.commit_pick(Pick("a", START_MS, acquire=True))

    assert await store.put_report("a", FULL, START_MS + 5)

    expected = ReceivedReport(FULL, START_MS + 5, leases_at=2)
    assert dict((await store.pick_state("")).reports) == {"a": expected}
    assert dict((await store.overview()).reports) == {"a": expected}
    assert expected.unseen == 3  # 5 reported, 2 of them the service's own leases


async def test_unknown_figures_stay_unknown(store: Store) -> None:
    """A report that states only loaded models reads back with every count None."""
    await store.put_agent(agent("a"), START_MS)
    await store.put_report("a", LoadReport(loaded_models=("llama3:8b",)), START_MS)

    kept = (await store.pick_state("")).reports["a"].report

    assert kept == LoadReport(loaded_models=("llama3:8b",))
    assert kept.requests is None


async def test_a_newer_report_replaces_the_older(store: Store) -> None:
    """Only the freshest report is kept per agent."""
    await store.put_agent(agent("a"), START_MS)
    await store.put_report("a", FULL, START_MS)
    await store.put_report("a", LoadReport(queued_requests=0), START_MS + 1000)

    kept = (await store.overview()).reports["a"]

    assert kept == ReceivedReport(LoadReport(queued_requests=0), START_MS + 1000, 0)


async def test_a_report_for_an_unregistered_agent_is_not_kept(store: Store) -> None:
    """put_report answers False for an id not registered and keeps nothing."""
    assert not await store.put_report("ghost", FULL, START_MS)
    assert dict((await store.overview()).reports) == {}


async def test_deregistering_drops_the_report(store: Store) -> None:
    """delete_agent drops the agent's report with it."""
    await store.put_agent(agent("a"), START_MS)
    await store.put_report("a", FULL, START_MS)
    await store.delete_agent("a")
    await store.put_agent(agent("a"), START_MS + 1)

    assert dict((await store.pick_state("")).reports) == {}


async def test_a_report_moves_the_version(store: Store) -> None:
    """Watchers wake for a new report (WatchLoads shows it)."""
    await store.put_agent(agent("a"), START_MS)
    before = store.version()

    await store.put_report("a", FULL, START_MS)

    assert await store.wait_for_change(before) != before


@pytest.mark.redis
async def test_replicas_share_reports_and_the_commit_keeps_their_unseen_load(
    redis_url: str, redis_prefix: str, redis_stores: list[RedisStore]
) -> None:
    """A report sent through one replica steers another's picks, whose commit re-ranks with it.

    Agent a reports 3 requests the service does not see; replica 2 then picks three times
    for b. Its commit re-ranks the contenders on Redis's lease counts, which hold none of
    a's 3: the rank carries them, or a would win the re-rank at once.
    """
    one, two = (RedisStore(redis_url, prefix=redis_prefix) for _ in range(2))
    redis_stores.extend((one, two))
    first, second = (LoadBalancer(store, BASE_RULES, clock=FakeClock()) for store in (one, two))
    for agent_id in ("a", "b"):
        await first.register(agent(agent_id))
    await first.health.heartbeat("a", LoadReport(running_requests=3))

    picks = [(await second.select(acquire=True)).agent.id for _ in range(3)]

    assert picks == ["b", "b", "b"]


async def test_pick_state_knows_when_the_newest_report_arrived(store: Store) -> None:
    """reports_newest_ms is the latest arrival over all agents (0 before any report)."""
    for agent_id in ("a", "b"):
        await store.put_agent(agent(agent_id), START_MS)
    assert (await store.pick_state("")).reports_newest_ms == 0

    await store.put_report("a", FULL, START_MS + 30)
    await store.put_report("b", FULL, START_MS + 10)

    assert (await store.pick_state("")).reports_newest_ms == START_MS + 30
