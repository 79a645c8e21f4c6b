"""The LoadBalancer core: selection errors, candidates, weights, strategy and statistics."""

from __future__ import annotations

import math

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    InvalidArgument,
    NoAgentsRegistered,
    NoEligibleAgent,
)
from lb_service.model import Agent, StrategyName, Task
from tests.factories import agent


async def test_default_strategy_is_least_connections(lb: LoadBalancer) -> None:
    """A new balancer decides with least-connections, the best general choice for uneven work."""
    await lb.register(agent("a"))
    assert (await lb.select()).strategy is StrategyName.LEAST_CONNECTIONS
    assert (await lb.statistics()).strategy is StrategyName.LEAST_CONNECTIONS


async def test_no_agents_is_unavailable(lb: LoadBalancer) -> None:
    """Selecting with nothing registered and no candidates raises NoAgentsRegistered."""
    with pytest.raises(NoAgentsRegistered, match="no agents are registered"):
        await lb.select()


async def test_all_busy_is_resource_exhausted(lb: LoadBalancer) -> None:
    """When every eligible agent is at max_connections the pick is refused as busy."""
    await lb.register(agent("a", max_connections=1))
    await lb.select(acquire=True)
    with pytest.raises(AllAgentsBusy, match="all 1 eligible agent"):
        await lb.select()


async def test_failed_selections_are_counted(lb: LoadBalancer) -> None:
    """Every refused pick adds to failed_selections and none to total_selections."""
    with pytest.raises(NoAgentsRegistered):
        await lb.select()
    await lb.register(agent("a"))
    with pytest.raises(NoEligibleAgent):
        await lb.select(Task(model="missing"))
    stats = await lb.statistics()
    assert (stats.failed_selections, stats.total_selections) == (2, 0)


async def test_reregister_keeps_load_history(lb: LoadBalancer) -> None:
    """Re-registering an agent replaces its description but keeps its counts and latency."""
    await lb.register(agent("a", host="old"))
    request_id = await lb.start("a")
    await lb.end("a", 100.0)
    await lb.start("a")
    await lb.register(agent("a", host="new"))
    [load] = await lb.loads(["a"])
    assert (load.active_connections, load.total_requests, load.avg_latency_ms) == (1, 2, 100.0)
    assert (await lb.agents())[0].host == "new"
    assert request_id


async def test_deregister_unknown_is_not_found(lb: LoadBalancer) -> None:
    """Deregistering an id that is not registered raises AgentNotFound."""
    with pytest.raises(AgentNotFound, match="unknown agent 'ghost'"):
        await lb.deregister("ghost")


@pytest.mark.parametrize(
    "bad",
    [
        agent(""),
        agent("a", port=70000),
        agent("a", vram_gb=-1),
        agent("a", vram_gb=math.nan),
        agent("a", vram_gb=math.inf),
        agent("a", models=("",)),
    ],
)
async def test_malformed_agents_change_nothing(lb: LoadBalancer, bad: Agent) -> None:
    """A malformed agent is rejected as InvalidArgument and the registry stays as it was."""
    await lb.register(agent("keep"))
    with pytest.raises(InvalidArgument):
        await lb.register(bad)
    assert [a.id for a in await lb.agents()] == ["keep"]


async def test_candidates_replace_the_registry(lb: LoadBalancer) -> None:
    """With candidates the pick is made among them only, and their load is tracked by id."""
    await lb.register(agent("registered"))
    chosen = await lb.select(candidates=[agent("c1"), agent("c2")], acquire=True)
    assert chosen.agent.id in {"c1", "c2"}
    [load] = await lb.loads([chosen.agent.id])
    assert load.active_connections == 1
    other = await lb.select(candidates=[agent("c1"), agent("c2")])
    assert other.agent.id != chosen.agent.id  # least-connections saw the candidate's lease


async def test_duplicate_candidates_are_invalid(lb: LoadBalancer) -> None:
    """Two candidates with one id are rejected before anything is counted."""
    with pytest.raises(InvalidArgument, match="appears more than once"):
        await lb.select(candidates=[agent("c"), agent("c")])
    assert (await lb.statistics()).failed_selections == 0


async def test_default_weight_is_vram_or_one(lb: LoadBalancer) -> None:
    """Agents weigh their VRAM in GB, and CPU-only agents weigh 1 so they still get traffic."""
    await lb.register(agent("gpu", vram_gb=24))
    await lb.register(agent("cpu"))
    assert await lb.update_weights({}) == {"gpu": 24.0, "cpu": 1.0}


