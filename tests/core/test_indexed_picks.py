"""Picks through the store's index are exactly the picks a scan of the registry makes.

Two balancers live through the same random history of registrations, picks (with and
without acquire, with sessions), request starts and ends (successes and failures, so
agents become trusted), weight and strategy changes, waits and sweeps, on an uneven
fleet (CPU-only hosts, GPUs of several sizes, some with max_connections): one over a
MemoryStore, which decides from its index whenever every eligible agent is a candidate,
and one over a MemoryStore whose ``pick_state`` hides the index, so every pick builds a
candidate per agent (the pipeline's definition). Same clock, same seeded random source:
every answer, refusal and load, and the random source's state, must agree after every
step. Before each pick the decision itself is compared too, over one snapshot: with and
without the pool it is the same ``Decision`` (choice, compared candidates and their
ranks, sticky, bind), drawing the same random numbers.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.balancer.inputs import RERANK_LIMIT, contenders, decision_inputs
from lb_service.capacity import TRUST_COMPLETIONS
from lb_service.decision import Decision, decide, indexed
from lb_service.errors import LoadBalancerError
from lb_service.health import ProbeResult
from lb_service.model import Agent, Compute, StrategyName, Task
from lb_service.store.base import PickState
from lb_service.store.memory import MemoryStore
from lb_service.store.roles import Store
from tests.factories import FakeClock, agent


class Unindexed(MemoryStore):
    """A MemoryStore whose picks see no index."""

    def __init__(self) -> None:
        super().__init__(epoch="test")

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        state = await super().pick_state(session_id, candidate_ids)
        return state._replace(pool=None)


IDS = ("a", "b", "c", "d", "e", "f")
TASKS = (
    Task(),
    Task(),
    Task(model="llama3:70b"),
    Task(compute=Compute.GPU),
    Task(compute=Compute.CPU),
    Task(min_vram_gb=20.0),
)
CONFIGS = (
    BalancerConfig(),  # the defaults: two choices drawn by capacity, peak-EWMA
    BalancerConfig(choice_count=3, peak_ewma=False),
    BalancerConfig(choice_count=0),
    BalancerConfig(ejection_consecutive_failures=2, balance_factor=1.25),
    BalancerConfig(slow_start_window_s=5.0),  # always the scan
)

_agents = st.builds(
    lambda agent_id, big, vram, limit: agent(
        agent_id,
        vram_gb=vram,
        gpu="GPU" if vram else "",
        models=("llama3:8b", "llama3:70b") if big else ("llama3:8b",),
        max_connections=limit,
    ),
    st.sampled_from(IDS),
    st.booleans(),
    st.sampled_from((0.0, 0.0, 8.0, 16.0, 24.0, 48.0, 80.0)),
    st.sampled_from((0, 0, 0, 1, 2, 3)),
)
_sessions = st.sampled_from(("", "", "s1", "s2"))
_selects = st.tuples(st.just("select"), st.sampled_from(TASKS), _sessions, st.booleans())
_serves = st.tuples(
    st.just("serve"),
    st.sampled_from(TASKS),
    _sessions,
    st.integers(1, 3_000),
    st.sampled_from((False, False, False, True)),
)
_operations = st.one_of(
    _selects,
    _selects,
    _serves,
    _serves,
    _serves,
    st.tuples(st.just("register"), _agents),
    st.tuples(st.just("deregister"), st.sampled_from(IDS)),
    st.tuples(st.just("among"), st.sampled_from(TASKS), st.lists(st.sampled_from(IDS), min_size=1)),
    st.tuples(st.just("start"), st.sampled_from(IDS)),
    st.tuples(
        st.just("end"),
        st.integers(0, 9),
        st.floats(1.0, 3_000.0),
        st.sampled_from((False, False, True)),
    ),
    st.tuples(st.just("strategy"), st.sampled_from(list(StrategyName))),
    st.tuples(st.just("weight"), st.sampled_from(IDS), st.sampled_from((0.0, 1.0, 5.0, 80.0))),
    st.tuples(st.just("wait"), st.integers(1, 2_000)),
    st.tuples(st.just("sweep"), st.sampled_from((1.0, 90.0, 700.0))),
    st.tuples(st.just("drain"), st.sampled_from(IDS), st.booleans()),
    st.tuples(st.just("probe"), st.sampled_from(IDS), st.booleans()),
)


@dataclasses.dataclass
class _Side:
    """One balancer and what the history gave it."""

    lb: LoadBalancer
    clock: FakeClock
    rng: random.Random
    leases: list[str] = dataclasses.field(default_factory=list)
    #: Decisions compared, how many of them the pool made, and what kinds it made.
    compared: int = 0
    from_pool: int = 0
    kinds: set[str] = dataclasses.field(default_factory=set)


async def _same_decision(side: _Side, task: Task, session_id: str) -> None:
    """Over one snapshot, the decision from the pool is the scan's, with the same draws."""
    state = await side.lb._store.pick_state(session_id)
    config = side.lb.config
    inputs = decision_inputs(state, (), side.clock(), config, side.rng, config.saturation)
    assert inputs.pool is not None
    draws = [random.Random(), random.Random()]
    for rng in draws:
        rng.setstate(side.rng.getstate())
    from_pool = decide(inputs._replace(rng=draws[0]), task, session_id)
    scanned = decide(inputs._replace(rng=draws[1], pool=None), task, session_id)
    assert from_pool == scanned
    assert draws[0].getstate() == draws[1].getstate()
    if isinstance(from_pool, Decision) and isinstance(scanned, Decision):
        # What a shared store re-ranks at commit: the same agents, in the same order,
        # the choice among them and at most RERANK_LIMIT of them.
        rerank = contenders(from_pool, {})
        assert rerank == contenders(scanned, {})
        assert from_pool.choice.agent.id in {contender.agent_id for contender in rerank}
        assert len(rerank) == max(1, min(len(from_pool.compared), RERANK_LIMIT))
        if len(from_pool.compared) > RERANK_LIMIT:
            side.kinds.add("the commit re-ranks the leaders")
    side.compared += 1
    pool = inputs.pool(task)
    if inputs.slow_start_window_ms <= 0 and indexed.every_member_counts(
        pool, inputs.ejections, inputs.now_ms, inputs.out
    ):
        side.from_pool += 1
        trust = "all" if pool.trusted == len(pool) else "some" if pool.trusted else "none"
        side.kinds.add(f"from the pool: {trust} trusted")
        options = pool.options(inputs.balance_factor)
        if options is not pool:
            side.kinds.add("from the pool: exploration holds some back")
        if 0 < pool.trusted < len(pool) and len(options) > len(pool) - pool.exploring:
            side.kinds.add("from the pool: exploration releases some")
        if isinstance(from_pool, Decision):
            side.kinds.add(f"from the pool: {'sticky' if from_pool.sticky else 'strategy'}")
        else:
            side.kinds.add(f"from the pool: {from_pool.kind.value}")


