"""The registry indexed for picking, so a decision never scans every registered agent.

For each task shape asked for, a ``Pool`` holds the registered agents that meet it, in
registration order, together with what the strategies need to pick among them without
a scan: members sorted by a strategy's rank (kept sorted as loads change), cumulative
weights for the weighted strategy, and how many members are at ``max_connections``.

The memory store owns one ``AgentIndex`` over its own dicts and tells it what changed:
a registry or weight change drops every pool (both are rare, and a pool is rebuilt with
one scan the next time its task is asked for); a load change updates, in place, the
pools that hold the agent. Pools are built lazily and at most ``max_pools`` are kept,
so tasks with ever-new requirements cost a scan each, as they would without the index.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Mapping

from lb_service.model import Agent, Task
from lb_service.requirements import meets
from lb_service.store.base import AgentStats
from lb_service.strategies.base import Candidate, Rank

_NO_STATS = AgentStats()


class AgentIndex:
    """Pools of eligible agents per task over a store's registry, loads and weight overrides."""

    def __init__(
        self,
        agents: Mapping[str, Agent],
        stats: Mapping[str, AgentStats],
        weights: Mapping[str, float],
        max_pools: int = 64,
    ) -> None:
        """Index the given live mappings (the store's own, which it keeps up to date)."""
        self._agents = agents
        self._stats = stats
        self._weights = weights
        self._max_pools = max_pools
        self._pools: dict[Task, Pool] = {}

    def pool(self, task: Task) -> Pool:
        """The registered agents that meet ``task``, in registration order (may be empty)."""
        pool = self._pools.get(task)
        if pool is None:
            if len(self._pools) >= self._max_pools:
                # Forget the oldest pool: requirements that keep changing get no index,
                # only the scan they would have had anyway.
                del self._pools[next(iter(self._pools))]
            members = tuple(a for a in self._agents.values() if meets(a, task))
            pool = self._pools[task] = Pool(members, self._candidate)
        return pool

    def registry_changed(self) -> None:
        """An agent was added, replaced or removed: every pool may have changed."""
        self._pools.clear()

    def weights_changed(self) -> None:
        """Weight overrides changed: cumulative weights (and any rank using them) are stale."""
        self._pools.clear()

    def strategy_changed(self) -> None:
        """The strategy changed: drop the orders kept for the old one, so loads stop moving them."""
        self._pools.clear()

    def load_changed(self, agent_id: str) -> None:
        """An agent's load record changed: re-rank it in every pool that holds it."""
        if self._pools and agent_id in self._agents:
            candidate = self._candidate(self._agents[agent_id])
            for pool in self._pools.values():
                pool.update(candidate)

    def _candidate(self, agent: Agent) -> Candidate:
        stats = self._stats.get(agent.id, _NO_STATS)
        weight = self._weights.get(agent.id, agent.default_weight)
        return Candidate(agent, stats.active, stats.avg_latency_ms, weight)


class Pool:
    """The agents that meet one task, in registration order, with orders kept for picking.

    A strategy reads it through ``agent_at``, ``lowest`` and ``cumulative_weights``
    (see ``strategies.base.IndexedPool``); the balancer only lets it do so while
    ``full`` is 0, because every member is then free to take a request.
    """

    def __init__(self, agents: tuple[Agent, ...], candidate: Callable[[Agent], Candidate]) -> None:
        """Index ``agents``; ``candidate`` reads an agent's current figures."""
        self.agents = agents
        self._candidate = candidate
        self._position = {agent.id: n for n, agent in enumerate(agents)}
        self._rankings: dict[Callable[[Candidate], Rank], _Ranking] = {}
        self._cumulative: tuple[tuple[Agent, ...], list[float]] | None = None
        self._full = [_is_full(candidate(agent)) for agent in agents]
        #: Members at max_connections now.
        self.full = sum(self._full)

    def __len__(self) -> int:
        return len(self.agents)

    def contains(self, agent_id: str) -> bool:
        """Whether the agent is a member."""
        return agent_id in self._position

    def agent_at(self, position: int) -> Agent:
        """The member at ``position`` in registration order."""
        return self.agents[position]

    def lowest(self, rank: Callable[[Candidate], Rank], sequence: int) -> Agent:
        """A member with the lowest ``rank``; ties take turns by ``sequence``.

        Picks exactly what ``strategies.base.rotate_lowest`` picks from the members'
        candidates: the ``sequence``-th (modulo) of the tied members in registration order.
        """
        ranking = self._rankings.get(rank)
        if ranking is None:
            ranking = self._rankings[rank] = _Ranking(rank, map(self._candidate, self.agents))
        return self.agents[ranking.lowest(sequence)]

    def cumulative_weights(self) -> tuple[tuple[Agent, ...], list[float]]:
        """The members with a positive weight, and the running sum of their weights."""
        if self._cumulative is None:
            candidates = [self._candidate(agent) for agent in self.agents]
            positive = tuple(c.agent for c in candidates if c.weight > 0)
            bounds = list(itertools.accumulate(c.weight for c in candidates if c.weight > 0))
            self._cumulative = (positive, bounds)
        return self._cumulative

    def update(self, candidate: Candidate) -> None:
        """Take in one member's new figures (a no-op for an agent that is not a member)."""
        position = self._position.get(candidate.agent.id)
        if position is None:
            return
        full = _is_full(candidate)
        if full != self._full[position]:
            self._full[position] = full
            self.full += 1 if full else -1
        for ranking in self._rankings.values():
            ranking.update(position, candidate)


class _Ranking:
    """Positions sorted by (rank, position): the lowest rank's ties lead, in position order."""

    def __init__(self, rank: Callable[[Candidate], Rank], candidates: Iterable[Candidate]) -> None:
        self._rank = rank
        self._ranks: list[Rank] = [rank(c) for c in candidates]
        self._order = sorted(zip(self._ranks, range(len(self._ranks)), strict=True))

    def lowest(self, sequence: int) -> int:
        order = self._order
        best = order[0][0]
        # Every (best, position) sorts before (best, len): that count is the number of ties.
        ties = bisect.bisect_left(order, (best, len(order)))
        return order[sequence % ties][1]

    def update(self, position: int, candidate: Candidate) -> None:
        rank = self._rank(candidate)
        old = self._ranks[position]
        if rank == old:
            return
        order = self._order
        del order[bisect.bisect_left(order, (old, position))]
        bisect.insort(order, (rank, position))
        self._ranks[position] = rank


def _is_full(candidate: Candidate) -> bool:
    limit = candidate.agent.max_connections
    return limit > 0 and candidate.active >= limit