async def test_update_weights_is_all_or_nothing(lb: LoadBalancer) -> None:
    """One unknown id in an update raises AgentNotFound and no weight changes."""
    await lb.register(agent("a"))
    with pytest.raises(AgentNotFound, match="'ghost'"):
        await lb.update_weights({"a": 5.0, "ghost": 1.0})
    assert [load.weight for load in await lb.loads()] == [1.0]


@pytest.mark.parametrize("weight", [-1.0, math.nan, math.inf])
async def test_bad_weights_are_invalid(lb: LoadBalancer, weight: float) -> None:
    """Negative and non-finite weights are rejected and nothing changes."""
    await lb.register(agent("a"))
    with pytest.raises(InvalidArgument, match="finite number >= 0"):
        await lb.update_weights({"a": weight})
    assert (await lb.update_weights({})) == {"a": 1.0}


async def test_weight_zero_is_never_picked_by_weighted(lb: LoadBalancer) -> None:
    """Under weighted, an agent with weight 0 gets no traffic and all-zero is refused by name."""
    await lb.register(agent("zero"))
    await lb.register(agent("one"))
    await lb.set_strategy(StrategyName.WEIGHTED)
    assert await lb.update_weights({"zero": 0.0}) == {"zero": 0.0, "one": 1.0}
    assert {(await lb.select()).agent.id for _ in range(50)} == {"one"}
    await lb.update_weights({"one": 0.0})
    with pytest.raises(NoEligibleAgent, match="weight 0"):
        await lb.select()


async def test_weight_override_is_dropped_on_deregister(lb: LoadBalancer) -> None:
    """A re-registered agent keeps its override, a deregistered one starts again at its default."""
    await lb.register(agent("a", vram_gb=24))
    await lb.update_weights({"a": 3.0})
    await lb.register(agent("a", vram_gb=24))
    assert await lb.update_weights({}) == {"a": 3.0}
    await lb.deregister("a")
    await lb.register(agent("a", vram_gb=24))
    assert await lb.update_weights({}) == {"a": 24.0}


async def test_set_strategy_returns_previous_and_applies(lb: LoadBalancer) -> None:
    """SetStrategy reports the strategy it replaced and the next pick uses the new one."""
    await lb.register(agent("a"))
    assert await lb.set_strategy(StrategyName.ROUND_ROBIN) is StrategyName.LEAST_CONNECTIONS
    assert (await lb.select()).strategy is StrategyName.ROUND_ROBIN


async def test_round_robin_hits_each_agent_once(lb: LoadBalancer) -> None:
    """Through the balancer, N round-robin picks over N equal agents hit each exactly once."""
    for name in "abcd":
        await lb.register(agent(name))
    await lb.set_strategy(StrategyName.ROUND_ROBIN)
    assert sorted([(await lb.select()).agent.id for _ in range(4)]) == list("abcd")


async def test_least_connections_ties_rotate_without_acquire(lb: LoadBalancer) -> None:
    """Selections that report no load still spread over equally idle agents."""
    for name in "abc":
        await lb.register(agent(name))
    assert {(await lb.select()).agent.id for _ in range(3)} == {"a", "b", "c"}


async def test_statistics_add_up(lb: LoadBalancer) -> None:
    """Totals, per-agent selections, active count and mean latency agree with what happened."""
    await lb.register(agent("a"))
    await lb.register(agent("b"))
    first = await lb.select(acquire=True)
    await lb.select(acquire=True)
    await lb.end("", 100.0, request_id=first.request_id)
    await lb.end("b" if first.agent.id == "a" else "a", 300.0)
    stats = await lb.statistics()
    assert stats.total_selections == 2
    assert sum(stats.selections_by_agent.values()) == 2
    assert (stats.total_requests, stats.active_connections) == (2, 0)
    assert stats.avg_latency_ms == 200.0


def test_config_rejects_unusable_values() -> None:
    """BalancerConfig refuses a zero TTL and a smoothing factor outside (0, 1]."""
    with pytest.raises(ValueError, match="session_ttl_s"):
        BalancerConfig(session_ttl_s=0)
    with pytest.raises(ValueError, match="latency_smoothing"):
        BalancerConfig(latency_smoothing=1.5)
