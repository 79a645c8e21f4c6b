"""The strategy interface: what every selection rule receives, samples and ranks.

A rule chooses among candidates (``Strategy.choose``, its definition) or, when the
store's index holds the eligible agents and every one of them is a candidate, straight
from the index (``Strategy.choose_from_pool``): the same choice, the same candidates
compared and the same random numbers drawn, built for the few agents it looks at
instead of for every eligible one.
"""

from __future__ import annotations

import abc
import heapq
import random
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

from lb_service.capacity import parallel_slots
from lb_service.model import Agent, StrategyName, Task

if TYPE_CHECKING:
    from lb_service.strategies.sampling import CapacityTrees


class Candidate(NamedTuple):
    """An eligible agent with the figures strategies rank by.

    ``avg_latency_ms`` is None until the agent's first latency sample (it holds the
    peak-EWMA estimate when the balancer ranks by it). ``capacity`` is what the agent
    can take, learned or guessed (``lb_service.capacity``), in the same units for every
    candidate of one decision; ``trusted`` says it was learned, and ``prior`` is the
    hardware guess (``capacity.hardware_capacity``), which an untrusted candidate's
    capacity is, times the decision's ``PickContext.scale``. A NamedTuple: candidates
    are built on every pick, and a tuple is built in C.
    """

    agent: Agent
    active: int
    avg_latency_ms: float | None
    weight: float
    capacity: float = 1.0
    trusted: bool = False
    prior: float = 1.0
    #: When the latency figure took its last sample (unix ms; 0 = never).
    latency_at_ms: int = 0
    #: How many of the agent's average requests one of the task's model is worth
    #: (``lb_service.model_cost``; 1 until learned).
    service_factor: float = 1.0
    #: Parallel slots the rank counts (``capacity.ranked_slots``; 0: the agent's guess).
    slots: int = 0

    @property
    def slot_count(self) -> int:
        """The parallel slots the rank counts: as given, else ``capacity.parallel_slots``."""
        return self.slots or parallel_slots(self.agent)

    @property
    def relative_load(self) -> float:
        """``(active + 1) / capacity``: the time to drain its work plus one more request."""
        return (self.active + 1) / self.capacity


class PickContext(NamedTuple):
    """What a strategy may use beyond the candidates.

    ``sequence`` grows by one with every decision the balancer commits; rules that
    rotate (round-robin, tie-breaking) derive their position from it instead of
    keeping a counter, so strategies hold no state and a shared store can supply it.
    ``rng`` is the only source of randomness, injected so tests are exact.
    ``choice_count`` is how many candidates the load-ranked strategies draw before
    ranking (0: rank them all). ``peak_ewma`` tells latency-based that
    ``avg_latency_ms`` holds the peak-EWMA estimate. ``balance_factor`` is the load
    bound (``capacity.within_bound``) capability-match counts as "room". ``scale`` is
    what untrusted candidates' hardware guesses are multiplied by (``capacity.scale``).
    ``now_ms`` is the decision's time and ``decay_ms`` the peak-EWMA time constant,
    with which latency-based fades an old latency estimate.
    A NamedTuple: one is built per decision, in C.
    """

    sequence: int
    rng: random.Random
    choice_count: int = 0
    peak_ewma: bool = False
    balance_factor: float = 3.0
    scale: float = 1.0
    now_ms: int = 0
    decay_ms: float = 10_000.0


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


#: The candidates a rule compared, each with its load rank (none for a rule that does not
#: rank by load): what a shared store re-ranks on fresher loads at commit time.
Ranked = Sequence[tuple[Candidate, LoadRank]]


class KeptRanks(Sequence[tuple[Candidate, LoadRank]], abc.ABC):
    """Every member of an index's pool ranked, built only when read (``Pool.least_expected_time``).

    The index keeps the ranks, so it can name the lowest without building the rest.
    """

    __slots__ = ()

    @abc.abstractmethod
    def leaders(self, choice: Candidate, count: int) -> Ranked:
        """``choice`` and the ``count - 1`` other members ranked lowest, ``choice`` first."""


def leaders(ranked: Ranked, choice: Candidate, count: int) -> Ranked:
    """``choice`` and the others ranked lowest at their active counts, at most ``count``.

    What a shared store re-ranks at commit when a rule compared many: the picks other
    replicas commit between this replica's read and its commit can fill only so many
    of the lowest, and a commit that re-ranks every agent of a large fleet costs O(n).
    """
    if len(ranked) <= count:
        return ranked
    if isinstance(ranked, KeptRanks):
        return ranked.leaders(choice, count)
    chosen = choice.agent.id
    own = [pair for pair in ranked if pair[0].agent.id == chosen]
    others = heapq.nsmallest(
        count - len(own),
        (pair for pair in ranked if pair[0].agent.id != chosen),
        key=lambda pair: pair[1].at(pair[0].active),
    )
    return own + others


