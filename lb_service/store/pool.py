"""A pool: the agents that meet one task, with what a decision reads kept up to date.

Per member its hardware guess, learned capacity as decisions rank it
(``capacity.ranked_capacity``; None until trusted), weight and load record, read with
its peers' prior (``lb_service.peers``, whose sums the pool keeps per class); over the
pool the open requests, the members at ``max_connections``, the trusted members, and
the untrusted ones holding ``EXPLORE_LIMIT`` requests; the capacities as sum trees
(``strategies.sampling.CapacityTrees``), from which a capacity-weighted draw descends in
O(log n) and ``capacity.scale`` is read off the roots; and, once a full scan asks, every
member's expected time in a ``MinTree``. ``lb_service.decision.indexed`` decides from a
pool when no member is full, ejected or out by health, with exactly the answer, the
compared candidates and the random draws a scan of the registry makes. Members bounded
exploration holds back are left out of the pool's ``options``, a subset pool in the same
scale (and the ones it releases come back through a second one). ``store.index``
builds and updates pools for the memory store.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import overload

from lb_service.capacity import (
    EXPLORE_LIMIT,
    hardware_capacity,
    parallel_slots,
    ranked_rate,
    release_limit,
    releases,
    scale_of,
    slots_ranked,
)
from lb_service.mintree import MinTree
from lb_service.model import Agent
from lb_service.model_cost import factor_of
from lb_service.peers import Figures, PeerIndex, figures
from lb_service.store.base import AgentStats
from lb_service.strategies.base import (
    Candidate,
    KeptRanks,
    LoadRank,
    Ranked,
    expected_time_rank,
)
from lb_service.strategies.sampling import CapacityTrees
from lb_service.sumtree import SumTree

__all__ = ["NO_STATS", "Pool"]

#: The record of an agent with none yet (what a pool reads for it).
NO_STATS = AgentStats()
_new_tuple = tuple.__new__


class Pool:
    """The agents that meet one task, in registration order, with what a decision reads.

    Strategies read it as a ``strategies.IndexedPool``; the pipeline also reads the
    counts below to tell whether every member is a candidate.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        stats: Mapping[str, AgentStats],
        weights: Mapping[str, float],
        model: str = "",
        *,
        scale_of: Pool | None = None,
        estimates: Sequence[Figures] = (),
    ) -> None:
        """Index ``agents`` with their current records and weights, for tasks asking ``model``.

        ``scale_of``: the pool whose ``capacity.scale`` the capacities are in (``options``);
        ``estimates``: then the members' estimates as that pool reads them.
        """
        self._scale_pool = scale_of
        self.agents = tuple(agents)
        self._model = model
        self._position = {agent.id: n for n, agent in enumerate(agents)}
        self._records = [stats.get(agent.id, NO_STATS) for agent in agents]
        # The estimates decisions read (with the peers' prior): a subset's from its pool.
        self._peers = None if scale_of is not None else PeerIndex(agents, self._records)
        self._estimates = list(estimates) if self._peers is None else self._peers.figures()
        self._priors = [hardware_capacity(agent) for agent in agents]
        # Each member's guessed slots (``capacity.parallel_slots``: fixed by its fields)
        # and the load at which an untrusted member is queued (``release_limit``).
        self._guessed_slots = [parallel_slots(agent) for agent in agents]
        self._queued_at = [release_limit(slots) for slots in self._guessed_slots]
        self._learned = [ranked_rate(*read[:3]) for read in self._estimates]
        self._weights = [weights.get(agent.id, agent.default_weight) for agent in agents]
        self._limits = [agent.max_connections for agent in agents]
        #: Requests in flight over the members (the stickiness bound shares them out).
        self.active = sum(record.in_flight for record in self._records)
        #: Members at max_connections.
        self.full = sum(map(_full, self._limits, self._records))
        #: Members whose capacity is learned.
        self.trusted = sum(figure is not None for figure in self._learned)
        #: Untrusted members holding EXPLORE_LIMIT requests or more, by position.
        self._held = {
            n
            for n, (figure, record) in enumerate(zip(self._learned, self._records, strict=True))
            if _exploring(figure, record)
        }
        #: Untrusted members with every guessed slot in use, by position: held back even
        #: when exploration releases the others (``decision.room.explore_bounded``).
        self._queued = {
            n
            for n, (limit, figure, record) in enumerate(
                zip(self._queued_at, self._learned, self._records, strict=True)
            )
            if _queued(limit, figure, record)
        }
        self._options: Pool | None = None
        self._releasable: Pool | None = None
        self._released: Pool | None = None
        # The learned figures of trusted members, and the guesses of the trusted ones
        # (the two totals of capacity.scale) and of the untrusted ones (their capacity
        # before scaling), each 0 for the other members.
        self._learned_tree = SumTree(0.0 if f is None else f for f in self._learned)
        self._trusted_guesses = SumTree(
            0.0 if f is None else p for p, f in zip(self._priors, self._learned, strict=True)
        )
        self._untrusted_guesses = SumTree(
            p if f is None else 0.0 for p, f in zip(self._priors, self._learned, strict=True)
        )
        self._trees = self._capacity_trees()
        self._bounds: tuple[tuple[int, ...], list[float]] | None = None
        # Every member as a candidate, per latency figure, while in use: kept up to date
        # as loads change, dropped when the scale does.
        self._candidates: dict[bool, list[Candidate]] = {}
        # Every member's expected time for a new request (strategies.base.
        # expected_time_rank), built on the first full scan asked for; kept up to date
        # as loads change, dropped when the scale moves an untrusted member's capacity.
        self._times: MinTree | None = None
        # Per member, its expected time in linear form (``expected_time_rank``), kept
        # while only its load moves: a pick, a start or an end's lease closing then
        # re-ranks it with one ``LoadRank.at``, not a new candidate.
        self._time_ranks: list[LoadRank | None] = [None] * len(self.agents)

    def __len__(self) -> int:
        """The number of members."""
        return len(self.agents)

    @property
    def exploring(self) -> int:
        """Untrusted members holding ``EXPLORE_LIMIT`` requests or more."""
        return len(self._held)

    def options(self, factor: float) -> Pool:
        """The members bounded exploration leaves in (``decision.room.explore_bounded``).

        This pool itself unless some members are trusted and some untrusted ones hold
        ``EXPLORE_LIMIT`` requests; then the others, as a pool kept up to date until
        the members held back change (a new one is built then, O(n), a few times per
        agent that joins). Its capacities are in this pool's scale, as a scan's are.
        While ``capacity.releases`` says so for the others' shortest expected time and
        that of the held-back members below ``capacity.release_limit``, those are
        released: the pool without the untrusted members whose slots are all in use,
        kept the same way. The test reads the held-back members with a slot free as a
        pool of their own, so a fleet warming up pays for them, not for the fleet.
        """
        if not self._held or not 0 < self.trusted < len(self.agents):
            return self
        if self._options is None:
            self._options = self._subset(n for n in range(len(self.agents)) if n not in self._held)
        if len(self._queued) == len(self._held):
            return self._options
        if self._releasable is None:
            self._releasable = self._subset(sorted(self._held - self._queued))
        # The releasable members' shortest stands for the released pool's: with factor >=
        # 1 the release needs one of them shorter than every kept member.
        kept, releasable = self._options, self._releasable
        if not releases(kept.shortest_expected_time(), releasable.shortest_expected_time(), factor):
            return kept
        if self._released is None:
            self._released = (
                self._subset(n for n in range(len(self.agents)) if n not in self._queued)
                if self._queued
                else self
            )
        return self._released

    def _subset(self, positions: Iterable[int]) -> Pool:
        """The members at ``positions``, as a pool in this pool's scale (kept up to date)."""
        kept = list(positions)
        return Pool(
            [self.agents[n] for n in kept],
            {self.agents[n].id: self._records[n] for n in kept},
            {self.agents[n].id: self._weights[n] for n in kept},
            self._model,
            scale_of=self,
            estimates=[self._estimates[n] for n in kept],
        )

    def position(self, agent_id: str) -> int | None:
        """The member's position in registration order; None for an agent not a member."""
        return self._position.get(agent_id)

    def holds_ejected(self, ejections: Mapping[str, int], now_ms: int) -> bool:
        """Whether a member is ejected at ``now_ms`` (``ejections``: until when, by id)."""
        position = self._position
        return any(until > now_ms and i in position for i, until in ejections.items())

    def holds_any(self, agent_ids: Mapping[str, object]) -> bool:
        """Whether one of ``agent_ids`` is a member (the agents out by health)."""
        position = self._position
        return any(agent_id in position for agent_id in agent_ids)

    def capacities(self) -> CapacityTrees:
        """The members' capacities as sum trees, with ``capacity.scale`` over the members."""
        return self._trees

    def candidate(self, position: int, peak_ewma: bool) -> Candidate:
        """The member at ``position`` as ``decision.candidates.build`` makes it."""
        record = self._records[position]
        figure = self._learned[position]
        prior = self._priors[position]
        # tuple.__new__: the same Candidate without the generated __new__, a Python
        # call that costs as much again as the rest of this method, on every pick.
        return _new_tuple(
            Candidate,
            (
                self.agents[position],
                record.in_flight,
                record.cost_ms if peak_ewma else record.avg_latency_ms,
                self._weights[position],
                prior * self._trees.scale if figure is None else figure,
                figure is not None,
                prior,
                record.cost_at_ms,
                factor_of(self._estimates[position][3], self._model),
                slots_ranked(self._guessed_slots[position], record, figure is not None),
            ),
        )

    def candidates(self, peak_ewma: bool) -> tuple[Candidate, ...]:
        """Every member as a candidate, in order: O(n) to copy, kept between changes."""
        built = self._candidates.get(peak_ewma)
        if built is None:
            built = self._candidates[peak_ewma] = [
                self.candidate(n, peak_ewma) for n in range(len(self.agents))
            ]
        return tuple(built)

    def least_expected_time(self, sequence: int) -> tuple[Candidate, Ranked]:
        """The member a full scan by expected time picks (ties in turn), and every member ranked.

        O(log n) once the ranks are kept (``MinTree``); the ranked members are built
        only if read (a shared store's commit reads the choice and the few ranked
        lowest: ``KeptRanks.leaders``).
        """
        return self.candidate(self._ranks().pick(sequence), False), _EveryMember(self)

    def shortest_expected_time(self) -> float:
        """The shortest expected time for a new request over the members: O(1) once ranked."""
        return self._ranks().low

    def shortest_expected_times(self, count: int) -> list[int]:
        """The positions of the ``count`` members of shortest expected time: O(count log n)."""
        return self._ranks().lowest(count)

    def _ranks(self) -> MinTree:
        """Every member's expected time, kept from the first time they are asked for."""
        if self._times is None:
            self._times = MinTree(self._time(n) for n in range(len(self.agents)))
        return self._times

    def weight_bounds(self) -> tuple[tuple[int, ...], list[float]]:
        """The positions of the members weighing more than 0, and their running weight sum."""
        if self._bounds is None:
            weights = self._weights
            positive = tuple(n for n, weight in enumerate(weights) if weight > 0)
            self._bounds = positive, list(itertools.accumulate(weights[n] for n in positive))
        return self._bounds

    def update(self, agent_id: str, record: AgentStats, estimates: Figures | None = None) -> None:
        """Take in one agent's new load record (a no-op for an agent that is not a member).

        Its estimates are read with its peers' prior (``lb_service.peers``): when the
        record moves its class's prior, every member of the class is taken in again. A
        subset is given ``estimates`` by its pool.
        """
        position = self._position.get(agent_id)
        if position is None:
            return
        if self._peers is None:
            self._take(position, record, estimates or figures(record, None))
            return
        for member, read in self._peers.update(position, record):
            self._take(member, record if member == position else self._records[member], read)

    def _take(self, position: int, record: AgentStats, estimates: Figures) -> None:
        """Take in one member's record and estimates, here and in the subsets."""
        agent_id = self.agents[position].id
        old = self._records[position]
        self._records[position] = record
        was = self._learned[position]
        # The same estimates (peers hand the same object back while they stand) and slots:
        # only the load moved, so the learned figure and the linear form of the time stand.
        load_only = estimates is self._estimates[position] and record.slots == old.slots
        self._estimates[position] = estimates
        if load_only:
            figure = was
        else:
            figure = ranked_rate(*estimates[:3])
            self._time_ranks[position] = None
        self.active += record.in_flight - old.in_flight
        limit = self._limits[position]
        if limit:
            self.full += _full(limit, record) - _full(limit, old)
        if _exploring(figure, record) != (position in self._held):
            self._held ^= {position}
            self._options = self._releasable = None  # other members held back: new subsets
        if _queued(self._queued_at[position], figure, record) != (position in self._queued):
            self._queued ^= {position}
            self._releasable = self._released = None
        rescaled = False
        if figure != was:
            self._learned[position] = figure
            self._learned_tree[position] = 0.0 if figure is None else figure
            if (figure is None) != (was is None):
                prior = self._priors[position]
                self.trusted += 1 if was is None else -1
                self._trusted_guesses[position] = 0.0 if figure is None else prior
                self._untrusted_guesses[position] = prior if figure is None else 0.0
            scale = self._trees.scale
            self._trees = self._capacity_trees()
            # A new scale moves every untrusted member's capacity (it is rounded, so
            # that happens a few times a run, not on every completion).
            rescaled = self._trees.scale != scale and self.trusted < len(self.agents)
        if rescaled:
            self._candidates.clear()
            self._times = None
            self._time_ranks = [None] * len(self.agents)
            # Its members are all untrusted, so it holds none whose change moved the scale
            # and would never hear of it: rebuilt when next asked for.
            self._releasable = None
        else:
            for peak_ewma, built in self._candidates.items():
                built[position] = self.candidate(position, peak_ewma)
            if self._times is not None:
                self._times[position] = self._time(position)
        # After this pool: the subsets read its scale.
        if self._options is not None:
            self._options.update(agent_id, record, estimates)
        if self._releasable is not None:
            self._releasable.update(agent_id, record, estimates)
        if self._released is not None and self._released is not self:
            self._released.update(agent_id, record, estimates)

    def _time(self, position: int) -> float:
        """The member's expected time for a new request, as a full scan ranks it.

        ``expected_time`` of its candidate, through the kept linear form.
        """
        rank = self._time_ranks[position]
        if rank is None:
            rank = self._time_ranks[position] = expected_time_rank(self.candidate(position, False))
        return rank.at(self._records[position].in_flight)[1]

    def _capacity_trees(self) -> CapacityTrees:
        if self._scale_pool is not None:
            # A subset's scale is its pool's: the same figure, summed in the same order.
            scale = self._scale_pool.capacities().scale
        else:
            scale = scale_of(self._learned_tree.total, self._trusted_guesses.total)
        return CapacityTrees(self._learned_tree, self._untrusted_guesses, scale)


