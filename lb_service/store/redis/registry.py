"""The registry, weight overrides and strategy, as the Redis store keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

from lb_service.model import Agent, StrategyName
from lb_service.store.base import Configuration, Limit, Registered, UnknownAgent
from lb_service.store.redis.core import RedisCore
from lb_service.store.redis.records import encode_agent


class Registry(RedisCore):
    """Registering agents, weight overrides and the strategy (one script each)."""

    async def put_agent(self, agent: Agent, now_ms: int, max_agents: int = 0) -> Registered | Limit:
        """Add or replace an agent, keeping its position, history and weight override.

        An agent not registered until now is stamped ``joined_ms = now_ms`` (slow start).
        A new id when ``max_agents`` (0 = no limit) are registered returns ``Limit.AGENTS``,
        checked in the same script that would add it.
        """
        reply = await self._eval(
            "put_agent",
            [agent.id, encode_agent(agent), now_ms, agent.parallel_slots, max_agents],
        )
        if isinstance(reply, str):
            return Limit(reply)
        outcome, version = reply
        self._observed(version)
        return Registered(outcome)

    async def delete_agent(self, agent_id: str) -> bool:
        """Remove an agent and its weight override; False if it was not registered."""
        removed, version = await self._eval("delete_agent", [agent_id])
        self._observed(version)
        return bool(removed)

    async def agents(self) -> Mapping[str, Agent]:
        """Registered agents by id, in registration order."""
        return (await self._current_config()).agents

    async def weights(self) -> Mapping[str, float]:
        """Weight overrides by agent id."""
        return (await self._current_config()).weights

    async def set_weights(
        self, weights: Mapping[str, float], *, only_registered: bool = False
    ) -> Configuration | UnknownAgent:
        """Apply all the overrides at once; returns the registry and overrides after it.

        One round trip: the script checks the ids (with ``only_registered``, an id not
        registered changes nothing and is returned as ``UnknownAgent``), applies the
        overrides, and answers with the configuration they leave; when this replica's
        cached copy was current it is updated in place instead of sent again.
        """
        sent = self._config
        args: list[str | int] = [
            sent.version if sent is not None else "",
            self._default_strategy.value,
            int(only_registered),
        ]
        for agent_id, weight in weights.items():
            args += [agent_id, repr(float(weight))]
        reply = await self._eval("set_weights", args)
        if reply[0] == "unknown-agent":
            return UnknownAgent(reply[1])
        config_version, payload, version = reply
        self._observed(version)
        if payload is None and sent is not None and version is not None:
            # The cache was current before this change, which was these overrides alone.
            applied = {agent_id: float(weight) for agent_id, weight in weights.items()}
            config = replace(
                sent, version=config_version, weights=MappingProxyType({**sent.weights, **applied})
            )
            self._cache(config)
        else:
            config = self._adopt(config_version, payload, sent)
        return Configuration(config.agents, config.weights)

    async def clear_weights(self, agent_ids: Iterable[str]) -> None:
        """Drop the overrides of these agents."""
        self._observed(await self._eval("clear_weights", list(agent_ids)))

    async def strategy(self) -> StrategyName:
        """The current strategy."""
        return (await self._current_config()).strategy

    async def set_strategy(self, strategy: StrategyName) -> StrategyName:
        """Switch strategy; returns the one replaced."""
        previous, version = await self._eval(
            "set_strategy", [strategy.value, self._default_strategy.value]
        )
        self._observed(version)
        return self._strategy_named(previous)