async def _apply(side: _Side, op: tuple[Any, ...], check: bool) -> Any:
    """Apply one operation; return what it answered, or the refusal it met."""
    lb, leases = side.lb, side.leases
    try:
        match op:
            case ("register", new):
                return await lb.register(new)
            case ("deregister", agent_id):
                return await lb.deregister(agent_id)
            case ("select", task, session_id, acquire):
                if check:
                    await _same_decision(side, task, session_id)
                picked = await lb.select(task, session_id=session_id, acquire=acquire)
                if picked.request_id:
                    leases.append(picked.request_id)
                return (picked.agent.id, picked.sticky, picked.request_id)
            case ("serve", task, session_id, ms, failed):
                if check:
                    await _same_decision(side, task, session_id)
                picked = await lb.select(task, session_id=session_id, acquire=True)
                side.clock.advance(ms / 1000)
                await lb.end(picked.agent.id, float(ms), picked.request_id, failed=failed)
                return (picked.agent.id, picked.sticky)
            case ("among", task, ids):
                picked = await lb.select(task, candidates=[agent(i) for i in ids])
                return picked.agent.id
            case ("start", agent_id):
                leases.append(await lb.start(agent_id))
                return leases[-1]
            case ("complete", agent_id, ms):
                request_id = await lb.start(agent_id)
                side.clock.advance(ms / 1000)
                return await lb.end(agent_id, float(ms), request_id)
            case ("end", which, latency, failed):
                request_id = leases[which % len(leases)] if leases else "test-404"
                return await lb.end("", latency, request_id, failed=failed)
            case ("strategy", name):
                return await lb.set_strategy(name)
            case ("weight", agent_id, weight):
                return await lb.update_weights({agent_id: weight})
            case ("wait", ms):
                side.clock.advance(ms / 1000)
                return None
            case ("sweep", seconds):
                side.clock.advance(seconds)
                return await lb.sweep()
            case ("drain", agent_id, undrain):
                return await lb.health.drain(agent_id, undrain=undrain)
            case ("probe", agent_id, ok):
                # A probe answer as the scheduler hands it over: agents go unhealthy and
                # come back, so pools hold members out by health.
                return await lb.health.probed(agent_id, ProbeResult(ok, "" if ok else "probe: x"))
    except LoadBalancerError as error:
        return (type(error), str(error))
    raise AssertionError(op)


