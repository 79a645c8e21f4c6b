"""Decisions with agents' load reports: unseen load counts, saturated agents wait, models stay.

Every test runs the base rules (a full scan by expected time, exact pick orders) over
two or three agents with identical hardware, so only the reports tell them apart.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import AgentNotFound, AllAgentsSaturated, InvalidArgument
from lb_service.model import LoadReport, Task
from lb_service.service.status import code_for
from tests.factories import BASE_RULES, FakeClock, agent, balancer

MODEL = Task(model="llama3:8b")


async def _fleet(
    *ids: str, clock: FakeClock | None = None, config: BalancerConfig = BASE_RULES
) -> LoadBalancer:
    lb = balancer(clock or FakeClock(), config)
    for agent_id in ids:
        await lb.register(agent(agent_id))
    return lb


async def _picks(lb: LoadBalancer, n: int, task: Task | None = None) -> list[str]:
    return [(await lb.select(task, acquire=True)).agent.id for _ in range(n)]


async def _lease(lb: LoadBalancer, agent_id: str, n: int = 1) -> None:
    for _ in range(n):
        await lb.start(agent_id)


def _counted(ids: Sequence[str]) -> dict[str, int]:
    return {agent_id: ids.count(agent_id) for agent_id in sorted(set(ids))}


async def test_requests_an_agent_reports_beyond_its_leases_count_as_load() -> None:
    """Agent a reports 3 running that bypassed the service: b takes 3, then they alternate."""
    lb = await _fleet("a", "b")
    await lb.health.heartbeat("a", LoadReport(running_requests=3))

    assert await _picks(lb, 3) == ["b", "b", "b"]
    assert _counted(await _picks(lb, 4)) == {"a": 2, "b": 2}


async def test_a_stale_report_is_ignored() -> None:
    """Past --report-staleness (2 s) the same report no longer counts: a is picked again."""
    clock = FakeClock()
    lb = await _fleet("a", "b", clock=clock)
    await lb.health.heartbeat("a", LoadReport(running_requests=3))
    clock.advance(2.0)

    assert _counted(await _picks(lb, 2)) == {"a": 1, "b": 1}


async def test_a_report_never_counts_less_than_the_leases_granted() -> None:
    """Agent a holds 2 leases, then reports nothing running: its load is still its 2 leases."""
    lb = await _fleet("a", "b")
    await _lease(lb, "a", 2)
    await lb.health.heartbeat("a", LoadReport(queued_requests=0, running_requests=0))

    assert await _picks(lb, 2) == ["b", "b"]


async def test_leases_granted_after_a_report_add_to_it() -> None:
    """Agent a reports 2 with no lease; one granted since makes 3: b takes the next 3 picks."""
    lb = await _fleet("a", "b")
    await lb.health.heartbeat("a", LoadReport(running_requests=2))
    await _lease(lb, "a")

    assert await _picks(lb, 3) == ["b", "b", "b"]


async def test_a_saturated_agent_waits_while_another_has_room() -> None:
    """Agent a reports 5 queued (the default threshold): b takes picks though it holds 4 leases."""
    lb = await _fleet("a", "b")
    await _lease(lb, "b", 4)
    await lb.health.heartbeat("a", LoadReport(queued_requests=5, running_requests=0))

    assert await _picks(lb, 3) == ["b", "b", "b"]


async def test_with_every_agent_saturated_the_least_saturated_takes_the_request() -> None:
    """Agent a at 5 queued (1.0x its threshold), b with a 96% full KV cache (1.2x): a, fail-open."""
    lb = await _fleet("a", "b")
    await lb.health.heartbeat("a", LoadReport(queued_requests=5))
    await lb.health.heartbeat("b", LoadReport(kv_cache_usage=0.96))

    assert await _picks(lb, 2) == ["a", "a"]


async def test_every_agent_saturated_is_refused_when_asked() -> None:
    """--refuse-when-saturated turns the fail-open pick into RESOURCE_EXHAUSTED."""
    config = dataclasses.replace(BASE_RULES, refuse_when_saturated=True)
    lb = await _fleet("a", "b", config=config)
    await lb.health.heartbeat("a", LoadReport(queued_requests=9))
    await lb.health.heartbeat("b", LoadReport(kv_cache_usage=0.8))

    with pytest.raises(AllAgentsSaturated, match="all 2 eligible agent") as refused:
        await lb.select()
    assert code_for(refused.value).name == "RESOURCE_EXHAUSTED"
    assert (await lb.statistics()).failed_selections == 1


async def test_a_session_on_a_saturated_agent_spills_over() -> None:
    """A session bound to a is sent to b while a reports itself saturated, and keeps a."""
    lb = await _fleet("a", "b")
    first = await lb.select(session_id="chat-1")
    bound = first.agent.id
    other = "b" if bound == "a" else "a"
    await lb.health.heartbeat(bound, LoadReport(queued_requests=6))

    spilled = await lb.select(session_id="chat-1")
    await lb.health.heartbeat(bound, LoadReport(queued_requests=0))
    back = await lb.select(session_id="chat-1")

    assert (spilled.agent.id, spilled.sticky) == (other, False)
    assert (back.agent.id, back.sticky) == (bound, True)


async def test_the_agent_holding_the_model_takes_it_within_the_load_bound() -> None:
    """Agent a holds the model and b not: a takes picks until its load passes the bound (1.25x)."""
    config = dataclasses.replace(BASE_RULES, balance_factor=1.25)
    lb = await _fleet("a", "b", config=config)
    await lb.health.heartbeat("a", LoadReport(loaded_models=("llama3:8b",)))
    await lb.health.heartbeat("b", LoadReport(loaded_models=("qwen2.5:14b",)))

    # a may hold ceil(1.25 x its half of the open requests): 1 of 1, 2 of 2, then not 3 of 3.
    assert await _picks(lb, 3, MODEL) == ["a", "a", "b"]


async def test_an_agent_holding_the_model_is_kept_though_saturated_while_within_the_bound() -> None:
    """Agent a holds the model with 6 queued; b would have to load it: a still takes it."""
    lb = await _fleet("a", "b")
    await lb.health.heartbeat("a", LoadReport(queued_requests=6, loaded_models=("llama3:8b",)))
    await lb.health.heartbeat("b", LoadReport(queued_requests=0, loaded_models=("qwen2.5:14b",)))

    assert await _picks(lb, 1, MODEL) == ["a"]
    # A request for no model in particular goes by saturation alone: b.
    assert await _picks(lb, 1) == ["b"]


async def test_an_agent_holding_the_model_with_a_slot_free_takes_it_past_the_bound() -> None:
    """With 4 slots, a keeps the model's requests until its slots are full, past the 1.25x bound.

    The bound alone would let a hold 2 of 3 open requests; a free slot serves at once.
    """
    config = dataclasses.replace(BASE_RULES, balance_factor=1.25)
    lb = balancer(FakeClock(), config)
    for agent_id in ("a", "b"):
        await lb.register(dataclasses.replace(agent(agent_id), parallel_slots=4))
    await lb.health.heartbeat("a", LoadReport(loaded_models=("llama3:8b",)))
    await lb.health.heartbeat("b", LoadReport(loaded_models=("qwen2.5:14b",)))

    assert await _picks(lb, 5, MODEL) == ["a", "a", "a", "a", "b"]


async def test_a_session_whose_agent_evicted_its_model_goes_where_the_model_is() -> None:
    """The session's agent reports another model loaded: its cached context is gone, it spills."""
    lb = await _fleet("a", "b")
    bound = (await lb.select(MODEL, session_id="chat-1")).agent.id
    other = "b" if bound == "a" else "a"
    await lb.health.heartbeat(bound, LoadReport(loaded_models=("qwen2.5:14b",)))
    await lb.health.heartbeat(other, LoadReport(loaded_models=("llama3:8b",)))

    spilled = await lb.select(MODEL, session_id="chat-1")

    assert (spilled.agent.id, spilled.sticky) == (other, False)


