"""The registry, weight overrides and strategy, as the memory store keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace

from lb_service.capacity import stamp_slots
from lb_service.model import Agent, StrategyName
from lb_service.store.base import AgentStats, Configuration, Limit, Registered, UnknownAgent
from lb_service.store.memory.core import MemoryCore


class Registry(MemoryCore):
    """The registry, weight overrides and strategy, as the memory store keeps them."""

    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        """Add or replace an agent, keeping its position, history and weight override.

        An agent not registered until now is stamped ``joined_ms = now_ms`` (slow start).
        A new id when ``max_agents`` (0 = no limit) are registered returns ``Limit.AGENTS``.
        """
        known = self._agents.get(agent.id)
        if known is None and 0 < max_agents <= len(self._agents):
            return Limit.AGENTS
        stats = self._stats.get(agent.id, AgentStats())
        if agent.id not in self._agents:
            stats = replace(stats, joined_ms=now_ms)
        self._stats[agent.id] = stamp_slots(stats, agent.parallel_slots, now_ms)
        if self._agents.get(agent.id) != agent:
            self._index.registry_changed()
        self._agents[agent.id] = agent
        self._bump()
        if known is None:
            return Registered.ADDED
        return Registered.UNCHANGED if known == agent else Registered.CHANGED

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its weight override; False if it was not registered."""
        if self._agents.pop(agent_id, None) is None:
            return False
        self._weights.pop(agent_id, None)
        self._health.forget(agent_id)
        self._reports.pop(agent_id, None)
        self._index.registry_changed()
        self._bump()
        return True

    async def agents(self) -> Mapping[str, Agent]:
        """Registered agents by id, in registration order."""
        return self._agents_view

    async def weights(self) -> Mapping[str, float]:
        """Weight overrides by agent id."""
        return self._weights_view

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        """Apply all the overrides at once; returns the registry and overrides after it.

        With ``only_registered`` an id not registered changes nothing and is returned as
        ``UnknownAgent``. No overrides change nothing.
        """
        if only_registered:
            for agent_id in weights:
                if agent_id not in self._agents:
                    return UnknownAgent(agent_id)
        if weights:
            self._weights.update(weights)
            self._index.weights_changed()
            self._bump()
        return Configuration(self._agents_view, self._weights_view)

    async def clear_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the overrides of these agents."""
        for agent_id in agent_ids:
            self._weights.pop(agent_id, None)
        self._index.weights_changed()
        self._bump()

    async def strategy(self) -> StrategyName:
        """The current strategy."""
        return self._strategy

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy; returns the one replaced."""
        previous, self._strategy = self._strategy, strategy
        self._bump()
        return previous
