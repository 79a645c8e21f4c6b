"""``lb-service loads``: agent loads once, or as they change with ``--watch``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from lb_service.client import ClientError, LoadBalancerClient
from lb_service.client_commands.options import (
    WATCH_COUNT_TIMEOUT_S,
    UsageError,
    count,
    positive_count,
    subcommand,
)
from lb_service.client_commands.output import emit, number, plain, table, time_text
from lb_service.model import AgentHealth, AgentLoad, LoadSnapshot

#: Home the cursor and clear the screen: how a terminal table redraws in place.
_REDRAW = "\x1b[H\x1b[2J"


def add_loads(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``loads`` (with ``--watch``)."""
    loads = subcommand(commands, "loads", _loads, "show agent loads", common)
    loads.add_argument("ids", nargs="*", metavar="ID", help="agents to show (default: all)")
    loads.add_argument("--watch", action="store_true", help="keep showing updates until Ctrl-C")
    loads.add_argument(
        "--interval-ms",
        type=count,
        default=0,
        metavar="MS",
        help="with --watch: least time between updates (default: the server's floor)",
    )
    loads.add_argument(
        "--count",
        type=positive_count,
        metavar="N",
        help="with --watch: stop after N updates (for scripts)",
    )


def _loads(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    if args.watch:
        _watch(client, args)
        return
    if args.interval_ms or args.count:
        raise UsageError("--interval-ms and --count only apply with --watch")
    loads = client.loads(args.ids)
    emit(args, loads, lambda: _loads_table(loads))


def _watch(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    if args.count is None and args.timeout is not None:
        # Without --count a watch is meant to run until Ctrl-C: a limit there is a mistake.
        raise UsageError("--timeout with --watch needs --count (a watch runs until Ctrl-C)")
    # With --count a script waits for N updates: it must not wait forever when they
    # never come (a stalled server, an agent set that never changes).
    limit = (args.timeout or WATCH_COUNT_TIMEOUT_S) if args.count is not None else None
    show = _watch_renderer(args.json, sys.stdout.isatty())
    updates = client.watch(args.ids, min_interval_ms=args.interval_ms, timeout=limit)
    shown = 0
    try:
        for snapshot in updates:
            show(snapshot)
            shown += 1
            if shown == args.count:
                break
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a person stops watching: a normal end, status 0
    except ClientError as error:
        if error.code is not grpc.StatusCode.DEADLINE_EXCEEDED:
            raise
        raise ClientError(
            error.code,
            f"loads --watch got {shown} of {args.count} updates in {limit:g} s; loads "
            "only update when they change: raise --timeout or lower --count",
        ) from error
    finally:
        updates.close()


def _watch_renderer(as_json: bool, terminal: bool) -> Callable[[LoadSnapshot], None]:
    def json_line(snapshot: LoadSnapshot) -> None:
        print(json.dumps(plain(snapshot)), flush=True)

    def table(snapshot: LoadSnapshot) -> None:
        heading = f"loads at {time_text(snapshot.timestamp_ms)}"
        if terminal:
            # Redraw in place, so the table stays put and only the numbers change.
            text = f"{_REDRAW}{heading} (Ctrl-C to stop)\n{_loads_table(snapshot.loads)}"
            print(text, flush=True)
        else:
            print(f"{heading}\n{_loads_table(snapshot.loads)}\n", flush=True)

    return json_line if as_json else table


def _loads_table(loads: Sequence[AgentLoad]) -> str:
    headers = ("AGENT", "ACTIVE", "SLOTS", "AVG_LATENCY_MS", "CAPACITY_RPS", "REQUESTS",
               "FAILED", "WEIGHT", "LAST_REQUEST", "EJECTED_UNTIL", "REPORT",
               "HEALTH")  # fmt: skip
    rows = [
        (
            load.agent_id,
            str(load.active_connections),
            str(load.parallel_slots or "-"),
            f"{load.avg_latency_ms:.1f}",
            f"{load.capacity_rps:.2f}" if load.capacity_rps else "-",
            str(load.total_requests),
            str(load.failed_requests),
            number(load.weight),
            time_text(load.last_request_at_ms),
            time_text(load.ejected_until_ms),
            _report_cell(load),
            _health_cell(load),
        )
        for load in loads
    ]
    return table(headers, rows)


def _report_cell(load: AgentLoad) -> str:
    """The agent's load report in a few words, with its age: ``queued 3, kv 45%, 0.4 s ago``."""
    report = load.report
    if report is None:
        return "-"
    parts = [
        f"{name} {value}"
        for name, value in (
            ("queued", report.queued_requests),
            ("running", report.running_requests),
        )
        if value is not None
    ]
    if report.kv_cache_usage is not None:
        parts.append(f"kv {report.kv_cache_usage:.0%}")
    if report.loaded_models:
        parts.append("loaded " + "+".join(report.loaded_models))
    parts.append(f"{load.report_age_ms / 1000:.1f} s ago")
    return ", ".join(parts)


def _health_cell(load: AgentLoad) -> str:
    """``healthy``, or the state with its reason: ``unhealthy (probe: connection refused)``."""
    if load.health is AgentHealth.HEALTHY or not load.health_reason:
        return load.health.value
    return f"{load.health.value} ({load.health_reason})"
