"""The client commands of ``lb-service``: agents, leases, loads, weights, strategy, health.

Each command makes its calls through LoadBalancerClient and prints an aligned table,
or with ``--json`` one JSON document (one JSON line per update for ``loads --watch``).
Exit status: 0 on success, the gRPC status code of a failed call otherwise (9
FAILED_PRECONDITION, 14 UNAVAILABLE, 16 UNAUTHENTICATED, 4 DEADLINE_EXCEEDED when
``loads --watch --count`` runs out of time or ``drain --wait`` before the agent's requests
ended, ...), 2 for usage errors (with the command's
own usage), 1 from ``health`` when the server is not serving, 130 when interrupted
(except ``loads --watch``, which Ctrl-C ends normally).

One module a behaviour: ``agents`` (the registry), ``requests`` (select, start, end),
``loads`` (loads and --watch), ``admin`` (stats, weights, strategy), ``health`` (drain,
heartbeat, the server's health); beside them ``options`` (argument types and the
connection options), ``output`` (tables, JSON, errors) and ``running`` (adding the
commands to the parser and running one).
"""

from __future__ import annotations

from lb_service.client_commands.health import DRAIN_INCOMPLETE, DRAIN_WAIT_TIMEOUT_S, NOT_HEALTHY
from lb_service.client_commands.options import (
    TARGET_ENV,
    TOKEN_ENV,
    WATCH_COUNT_TIMEOUT_S,
    UsageError,
    add_target,
)
from lb_service.client_commands.output import NO_AGENTS_REASON
from lb_service.client_commands.running import add_commands, run

__all__ = [
    "DRAIN_INCOMPLETE",
    "DRAIN_WAIT_TIMEOUT_S",
    "NOT_HEALTHY",
    "NO_AGENTS_REASON",
    "TARGET_ENV",
    "TOKEN_ENV",
    "WATCH_COUNT_TIMEOUT_S",
    "UsageError",
    "add_commands",
    "add_target",
    "run",
]
