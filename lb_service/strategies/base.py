"""The strategy interface: what every selection rule receives, samples and ranks."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from lb_service.model import Agent, StrategyName, Task


class Candidate(NamedTuple):
    """An eligible agent with the figures strategies rank by.

    ``avg_latency_ms`` is None until the agent's first latency sample (it holds the
    peak-EWMA estimate when the balancer ranks by it). ``capacity`` is what the agent
    can take, learned or guessed (``lb_service.capacity``), in the same units for every
    candidate of one decision; ``trusted`` says it was learned. A NamedTuple: candidates
    are built on every pick, and a tuple is built in C.
    """

    agent: Agent
    active: int
    avg_latency_ms: float | None
    weight: float
    capacity: float = 1.0
    trusted: bool = False

    @property
    def relative_load(self) -> float:
        """``(active + 1) / capacity``: the time to drain its work plus one more request."""
        return (self.active + 1) / self.capacity


@dataclass(frozen=True, slots=True)
class PickContext:
    """What a strategy may use beyond the candidates.

    ``sequence`` grows by one with every decision the balancer commits; rules that
    rotate (round-robin, tie-breaking) derive their position from it instead of
    keeping a counter, so strategies hold no state and a shared store can supply it.
    ``rng`` is the only source of randomness, injected so tests are exact.
    ``choice_count`` is how many candidates the load-ranked strategies draw before
    ranking (0: rank them all). ``peak_ewma`` tells latency-based that
    ``avg_latency_ms`` holds the peak-EWMA estimate. ``balance_factor`` is the load
    bound (``capacity.within_bound``) capability-match counts as "room".
    """

    sequence: int
    rng: random.Random
    choice_count: int = 0
    peak_ewma: bool = False
    balance_factor: float = 2.0


Rank = tuple[float, ...]


class LoadRank(NamedTuple):
    """A rank that moves with the agent's open requests, in one linear form.

    The rank with ``active`` open requests is ``(tier, max(floor, per_request x (active
    + 1) + offset))``. Every load-ranked strategy states its order this way, so a shared
    store can re-rank the compared agents on their live active counts at commit time
    with one generic comparison whose inputs the strategy computed (``LoadRank.at``):
    the rule itself is written once, in Python.
    """

    tier: float
    per_request: float
    offset: float = 0.0
    floor: float = 0.0

    def at(self, active: int) -> Rank:
        """The rank with ``active`` open requests."""
        return (self.tier, max(self.floor, self.per_request * (active + 1) + self.offset))


class Strategy(Protocol):
    """A selection rule: samples and ranks the candidates, and picks one or none.

    Candidates are never empty, already meet the task, are available and have room;
    they arrive in a stable order (registration order, or the order given by the
    caller). Each rule owns how many it compares (its sampling) and how it orders them
    (its ranking); ``rank`` is exposed so a shared store can re-rank the compared
    candidates on fresher loads at commit time.
    """

    name: StrategyName

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Sequence[Candidate]]:
        """Return the chosen candidate (None if the rule excludes them all) and those compared."""
        ...

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank | None:
        """The candidate's rank in linear form, or None for a rule that does not rank by load."""
        ...


def lowest_by_load(
    candidates: Sequence[Candidate],
    rank: Callable[[Candidate], LoadRank],
    sequence: int,
) -> Candidate:
    """``rotate_lowest`` over the candidates' load ranks at their current active counts."""
    return rotate_lowest(candidates, lambda c: rank(c).at(c.active), sequence)


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


def sample_by_capacity(
    candidates: Sequence[Candidate], count: int, rng: random.Random
) -> Sequence[Candidate]:
    """``count`` distinct candidates drawn with probability in proportion to capacity.

    The power of two choices, weighted: on equal hardware it is the uniform draw of
    Mitzenmacher's model; on uneven hardware two uniform draws land on two slow hosts
    as often as those are numerous, whatever share of the capacity they hold, and
    their queues then grow. Drawn in proportion to capacity, a host is compared as
    often as it could serve. All candidates are returned when there are no more.
    """
    if count <= 0 or len(candidates) <= count:
        return candidates
    pool = list(candidates)
    bounds = list(itertools.accumulate(c.capacity for c in pool))
    chosen: list[Candidate] = []
    for _ in range(count):
        total = bounds[-1]
        if total <= 0:
            index = int(rng.random() * len(pool))
        else:
            index = min(bisect.bisect_right(bounds, rng.random() * total), len(pool) - 1)
        chosen.append(pool.pop(index))
        if len(chosen) < count:
            bounds = list(itertools.accumulate(c.capacity for c in pool))
    return chosen
