"""The strategy interface: what every selection rule receives and returns."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from lb_service.model import Agent, StrategyName, Task


class Candidate(NamedTuple):
    """An eligible agent with the load figures strategies rank by.

    ``avg_latency_ms`` is None until the agent's first latency sample. A NamedTuple:
    candidates are built on every sampled pick and every load change the index sees,
    and a tuple is built in C.
    """

    agent: Agent
    active: int
    avg_latency_ms: float | None
    weight: float


@dataclass(frozen=True, slots=True)
class PickContext:
    """What a strategy may use beyond the candidates.

    ``sequence`` grows by one with every decision the balancer commits; rules that
    rotate (round-robin, tie-breaking) derive their position from it instead of
    keeping a counter, so strategies hold no state and a shared store can supply it.
    ``rng`` is the only source of randomness, injected so tests are exact.
    ``peak_ewma`` tells latency-based that ``avg_latency_ms`` holds the decayed peak-EWMA
    estimate, to be weighed by the agent's active requests.
    """

    sequence: int
    rng: random.Random
    peak_ewma: bool = False


Rank = tuple[float, ...]


class IndexedPool(Protocol):
    """Eligible registered agents kept in order by the store's index (``store.index.Pool``).

    Never empty, every member meets the task and has spare capacity, in registration
    order: the same agents ``choose`` would receive as candidates, readable without
    building a candidate per agent.
    """

    def __len__(self) -> int:
        """How many members there are."""
        ...

    def contains(self, agent_id: str) -> bool:
        """Whether the agent is a member."""
        ...

    def agent_at(self, position: int) -> Agent:
        """The member at ``position`` in registration order."""
        ...

    def lowest(self, rank: Callable[[Candidate], Rank], sequence: int) -> Agent:
        """What ``rotate_lowest(candidates, rank, sequence)`` would pick."""
        ...

    def cumulative_weights(self) -> tuple[Sequence[Agent], Sequence[float]]:
        """The members with a positive weight, and the running sum of their weights."""
        ...


class Strategy(Protocol):
    """A selection rule: picks one of the candidates, or None when it will pick none.

    Candidates are never empty, already meet the task and have spare capacity; they
    arrive in a stable order (registration order, or the order given by the caller).
    Every rule picks in two ways that must agree: ``choose`` from candidates (the
    definition, used for the candidates a caller passes) and ``choose_indexed`` from
    the index of registered agents (used for them, so no pick scans the registry).
    """

    name: StrategyName

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> Candidate | None:
        """Return the chosen candidate, or None if the rule excludes them all."""
        ...

    def choose_indexed(self, pool: IndexedPool, task: Task, ctx: PickContext) -> Agent | None:
        """Return the agent ``choose`` would pick from the pool's members' candidates."""
        ...


def rotate_lowest(
    candidates: Sequence[Candidate], key: Callable[[Candidate], Rank], sequence: int
) -> Candidate:
    """Return a candidate with the lowest ``key``; ties take turns by ``sequence``.

    Rotating ties (rather than taking the first) keeps equal agents equally busy when
    loads are not reported back, e.g. for selections made without ``acquire``.
    """
    ranks = [key(c) for c in candidates]
    best = min(ranks)
    ties = [c for c, rank in zip(candidates, ranks, strict=True) if rank == best]
    return ties[sequence % len(ties)]