class IndexedPool(Protocol):
    """The eligible registered agents as the store's index keeps them (``store.pool.Pool``).

    Members are in registration order; ``candidate(n)`` is the candidate a scan builds
    for the n-th, with the latency figure ``peak_ewma`` asks for.
    """

    def __len__(self) -> int:
        """The number of members."""
        ...

    def candidate(self, position: int, peak_ewma: bool) -> Candidate:
        """The member at ``position`` as a candidate."""
        ...

    def candidates(self, peak_ewma: bool) -> Sequence[Candidate]:
        """Every member as a candidate, in order (O(n): for rules that look at them all)."""
        ...

    def capacities(self) -> CapacityTrees:
        """The members' capacities as sum trees, for draws in proportion to capacity."""
        ...

    def least_expected_time(self, sequence: int) -> tuple[Candidate, Ranked]:
        """The member with the shortest ``expected_time_rank`` (ties in turn by ``sequence``).

        What ``lowest_by_load`` over every member by that rank picks, and every member
        ranked; the index keeps the ranks so this is O(log n).
        """
        ...

    def weight_bounds(self) -> tuple[Sequence[int], Sequence[float]]:
        """The positions of the members weighing more than 0, and their running weight sum."""
        ...


class Strategy(Protocol):
    """A selection rule: samples and ranks the candidates, and picks one or none.

    Candidates are never empty, already meet the task, are available and have room;
    they arrive in a stable order (registration order, or the order given by the
    caller). Each rule owns how many it compares (its sampling) and how it orders them
    (its ranking); ``rank`` is exposed so a shared store can re-rank the compared
    candidates on fresher loads at commit time.
    """

    name: StrategyName
    #: Candidates compared when the ``choice_count`` option is left to the strategy
    #: (0: every one). Rules that do not sample ignore it.
    default_choice_count: int

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """Return the chosen candidate (None if the rule excludes them all) and those compared.

        The compared candidates come with their ``load_rank``s, computed once while
        choosing; a rule that does not rank by load compares none.
        """
        ...

    def choose_from_pool(
        self, pool: IndexedPool, task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """``choose`` over every member of ``pool``: the same answer and random draws."""
        ...

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank | None:
        """The candidate's rank in linear form, or None for a rule that does not rank by load."""
        ...


def expected_time_rank(candidate: Candidate, tier: float = 0.0) -> LoadRank:
    """A new request's expected time on the candidate, in linear form, behind ``tier``.

    Its own service time, ``service_factor`` x the agent's mean ``slots / capacity``,
    plus, once every slot is busy, the wait for one: ``service + max(0, active + 1 -
    slots) / capacity``. With a service factor of 1 this is ``max(slots, active + 1) /
    capacity``, the fluid limit of an agent with ``slots`` parallel slots.
    """
    capacity = candidate.capacity
    mean_service = candidate.slot_count / capacity
    service = candidate.service_factor * mean_service
    return LoadRank(tier, 1.0 / capacity, offset=service - mean_service, floor=service)


def expected_time(candidate: Candidate) -> float:
    """A new request's expected time on the candidate, loaded as it is (``expected_time_rank``)."""
    return expected_time_rank(candidate).at(candidate.active)[1]


def lowest_by_load(
    candidates: Sequence[Candidate],
    rank: Callable[[Candidate], LoadRank],
    sequence: int,
) -> tuple[Candidate, list[tuple[Candidate, LoadRank]]]:
    """``rotate_lowest`` over the candidates' load ranks at their active counts, and the ranks.

    One pass, as it runs on every pick: the lowest key so far and the candidates tied
    at it, in order, are what ``rotate_lowest`` finds with ``min`` and a filter.
    """
    ranked = []
    ties: list[Candidate] = []
    best: Rank = ()
    for candidate in candidates:
        load_rank = rank(candidate)
        ranked.append((candidate, load_rank))
        key = load_rank.at(candidate.active)
        if not ties or key < best:
            best, ties = key, [candidate]
        elif key == best:
            ties.append(candidate)
    return ties[sequence % len(ties)], ranked


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
