"""Decisions with health: unhealthy and draining agents get no new picks, panic fails open."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest
from structlog.testing import capture_logs

from lb_service.balancer import LoadBalancer
from lb_service.errors import AllAgentsDraining, NoEligibleAgent
from lb_service.health import ProbeResult
from lb_service.model import Agent, Engine, StrategyName, Task
from lb_service.service.status import code_for
from tests.factories import FakeClock, agent, balancer

REFUSED = ProbeResult(False, "probe: connection refused")


async def _fleet(*ids: str, engine: Engine = Engine.OLLAMA) -> LoadBalancer:
    """A round-robin balancer whose agents were all probed healthy once."""
    lb = balancer(FakeClock())
    lb.health.probing = True
    await lb.set_strategy(StrategyName.ROUND_ROBIN)
    for agent_id in ids:
        await lb.register(dataclasses.replace(agent(agent_id), engine=engine))
        await lb.health.probed(agent_id, ProbeResult(True))
    return lb


async def _take_out(lb: LoadBalancer, agent_id: str) -> None:
    for _ in range(3):  # the default unhealthy threshold
        await lb.health.probed(agent_id, REFUSED)


async def _picks(lb: LoadBalancer, n: int, candidates: Sequence[Agent] = ()) -> list[str]:
    return [(await lb.select(candidates=candidates)).agent.id for _ in range(n)]


async def test_unhealthy_and_draining_agents_get_no_new_picks() -> None:
    """With a, b, c registered, b unhealthy and c draining, every pick goes to a."""
    lb = await _fleet("a", "b", "c")
    await _take_out(lb, "b")
    await lb.health.drain("c")

    assert set(await _picks(lb, 12)) == {"a"}


async def test_an_agent_back_from_unhealthy_takes_picks_again() -> None:
    """Two successes bring an unhealthy agent back into the rotation."""
    lb = await _fleet("a", "b")
    await _take_out(lb, "b")
    await lb.health.probed("b", ProbeResult(True))
    await lb.health.probed("b", ProbeResult(True))

    assert set(await _picks(lb, 4)) == {"a", "b"}


async def test_a_new_agent_takes_no_pick_before_its_first_probe() -> None:
    """While probing, a registered but unprobed engine agent is passed over for a probed one."""
    lb = await _fleet("a")
    await lb.register(dataclasses.replace(agent("new"), engine=Engine.OLLAMA))

    assert set(await _picks(lb, 4)) == {"a"}


async def test_panic_picks_among_unhealthy_agents_and_logs_once_each_way() -> None:
    """All eligible unhealthy: picks go on among those not draining, logged in and out once."""
    lb = await _fleet("a", "b", "c")
    await lb.health.drain("c")
    await _take_out(lb, "a")
    await _take_out(lb, "b")
    with capture_logs() as logs:
        picked = await _picks(lb, 6)
        await lb.health.probed("a", ProbeResult(True))
        await lb.health.probed("a", ProbeResult(True))
        after = await _picks(lb, 3)

    assert set(picked) == {"a", "b"}
    assert set(after) == {"a"}
    assert [line["event"] for line in logs if "panic" in line["event"]] == [
        "health_panic",
        "health_panic_over",
    ]


async def test_every_eligible_agent_draining_is_unavailable_naming_the_cause() -> None:
    """When all eligible agents drain, a pick is refused as AllAgentsDraining (UNAVAILABLE)."""
    lb = await _fleet("a", "b")
    await lb.health.drain("a")
    await lb.health.drain("b")

    with pytest.raises(AllAgentsDraining, match="all 2 eligible agent\\(s\\) are draining") as err:
        await lb.select()
    assert code_for(err.value).name == "UNAVAILABLE"
    assert (await lb.statistics()).failed_selections == 1


async def test_requirements_are_named_before_health() -> None:
    """A task no agent meets is still NoEligibleAgent, even when every agent drains."""
    lb = await _fleet("a")
    await lb.health.drain("a")

    with pytest.raises(NoEligibleAgent):
        await lb.select(Task(model="unknown:1b"))


async def test_a_session_bound_to_a_drained_agent_binds_anew() -> None:
    """A sticky session whose agent drains moves to another agent and stays there after undrain."""
    lb = await _fleet("a", "b")
    first = (await lb.select(session_id="s")).agent.id
    other = "b" if first == "a" else "a"
    await lb.health.drain(first)

    moved = await lb.select(session_id="s")
    await lb.health.drain(first, undrain=True)
    again = await lb.select(session_id="s")

    assert (moved.agent.id, again.agent.id, again.sticky) == (other, other, True)


async def test_open_leases_on_a_drained_agent_end_normally() -> None:
    """A lease opened before the drain ends as usual and the active count falls to 0."""
    lb = await _fleet("a", "b")
    lease = await lb.select(acquire=True)
    assert await lb.health.drain(lease.agent.id) == 1

    await lb.end(lease.agent.id, 120.0, lease.request_id)

    (load,) = await lb.loads([lease.agent.id])
    assert (load.active_connections, load.total_requests, load.failed_requests) == (0, 1, 0)


async def test_no_lease_is_granted_after_drain_returns_under_concurrent_selects() -> None:
    """Selections racing a drain: none that starts after DrainAgent returned leases the agent."""
    lb = await _fleet("a", "b")
    after_drain: list[str] = []
    drained = asyncio.Event()

    async def dispatcher() -> None:
        for _ in range(50):
            was_drained = drained.is_set()
            picked = await lb.select(acquire=True)
            if was_drained:
                after_drain.append(picked.agent.id)
            await asyncio.sleep(0)

    async def operator() -> None:
        await asyncio.sleep(0)
        await lb.health.drain("a")
        drained.set()

    await asyncio.gather(*(dispatcher() for _ in range(8)), operator())

    assert after_drain
    assert set(after_drain) == {"b"}


async def test_candidates_passed_with_the_pick_skip_a_drained_registered_id() -> None:
    """Health follows the id: a candidate sharing a drained agent's id is passed over."""
    lb = await _fleet("a", "b")
    await lb.health.drain("a")

    picks = await _picks(lb, 4, candidates=[agent("a"), agent("b")])

    assert set(picks) == {"b"}