async def _both(
    config: BalancerConfig,
    fleet: Sequence[Agent],
    operations: Sequence[tuple[Any, ...]],
    loads_every: int = 1,
) -> _Side:
    """Run the history through both balancers, comparing after every step; the indexed side.

    Answers and the random state are compared at every step, loads (O(n)) every
    ``loads_every`` steps and at the end.
    """
    sides = []
    stores: tuple[Store, Store] = (MemoryStore(epoch="test"), Unindexed())
    for store in stores:
        clock, rng = FakeClock(), random.Random(3)
        sides.append(_Side(LoadBalancer(store, config, clock=clock, rng=rng), clock, rng))
    history = [("register", new) for new in fleet] + list(operations)
    for step, op in enumerate(history):
        got = await _apply(sides[0], op, check=True)
        expected = await _apply(sides[1], op, check=False)
        assert got == expected, (step, op)
        assert sides[0].rng.getstate() == sides[1].rng.getstate(), (step, op)
        if step % loads_every == 0 or step == len(history) - 1:
            assert await sides[0].lb.loads() == await sides[1].lb.loads(), (step, op)
    return sides[0]


@pytest.mark.slow  # ~15 s: make test-fast relies on the busy-fleet comparison below
@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(CONFIGS),
    st.lists(_agents, min_size=1, max_size=6, unique_by=lambda a: a.id),
    st.lists(_operations, min_size=30, max_size=120),
)
def test_indexed_picks_equal_scanned_picks(
    config: BalancerConfig, fleet: list[Agent], operations: list[tuple[Any, ...]]
) -> None:
    """Over any history on an uneven fleet, the indexed balancer answers as the scanning one."""
    side = asyncio.run(_both(config, fleet, operations))
    event(f"decisions from the pool: {min(side.from_pool, 10)}{'+' * (side.from_pool >= 10)}")
    event(f"decisions by a scan: {min(side.compared - side.from_pool, 10)}")
    for kind in sorted(side.kinds):
        event(kind)


FLEET = (
    agent("cpu-1"),
    agent("cpu-2", max_connections=2),
    agent("gpu-8", vram_gb=8.0, gpu="RTX 3070"),
    agent("gpu-24", vram_gb=24.0, gpu="RTX 4090", models=("llama3:8b", "llama3:70b")),
    agent("gpu-48", vram_gb=48.0, gpu="A6000", max_connections=3),
    agent("gpu-80", vram_gb=80.0, gpu="A100", models=("llama3:8b", "llama3:70b")),
)


