"""Applying a config file's declared registry (agents, weights, strategy) to a running balancer."""

from __future__ import annotations

from lb_service.balancer import LoadBalancer
from lb_service.config import Declared


async def apply_declared(
    balancer: LoadBalancer, declared: Declared, previous: Declared | None = None
) -> None:
    """Make the balancer match the file: upsert its agents, drop those it no longer lists.

    Re-registering is an upsert, so agents that stay keep their active counts, latency
    history, leases and sessions. Only agents the previous file declared are removed when
    the new one omits them; agents registered over the API are left alone. Weights the
    file stops declaring return to their defaults.
    """
    for agent in declared.agents:
        await balancer.register(agent)
    if previous is not None:
        kept = {agent.id for agent in declared.agents}
        registered = {agent.id for agent in await balancer.agents()}
        for agent in previous.agents:
            if agent.id not in kept and agent.id in registered:
                await balancer.deregister(agent.id)
        dropped = set(previous.weights) - set(declared.weights)
        await balancer.reset_weights(dropped & kept)
    await balancer.update_weights(declared.weights)
    if declared.strategy is not None:
        await balancer.set_strategy(declared.strategy)
