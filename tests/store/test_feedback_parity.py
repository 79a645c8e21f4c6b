"""Feedback parity: the Redis store's Lua folds request ends into the same numbers as Python.

One seeded sequence of lease starts, successes, failures up to ejection and beyond,
lease expiry and ejection expiry is applied to a memory store and a Redis store; after
every step their load records, ejections and counters must agree (floats within 1e-9).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields

import pytest

from lb_service.store.base import AgentStats, Counters, RequestEnd, Store
from lb_service.store.feedback import Ejection, Feedback
from lb_service.store.memory import MemoryStore
from lb_service.store.redis import RedisStore
from tests.factories import START_MS, agent
from tests.store.conftest import EPOCH, drop_keys

TOLERANCE = 1e-9

#: Quick ejections with a short back-off cap, so the sequence ejects, returns, ejects
#: again (times_ejected grows) and goes quiet long enough to start the back-off over.
RULES = Feedback(
    smoothing=0.3,
    decay_ms=4_000.0,
    failure_penalty_ms=1_500.0,
    ejection=Ejection(consecutive_failures=3, base_ms=2_000.0, max_ms=7_000.0, max_share=0.5),
)
REGISTERED = ("a", "b", "c", "d")
#: Never registered: its ejection share is taken of every id the store knows.
CANDIDATE = "cand"


@dataclass(frozen=True)
class Step:
    """One operation of the sequence."""

    kind: str
    agent_id: str = ""
    latency_ms: float = 0.0
    failed: bool = False
    advance_ms: int = 0
    by_id: bool = True


def steps(seed: int, count: int) -> list[Step]:
    """A seeded mix of starts and ends; agent "a" fails far more often than the others."""
    rng = random.Random(seed)
    out: list[Step] = []
    for _ in range(count):
        advance = rng.choice([0, 1, 7, 250, 600, 1_200, 3_333, 9_000])
        roll = rng.random()
        agent_id = rng.choice((*REGISTERED, CANDIDATE))
        if roll < 0.35:
            out.append(Step("start", agent_id, advance_ms=advance))
        elif roll < 0.9:
            failure_rate = 0.95 if agent_id in ("a", CANDIDATE) else 0.25
            out.append(
                Step(
                    "end",
                    agent_id,
                    latency_ms=round(rng.uniform(1.0, 4_000.0), 3),
                    failed=rng.random() < failure_rate,
                    advance_ms=advance,
                    by_id=rng.random() < 0.7,
                )
            )
        elif roll < 0.96:
            out.append(Step("expire-leases", advance_ms=advance))
        else:
            out.append(Step("expire-ejections", advance_ms=advance))
    return out


class Driver:
    """Applies steps to one store, tracking the open request ids per agent."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.now = START_MS
        self.open: dict[str, list[str]] = {}

    async def apply(self, step: Step) -> object:
        """Run one step; returns what the store answered (compared across stores too)."""
        self.now += step.advance_ms
        store = self.store
        if step.kind == "start":
            request_id = await store.open_lease(step.agent_id, self.now)
            self.open.setdefault(step.agent_id, []).append(request_id)
            return request_id
        if step.kind == "end":
            held = self.open.get(step.agent_id, [])
            request_id = held.pop() if step.by_id and held else ""
            result = await store.end_request(
                RequestEnd(step.agent_id, request_id, step.latency_ms, step.failed, self.now, RULES)
            )
            return result
        if step.kind == "expire-leases":
            expired = await store.expire_leases(self.now - 5_000, self.now, RULES)
            for lease in expired:
                self.open[lease.agent_id].remove(lease.request_id)
            return expired
        return sorted(await store.expire_ejections(self.now))


def same_stats(left: Mapping[str, AgentStats], right: Mapping[str, AgentStats]) -> list[str]:
    """Field-by-field differences between two stats mappings (floats within TOLERANCE)."""
    problems = []
    if set(left) != set(right):
        problems.append(f"ids differ: {sorted(left)} vs {sorted(right)}")
    for agent_id in set(left) & set(right):
        for field in fields(AgentStats):
            a, b = getattr(left[agent_id], field.name), getattr(right[agent_id], field.name)
            if isinstance(a, float) and isinstance(b, float):
                if not math.isclose(a, b, rel_tol=0.0, abs_tol=TOLERANCE):
                    problems.append(f"{agent_id}.{field.name}: {a!r} vs {b!r}")
            elif a != b:
                problems.append(f"{agent_id}.{field.name}: {a!r} vs {b!r}")
    return problems


def same_counters(left: Counters, right: Counters) -> bool:
    """Whether two counters agree (the latency sum within TOLERANCE)."""
    return math.isclose(
        left.latency_sum_ms, right.latency_sum_ms, rel_tol=0.0, abs_tol=TOLERANCE
    ) and (left.total_requests, left.latency_samples, dict(left.selections_by_agent)) == (
        right.total_requests,
        right.latency_samples,
        dict(right.selections_by_agent),
    )


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A Redis store of this test's own prefix."""
    store = RedisStore(redis_url, prefix=redis_prefix, epoch=EPOCH)
    yield store
    await store.close()
    await drop_keys(redis_url, redis_prefix)


@pytest.mark.parametrize("seed", [1, 2])
async def test_same_ends_give_the_same_figures(redis_store: RedisStore, seed: int) -> None:
    """Every step leaves both stores with equal records, ejections, counters and answers."""
    memory = MemoryStore(epoch=EPOCH)
    drivers = [Driver(memory), Driver(redis_store)]
    for driver in drivers:
        for agent_id in REGISTERED:
            await driver.store.put_agent(agent(agent_id), START_MS)
    ejected_seen = back_off_seen = fresh_starts_seen = 0
    times_ejected: dict[str, int] = {}
    for number, step in enumerate(steps(seed, 300)):
        answers = [await driver.apply(step) for driver in drivers]
        assert answers[0] == answers[1], f"step {number} {step}"
        stats = [await driver.store.stats() for driver in drivers]
        assert same_stats(*stats) == [], f"step {number} {step}"
        ejections = [dict((await d.store.pick_state("")).ejections) for d in drivers]
        assert ejections[0] == ejections[1], f"step {number} {step}"
        counters = [await driver.store.counters() for driver in drivers]
        assert same_counters(*counters), f"step {number} {step}"
        ejected_seen += bool(ejections[0])
        back_off_seen += any(s.times_ejected > 1 for s in stats[0].values())
        for agent_id, record in stats[0].items():
            # A repeat offender's multiplier starting over after a quiet max_ms.
            fresh_starts_seen += times_ejected.get(agent_id, 0) > 1 and record.times_ejected == 1
            times_ejected[agent_id] = record.times_ejected
    # The sequence really exercised ejection, its back-off and the back-off's reset.
    assert ejected_seen > 0
    assert back_off_seen > 0
    assert fresh_starts_seen > 0
