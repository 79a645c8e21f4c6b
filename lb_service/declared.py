"""Applying a config file's declared registry (agents, weights, strategy) to a running balancer.

Every line logged while a file is applied carries ``cause=config``, so an agent
registered or deregistered by a reload says so; a reload ends with one line naming
what it added, removed and changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import structlog

from lb_service.balancer import LoadBalancer
from lb_service.config import (
    OPTIONS,
    ConfigError,
    Declared,
    ServiceConfig,
    parse_option,
    redact_url,
)

log = structlog.get_logger(__name__)

#: Options a running server takes from a reload (through ``Declared``); every other
#: option is read once, at start.
APPLIED_WHILE_RUNNING = frozenset({"strategy"})


async def apply_declared(
    balancer: LoadBalancer, declared: Declared, previous: Declared | None = None
) -> None:
    """Make the balancer match the file: upsert its agents, drop those it no longer lists.

    Re-registering is an upsert, so agents that stay keep their active counts, latency
    history, leases and sessions. Only agents the previous file declared are removed when
    the new one omits them; agents registered over the API are left alone. Weights the
    file stops declaring return to their defaults. With ``previous`` (a reload), one
    ``reload_applied`` line names the ids added, removed and changed.
    """
    with structlog.contextvars.bound_contextvars(cause="config"):
        registered = {agent.id: agent for agent in await balancer.agents()}
        for agent in declared.agents:
            await balancer.register(agent)
        removed: list[str] = []
        reset: list[str] = []
        if previous is not None:
            kept = {agent.id for agent in declared.agents}
            for agent in previous.agents:
                if agent.id not in kept and agent.id in registered:
                    await balancer.deregister(agent.id)
                    removed.append(agent.id)
            reset = sorted((set(previous.weights) - set(declared.weights)) & kept)
            await balancer.reset_weights(reset)
        await balancer.update_weights(declared.weights)
        replaced = None
        if declared.strategy is not None:
            replaced = await balancer.set_strategy(declared.strategy)
        if previous is None:
            return
        if (
            replaced is not None
            and previous.strategy is not None
            and replaced not in (previous.strategy, declared.strategy)
        ):
            # The file last set previous.strategy, yet another one ran: someone set it
            # over the API since, and the file has just overridden that choice.
            log.warning(
                "reload_replaces_strategy",
                strategy=declared.strategy.value if declared.strategy else None,
                replaced=replaced.value,
            )
        before = previous.weights
        log.info(
            "reload_applied",
            agents_added=[a.id for a in declared.agents if a.id not in registered],
            agents_removed=removed,
            agents_changed=[
                a.id for a in declared.agents if a.id in registered and registered[a.id] != a
            ],
            weights_changed=sorted(k for k, v in declared.weights.items() if before.get(k) != v),
            weights_reset=reset,
            strategy=declared.strategy.value if declared.strategy else None,
        )


def restart_needed(running: ServiceConfig, document: Mapping[str, Any]) -> list[str]:
    """Options a re-read file sets otherwise than the server runs with: only a restart applies them.

    They are listed in the README's order (listen, TLS, limits, …).
    An option set by a flag or an environment variable is not the file's to change; an
    option the file no longer sets counts as going back to its default; a value that
    does not parse counts as changed (a restart would reject it).
    """
    changed = []
    for option in OPTIONS:
        key = option.key
        if key in APPLIED_WHILE_RUNNING or running.sources.get(key) in {"flag", "env"}:
            continue
        if key not in document:
            wanted = option.default
        else:
            try:
                wanted = parse_option(option, document[key], "config file")
            except ConfigError:
                changed.append(key)
                continue
        if wanted != running.values[key]:
            changed.append(key)
    return changed


def warn_restart_needed(running: ServiceConfig, document: Mapping[str, Any]) -> list[str]:
    """Log one ``reload_needs_restart`` warning naming each option a reload cannot apply.

    Call it with the re-read file on every reload; returns the keys it warned about.
    """
    keys = restart_needed(running, document)
    for key in keys:
        log.warning(
            "reload_needs_restart",
            key=key,
            running=_shown(key, running.values[key]),
            file=_shown(key, document.get(key)),
        )
    return keys


def _shown(key: str, value: object) -> object:
    # A store URL may hold a password; the token itself is never an option.
    if key == "store" and value is not None:
        return redact_url(str(value))
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)