class _EveryMember(KeptRanks):
    """Every member of a pool with its expected-time rank, built when read."""

    __slots__ = ("_pool",)

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def __len__(self) -> int:
        return len(self._pool)

    @overload
    def __getitem__(self, index: int) -> tuple[Candidate, LoadRank]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[Candidate, LoadRank]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> tuple[Candidate, LoadRank] | Sequence[tuple[Candidate, LoadRank]]:
        if isinstance(index, slice):
            return [self[n] for n in range(len(self))[index]]
        candidate = self._pool.candidate(range(len(self))[index], False)
        return candidate, expected_time_rank(candidate)

    def leaders(self, choice: Candidate, count: int) -> Ranked:
        """``choice`` and the ``count - 1`` other members ranked lowest: O(count log n)."""
        pool = self._pool
        chosen = pool.position(choice.agent.id)
        positions = [n for n in pool.shortest_expected_times(count) if n != chosen][: count - 1]
        if chosen is not None:
            positions.insert(0, chosen)
        return [self[n] for n in positions]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # equal to lists, so unhashable like them


def _full(limit: int, record: AgentStats) -> bool:
    return limit > 0 and record.in_flight >= limit


def _exploring(figure: float | None, record: AgentStats) -> bool:
    return figure is None and record.in_flight >= EXPLORE_LIMIT


def _queued(limit: int, figure: float | None, record: AgentStats) -> bool:
    return figure is None and record.in_flight >= limit
