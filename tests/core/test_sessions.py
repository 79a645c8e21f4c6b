"""Sticky sessions: binding, spill-over at capacity, rebinding and idle expiry."""

from __future__ import annotations

from dataclasses import replace

from lb_service.balancer import LoadBalancer
from lb_service.model import Task
from tests.factories import BASE_RULES, FakeClock, agent, balancer


async def _three(lb: LoadBalancer, max_connections: int = 0) -> None:
    for name in "abc":
        await lb.register(agent(name, max_connections=max_connections))


async def test_session_sticks_to_its_first_agent(lb: LoadBalancer) -> None:
    """The first request binds the session; later ones return that agent marked sticky."""
    await _three(lb)
    first = await lb.select(session_id="s")
    assert not first.sticky
    for _ in range(5):
        again = await lb.select(session_id="s")
        assert (again.agent.id, again.sticky) == (first.agent.id, True)


async def test_sessions_spread_over_agents(lb: LoadBalancer) -> None:
    """Different sessions bind through the strategy, so they do not all land on one agent."""
    await _three(lb)
    bound = {(await lb.select(session_id=f"s{i}")).agent.id for i in range(3)}
    assert bound == {"a", "b", "c"}


async def test_full_agent_spills_over_and_keeps_binding(lb: LoadBalancer) -> None:
    """At capacity the request goes elsewhere, and the session returns once there is room."""
    await _three(lb, max_connections=1)
    home = (await lb.select(session_id="s", acquire=True)).agent.id
    spill = await lb.select(session_id="s")
    assert spill.agent.id != home
    assert not spill.sticky
    await lb.end(home, 10.0)
    back = await lb.select(session_id="s")
    assert (back.agent.id, back.sticky) == (home, True)


async def test_deregistered_agent_moves_its_sessions(lb: LoadBalancer) -> None:
    """A session bound to a removed agent rebinds on its next request and sticks there."""
    await _three(lb)
    home = (await lb.select(session_id="s")).agent.id
    await lb.deregister(home)
    moved = await lb.select(session_id="s")
    assert moved.agent.id != home
    assert not moved.sticky
    assert (await lb.select(session_id="s")).agent.id == moved.agent.id


async def test_ineligible_binding_rebinds(lb: LoadBalancer) -> None:
    """A bound agent that cannot serve this task's model yields to one that can."""
    await lb.register(agent("small", models=("llama3:8b",)))
    await lb.register(agent("big", models=("llama3:8b", "llama3:70b")))
    await lb.select(session_id="s", candidates=[agent("small", models=("llama3:8b",))])
    picked = await lb.select(Task(model="llama3:70b"), session_id="s")
    assert picked.agent.id == "big"
    assert not picked.sticky
    assert (await lb.select(session_id="s")).agent.id == "big"


async def test_binding_expires_after_idle_ttl() -> None:
    """A session idle for the TTL is forgotten; one used within it is kept."""
    clock = FakeClock()
    lb = balancer(clock, replace(BASE_RULES, session_ttl_s=60))
    await _three(lb)
    home = (await lb.select(session_id="s")).agent.id
    clock.advance(59)
    assert (await lb.select(session_id="s")).sticky  # refreshes the binding
    clock.advance(59)
    assert (await lb.select(session_id="s")).agent.id == home
    clock.advance(60)
    assert not (await lb.select(session_id="s")).sticky


async def test_sweep_drops_idle_bindings() -> None:
    """The periodic sweep removes bindings idle past the TTL and keeps fresh ones."""
    clock = FakeClock()
    lb = balancer(clock, replace(BASE_RULES, session_ttl_s=60))
    await _three(lb)
    await lb.select(session_id="old")
    clock.advance(30)
    await lb.select(session_id="new")
    clock.advance(31)
    assert await lb.sweep() == (0, 1)


async def test_sticky_sessions_can_be_turned_off() -> None:
    """With sticky sessions off, a session_id does not pin the agent."""
    lb = balancer(config=replace(BASE_RULES, sticky_sessions=False))
    await _three(lb)
    picks = [await lb.select(session_id="s") for _ in range(3)]
    assert {p.agent.id for p in picks} == {"a", "b", "c"}
    assert not any(p.sticky for p in picks)
