"""Limits: candidates, agents, sessions, leases and sizes are refused at the limit, unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.errors import InvalidArgument, LimitExceeded
from lb_service.model import Agent, Task
from lb_service.store.memory import MemoryStore
from lb_service.validation import MAX_AGENT_TEXT, MAX_ID_LENGTH
from tests.factories import FakeClock, agent, balancer

LIMITS = BalancerConfig(max_candidates=2, max_agents=2, max_sessions=2, max_leases=2)


@pytest.fixture
def store() -> MemoryStore:
    """The store under the limited balancer, to look at what changed."""
    return MemoryStore(epoch="test")


@pytest.fixture
def limited(clock: FakeClock, store: MemoryStore) -> LoadBalancer:
    """A balancer whose every limit is 2."""
    return balancer(clock, LIMITS, store=store)


async def _state(lb: LoadBalancer, store: MemoryStore) -> tuple[object, ...]:
    stats = await lb.statistics()
    return (
        await lb.agents(),
        dict(await store.stats()),
        dict(await store.leases()),
        await store.session_count(),
        stats.total_selections,
        stats.total_requests,
    )


async def test_more_candidates_than_the_limit_is_invalid(limited: LoadBalancer) -> None:
    """A pick with more candidates than max_candidates is INVALID_ARGUMENT naming the option."""
    with pytest.raises(InvalidArgument, match=r"at most 2 candidates .*\(max_candidates\)"):
        await limited.select(candidates=[agent("a"), agent("b"), agent("c")])
    assert (await limited.select(candidates=[agent("a"), agent("b")])).agent.id in {"a", "b"}


async def test_candidate_check_stops_at_the_limit(limited: LoadBalancer) -> None:
    """An oversized candidate list is refused after limit + 1 items, without reading the rest."""
    taken = 0

    def endless() -> Iterator[Agent]:
        nonlocal taken
        while True:
            taken += 1
            yield agent(f"c{taken}")

    with pytest.raises(InvalidArgument, match="max_candidates"):
        await limited.select(candidates=endless())
    assert taken == 3


async def test_one_agent_past_the_limit_is_refused(
    limited: LoadBalancer, store: MemoryStore
) -> None:
    """Registering past max_agents is LimitExceeded and changes nothing; re-registering is fine."""
    await limited.register(agent("a"))
    await limited.register(agent("b"))
    before = await _state(limited, store)
    with pytest.raises(LimitExceeded, match=r"2 agents are registered.*--max-agents"):
        await limited.register(agent("c"))
    assert await _state(limited, store) == before
    await limited.register(agent("b", vram_gb=24))
    await limited.deregister("a")
    await limited.register(agent("c"))
    assert [a.id for a in await limited.agents()] == ["b", "c"]


async def test_a_new_session_past_the_limit_is_refused(
    limited: LoadBalancer, store: MemoryStore
) -> None:
    """A pick that would bind one session too many is refused; bound sessions keep working."""
    await limited.register(agent("a"))
    await limited.select(session_id="s1")
    await limited.select(session_id="s2")
    before = await _state(limited, store)
    with pytest.raises(LimitExceeded, match=r"max_sessions.*retry without session_id"):
        await limited.select(session_id="s3")
    assert await _state(limited, store) == before
    assert (await limited.select(session_id="s1")).sticky
    assert (await limited.select()).agent.id == "a"


async def test_an_expired_binding_rebinds_without_counting_twice(
    limited: LoadBalancer, clock: FakeClock
) -> None:
    """A session whose binding expired but was not yet swept rebinds in place, within the limit."""
    await limited.register(agent("a"))
    await limited.select(session_id="s1")
    await limited.select(session_id="s2")
    clock.advance(LIMITS.session_ttl_s + 1)
    again = await limited.select(session_id="s1")
    assert (again.agent.id, again.sticky) == ("a", False)


async def test_leases_past_the_limit_are_refused(
    limited: LoadBalancer, store: MemoryStore, clock: FakeClock
) -> None:
    """Acquire and start beyond max_leases are refused; ending or expiring one makes room."""
    await limited.register(agent("a"))
    first = await limited.select(acquire=True)
    await limited.start("a")
    before = await _state(limited, store)
    with pytest.raises(LimitExceeded, match=r"2 leases are open.*max_leases"):
        await limited.start("a")
    with pytest.raises(LimitExceeded, match="max_leases"):
        await limited.select(acquire=True)
    assert await _state(limited, store) == before
    assert (await limited.select()).request_id == ""  # a pick without a lease still works
    await limited.end("a", 10.0, first.request_id)
    assert await limited.start("a")
    clock.advance(LIMITS.request_timeout_s + 1)
    await limited.sweep()
    assert await store.leases() == {}


async def test_a_refused_pick_keeps_its_own_code_at_the_limit(limited: LoadBalancer) -> None:
    """With no eligible agent the answer is still NoEligibleAgent, not the lease limit."""
    await limited.register(agent("a"))
    await limited.start("a")
    await limited.start("a")
    with pytest.raises(Exception, match="no agent serves model") as caught:
        await limited.select(Task(model="absent"), acquire=True)
    assert not isinstance(caught.value, LimitExceeded)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: agent("x" * (MAX_ID_LENGTH + 1)), "agent.id must be at most 1024 characters"),
        (lambda: agent("a", host="h" * (MAX_AGENT_TEXT + 1)), "at most 65536 characters together"),
        (
            lambda: Agent(
                id="a",
                host="10.0.0.1",
                port=11434,
                metadata={f"k{i}": "v" * 1000 for i in range(70)},
            ),
            "host, gpu, models and metadata",
        ),
    ],
)
async def test_oversized_agents_are_invalid(
    lb: LoadBalancer, build: Callable[[], Agent], message: str
) -> None:
    """An id over 1024 characters or more than 64 KiB of agent text is INVALID_ARGUMENT."""
    with pytest.raises(InvalidArgument, match=message):
        await lb.register(build())
    assert await lb.agents() == []


async def test_oversized_session_id_is_invalid(lb: LoadBalancer) -> None:
    """A session id longer than an id may be is INVALID_ARGUMENT, and nothing is bound."""
    await lb.register(agent("a"))
    with pytest.raises(InvalidArgument, match="session_id must be at most 1024"):
        await lb.select(session_id="s" * (MAX_ID_LENGTH + 1))
    assert await lb.session_count() == 0
    assert (await lb.statistics()).total_selections == 0


@pytest.mark.parametrize("name", ["max_candidates", "max_agents", "max_sessions", "max_leases"])
@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_limits_must_be_whole_and_positive(name: str, value: object) -> None:
    """A limit below 1, fractional or boolean is refused when the config is built."""
    with pytest.raises(ValueError, match=f"{name} must be a whole number >= 1"):
        BalancerConfig(**{name: value})  # type: ignore[arg-type]  # ill-typed on purpose: the check under test


async def test_sweep_forgets_idle_candidate_history(clock: FakeClock, store: MemoryStore) -> None:
    """Idle unregistered ids lose their history after the session TTL; selections stay counted."""
    lb = balancer(clock, BalancerConfig(session_ttl_s=10), store=store)
    await lb.register(agent("reg"))
    await lb.select(candidates=[agent("cand")])
    held = await lb.select(candidates=[agent("held")], acquire=True)
    clock.advance(11)
    await lb.sweep()
    assert set(await store.stats()) == {"reg", "held"}
    assert (await lb.statistics()).selections_by_agent == {"": 1, "held": 1}
    await lb.end("held", 5.0, held.request_id)
    clock.advance(11)
    await lb.sweep()
    assert set(await store.stats()) == {"reg"}
    stats = await lb.statistics()
    assert (stats.selections_by_agent, stats.total_selections) == ({"": 2}, 2)


async def test_sweep_keeps_at_most_max_agents_idle_histories(
    clock: FakeClock, store: MemoryStore
) -> None:
    """However fast new candidate ids arrive, at most max_agents idle histories survive a sweep."""
    lb = balancer(clock, BalancerConfig(max_agents=3), store=store)
    for i in range(10):
        clock.advance(0.01)
        await lb.select(candidates=[agent(f"c{i}")])
    await lb.sweep()
    assert set(await store.stats()) == {"c7", "c8", "c9"}  # the most recently used
