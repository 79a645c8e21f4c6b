"""``lb-service stats``, ``weights`` and ``strategy``: counters and the balancer's settings."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from lb_service.client import LoadBalancerClient
from lb_service.client_commands.options import subcommand, weight
from lb_service.client_commands.output import columns, emit, number, table
from lb_service.model import Statistics, StrategyName


def add_admin(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``stats``, ``weights get | set`` and ``strategy get | set``."""
    subcommand(commands, "stats", _stats, "show service-wide counters", common)

    weights = commands.add_parser("weights", help="override agent weights")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    subcommand(actions, "get", _weights_get, "show every agent's effective weight", common)
    text = "override weights, all or none"
    set_weights = subcommand(actions, "set", _weights_set, text, common)
    set_weights.add_argument("weights", nargs="+", type=weight, metavar="ID=WEIGHT")

    strategy = commands.add_parser("strategy", help="show or change the selection strategy")
    actions = strategy.add_subparsers(dest="action", required=True, metavar="ACTION")
    subcommand(actions, "get", _strategy_get, "show the current strategy", common)
    set_strategy = subcommand(actions, "set", _strategy_set, "change the strategy", common)
    names = [s.value for s in StrategyName]
    set_strategy.add_argument(
        "name", choices=names, metavar="NAME", help=f"one of: {', '.join(names)}"
    )


def _stats(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    stats = client.statistics()
    emit(args, stats, lambda: _stats_text(stats))


def _stats_text(stats: Statistics) -> str:
    summary = columns(
        [
            ("strategy", stats.strategy.value),
            ("selections", str(stats.total_selections)),
            ("failed selections", str(stats.failed_selections)),
            ("requests", str(stats.total_requests)),
            ("active", str(stats.active_connections)),
            ("avg latency ms", f"{stats.avg_latency_ms:.1f}"),
        ],
    )
    per_agent = sorted(stats.selections_by_agent.items())
    if not per_agent:
        return summary
    rows = [(agent_id, str(count)) for agent_id, count in per_agent]
    return f"{summary}\n\n{table(('AGENT', 'SELECTIONS'), rows)}"


def _weights_get(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    # GetLoads, not an empty UpdateWeights: reading must not need the admin token.
    weights = {load.agent_id: load.weight for load in client.loads()}
    _emit_weights(args, weights)


def _weights_set(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    _emit_weights(args, client.update_weights(dict(args.weights)))


def _emit_weights(args: argparse.Namespace, weights: Mapping[str, float]) -> None:
    rows = [(agent_id, number(weight)) for agent_id, weight in sorted(weights.items())]
    emit(args, weights, lambda: table(("AGENT", "WEIGHT"), rows))


def _strategy_get(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    strategy = client.statistics().strategy
    emit(args, {"strategy": strategy}, lambda: strategy.value)


def _strategy_set(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    strategy = StrategyName(args.name)
    previous = client.set_strategy(strategy)
    document = {"strategy": strategy, "previous": previous}
    emit(args, document, lambda: f"strategy {strategy.value} (was {previous.value})")