@pytest.mark.parametrize("config", CONFIGS[:4], ids=["defaults", "three", "all", "ejecting"])
def test_a_busy_fleet_under_every_strategy_picks_alike(
    config: BalancerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long history over every strategy picks alike, and select uses the pool when it can."""
    calls = 0
    decide_from_pool = indexed.decide

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return decide_from_pool(*args)

    monkeypatch.setattr(indexed, "decide", counting)
    rng = random.Random(11)
    operations: list[tuple[Any, ...]] = []
    for strategy in StrategyName:
        operations.append(("strategy", strategy))
        for _ in range(150):
            roll = rng.random()
            task, session = rng.choice(TASKS), rng.choice(("", "", "s1", "s2"))
            if roll < 0.45:
                operations.append(("serve", task, session, rng.randrange(50, 3_000), roll < 0.04))
            elif roll < 0.6:
                operations.append(("select", task, session, True))
            elif roll < 0.75:
                operations.append(("end", rng.randrange(10), rng.uniform(1.0, 3_000.0), False))
            elif roll < 0.8:
                operations.append(("weight", rng.choice(FLEET).id, rng.choice((1.0, 5.0, 80.0))))
            else:
                operations.append(("select", task, session, False))

    # Picks without acquire stay pending for a second of a clock that barely moves here,
    # and sessions held to a looser bound keep going to their agents: either way
    # untrusted agents would hold requests and bounded exploration would take the scan
    # throughout. This test counts how often the pool answers: no hold, the older bound.
    config = dataclasses.replace(
        config, pick_hold_s=0.0, balance_factor=min(config.balance_factor, 2.0)
    )
    side = asyncio.run(_both(config, FLEET, operations))

    # Each decision the pool can make is made from it twice: compared, then for real.
    assert calls == 2 * side.from_pool
    assert side.from_pool >= side.compared // 5
    assert side.kinds >= {
        "from the pool: none trusted",
        "from the pool: some trusted",
        "from the pool: all trusted",
        "from the pool: exploration holds some back",
        "from the pool: sticky",
        "from the pool: strategy",
    }


def test_warming_fleets_whose_measured_agent_queues_pick_alike() -> None:
    """Twenty histories of held-back agents released and held again while the scale moves."""
    fleet = [
        agent("a"),
        agent("b", vram_gb=24.0, gpu="GPU"),
        agent("c", vram_gb=12.0, gpu="GPU", parallel_slots=2),
        agent("d", vram_gb=80.0, gpu="GPU", models=("llama3:8b", "llama3:70b")),
    ]
    kinds: set[str] = set()
    for seed in range(1, 21):
        rng = random.Random(seed)
        operations: list[tuple[Any, ...]] = [("complete", "a", 1_000)] * TRUST_COMPLETIONS
        operations += [("start", "b"), ("start", "c"), ("start", "d")]  # each holds one
        for _ in range(60):
            roll = rng.random()
            if roll < 0.6:
                task, session = rng.choice(TASKS[:2]), rng.choice(("", "s1"))
                operations.append(("select", task, session, True))
            elif roll < 0.8:
                operations.append(("end", rng.randrange(10), rng.uniform(200.0, 3_000.0), False))
            else:  # the measured agent's figure moves, and the guesses' scale with it
                operations.append(("complete", "a", rng.randrange(200, 3_000)))
        kinds |= asyncio.run(_both(BalancerConfig(), fleet, operations)).kinds
    assert "from the pool: exploration holds some back" in kinds
    assert "from the pool: exploration releases some" in kinds


def _large_history(
    size: int, seed: int, trusted: float
) -> tuple[list[Agent], list[tuple[Any, ...]]]:
    """An uneven fleet of ``size`` and a seeded history over it, ``trusted`` of it warmed up."""
    rng = random.Random(seed)
    fleet = [
        agent(
            f"agent-{n:05d}",
            vram_gb=(vram := rng.choice((0.0, 0.0, 8.0, 16.0, 24.0, 48.0, 80.0))),
            gpu="GPU" if vram else "",
            models=("llama3:8b", "llama3:70b") if n % 7 == 0 else ("llama3:8b",),
            max_connections=rng.choice((0, 0, 0, 0, 0, 4)),
        )
        for n in range(size)
    ]
    operations: list[tuple[Any, ...]] = [
        ("complete", member.id, rng.randrange(100, 4_000))
        for member in fleet
        if rng.random() < trusted
        for _ in range(TRUST_COMPLETIONS)
    ]
    for strategy in (StrategyName.LEAST_CONNECTIONS, *StrategyName):
        operations.append(("strategy", strategy))
        for _ in range(60):
            roll = rng.random()
            task, session = rng.choice(TASKS), rng.choice(("", "", "s1", "s2"))
            if roll < 0.5:
                operations.append(("serve", task, session, rng.randrange(50, 3_000), roll < 0.02))
            elif roll < 0.7:
                operations.append(("select", task, session, roll < 0.6))
            elif roll < 0.85:
                operations.append(("end", rng.randrange(10), rng.uniform(1.0, 3_000.0), False))
            elif roll < 0.9:
                member = rng.choice(fleet).id
                operations.append(("weight", member, rng.choice((0.0, 1.0, 80.0))))
            else:
                operations.append(("wait", rng.randrange(1, 5_000)))
    return fleet, operations


@pytest.mark.slow  # up to 6 s a fleet, ~14 s in all
@pytest.mark.parametrize(
    ("size", "trusted"),
    [(40, 1.0), (40, 0.5), (300, 0.3), (1_100, 0.0), (1_100, 0.2)],
    ids=["40-warm", "40-mixed", "300-mixed", "1100-cold", "1100-mixed"],
)
def test_large_fleets_pick_alike(size: int, trusted: float) -> None:
    """Past one tree node (33 members) and two levels (1,025), pool picks are the scan's."""
    fleet, operations = _large_history(size, seed=size, trusted=trusted)

    side = asyncio.run(_both(BalancerConfig(), fleet, operations, loads_every=25))

    # Fewer than half: picks with a session bound to an agent past its bound, or
    # while a pick is pending at a full agent, scan.
    assert side.from_pool >= 20
    trust = {1.0: "all", 0.0: "none"}.get(trusted, "some")
    assert f"from the pool: {trust} trusted" in side.kinds
    assert "the commit re-ranks the leaders" in side.kinds  # a full scan compared them all
    if trust == "some":  # an untrusted agent holding a request is held back, not scanned
        assert "from the pool: exploration holds some back" in side.kinds


@pytest.mark.slow  # ~10 s
@settings(max_examples=10, deadline=None)
@given(st.integers(33, 200), st.integers(0, 2**32), st.sampled_from((0.0, 0.3, 1.0)))
def test_random_large_fleets_pick_alike(size: int, seed: int, trusted: float) -> None:
    """Seeded histories over fleets of 33 to 200 agents pick alike through the pool or not."""
    fleet, operations = _large_history(size, seed, trusted)

    asyncio.run(_both(BalancerConfig(), fleet, operations, loads_every=25))