async def test_residency_preference_can_be_turned_off() -> None:
    """Without --prefer-resident the loaded model does not matter: picks alternate."""
    config = dataclasses.replace(BASE_RULES, prefer_resident=False)
    lb = await _fleet("a", "b", config=config)
    await lb.health.heartbeat("a", LoadReport(loaded_models=("llama3:8b",)))

    assert _counted(await _picks(lb, 4, MODEL)) == {"a": 2, "b": 2}


async def test_a_bad_report_records_nothing_not_even_the_heartbeat() -> None:
    """A heartbeat whose report has a NaN is INVALID_ARGUMENT and changes no record of the agent."""
    clock = FakeClock()
    lb = await _fleet("a", clock=clock)
    before = await lb.health.store.health_of("a")
    clock.advance(5)

    with pytest.raises(InvalidArgument) as refused:
        await lb.health.heartbeat("a", LoadReport(kv_cache_usage=float("nan")))

    assert refused.value.field == "report.kv_cache_usage"
    assert code_for(refused.value).name == "INVALID_ARGUMENT"
    assert await lb.health.store.health_of("a") == before
    assert (await lb.loads())[0].report is None


async def test_a_report_for_an_unknown_agent_is_not_found() -> None:
    """Heartbeat with a report for an id never registered is NOT_FOUND and keeps nothing."""
    lb = await _fleet("a")
    with pytest.raises(AgentNotFound):
        await lb.health.heartbeat("ghost", LoadReport(queued_requests=1))


async def test_loads_show_the_report_and_its_age() -> None:
    """GetLoads carries the freshest report, and how old it is, stale or not."""
    clock = FakeClock()
    lb = await _fleet("a", "b", clock=clock)
    report = LoadReport(queued_requests=2, kv_cache_usage=0.3, loaded_models=("llama3:8b",))
    await lb.health.heartbeat("a", report)
    clock.advance(7.5)

    loads = {load.agent_id: load for load in await lb.loads()}

    assert (loads["a"].report, loads["a"].report_age_ms) == (report, 7_500)
    assert (loads["b"].report, loads["b"].report_age_ms) == (None, 0)
