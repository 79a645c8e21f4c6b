"""The registry indexed for picking, so a decision need not build a candidate per agent.

For each task shape asked for, a ``Pool`` (``store.pool``) holds the registered agents
that meet it, in registration order, with what the decision pipeline reads about them
kept up to date. The memory store owns one ``AgentIndex`` over its own dicts (the Redis
store one over each replica's copy of the records, ``store.redis.mirror``) and tells it
what changed: a registry or weight change drops every pool (both are rare; a pool is
rebuilt with one scan the next time its task is asked for); a load change (a lease opened
or closed, a request ended, a lease expired) updates, in place, each pool holding the
agent: O(1) for its counts and O(log n) for each tree a new capacity touches. Pools are
built lazily and at most ``max_pools`` are kept, so tasks with ever-new requirements cost
a scan each, as they would without the index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lb_service.model import Agent, Task
from lb_service.requirements import meets
from lb_service.store.base import AgentStats
from lb_service.store.pool import NO_STATS, Pool

__all__ = ["AgentIndex", "Pool", "PoolLookup"]

#: What a store hands out in ``PickState.pool``: the pool of the agents meeting a task.
PoolLookup = Callable[[Task], Pool]


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
            members = [agent for agent in self._agents.values() if meets(agent, task)]
            pool = self._pools[task] = Pool(members, self._stats, self._weights, task.model)
        return pool

    def registry_changed(self) -> None:
        """An agent was added, replaced or removed: every pool may have changed."""
        self._pools.clear()

    def weights_changed(self) -> None:
        """Weight overrides changed: the members' weights and running weight sums are stale."""
        self._pools.clear()

    def load_changed(self, agent_id: str) -> None:
        """An agent's load record changed: update it in every pool that holds it."""
        if self._pools and agent_id in self._agents:
            record = self._stats.get(agent_id, NO_STATS)
            for pool in self._pools.values():
                pool.update(agent_id, record)
