"""``lb-service drain``, ``heartbeat`` and ``health``: agents' health and the server's."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

from lb_service.client import ClientError, LoadBalancerClient
from lb_service.client_commands.options import UsageError, count, seconds, subcommand
from lb_service.client_commands.output import describe_error, emit
from lb_service.model import LoadReport

#: Seconds ``drain --wait`` waits for the agent's open requests to end unless --timeout says.
DRAIN_WAIT_TIMEOUT_S = 300.0

#: Exit status of ``drain --wait`` when requests remain at the timeout (DEADLINE_EXCEEDED).
DRAIN_INCOMPLETE = 4

#: Exit status of ``health`` when the server is not SERVING (or cannot be asked).
NOT_HEALTHY = 1


def add_health(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``drain``, ``heartbeat`` and ``health``."""
    text = (
        "drain an agent: no new picks, its open requests end normally (--undo takes it "
        "back; --wait waits until none is open, exit 4 if some remain at --timeout)"
    )
    drain = subcommand(commands, "drain", _drain, text, common)
    drain.add_argument("agent", metavar="AGENT", help="id of the agent to drain")
    drain.add_argument("--undo", action="store_true", help="end the drain: picks resume")
    drain.add_argument(
        "--wait",
        action="store_true",
        help=f"then wait until its open requests are 0 (at most --timeout, default "
        f"{DRAIN_WAIT_TIMEOUT_S:g} s)",
    )
    drain.add_argument(
        "--interval",
        type=seconds,
        default=1.0,
        metavar="SECONDS",
        help="with --wait: time between two looks at its open requests (default 1)",
    )
    text = "send one heartbeat for an agent registered with --heartbeat-ttl-ms"
    beat = subcommand(commands, "heartbeat", _heartbeat, text, common)
    beat.add_argument("agent", metavar="AGENT", help="id of the agent that is alive")
    report = beat.add_argument_group(
        "load report", "with any of these, the heartbeat carries the agent's load report"
    )
    report.add_argument("--queued", type=count, metavar="N", help="requests waiting for a slot")
    report.add_argument("--running", type=count, metavar="N", help="requests being served")
    report.add_argument(
        "--kv-cache", type=float, metavar="SHARE", help="share of the KV cache in use, in [0, 1]"
    )
    report.add_argument(
        "--loaded-model",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model held in memory now (repeat for each)",
    )
    subcommand(
        commands,
        "health",
        _health,
        "check the server's grpc.health.v1 status: exit 0 when SERVING, 1 otherwise "
        "(for container health checks)",
        common,
    )


#: How ``drain --wait`` reads the time and waits between looks (tests replace them).
_clock: Callable[[], float] = time.monotonic

_sleep: Callable[[float], None] = time.sleep


def _drain(client: LoadBalancerClient, args: argparse.Namespace) -> int:
    if args.undo and args.wait:
        raise UsageError("--wait waits for a drain to complete; it does not go with --undo")
    active = client.drain(args.agent, undrain=args.undo)
    if args.undo:
        emit(args, {"agent": args.agent, "draining": False}, lambda: f"{args.agent}: undrained")
        return 0
    if args.wait:
        limit = args.timeout or DRAIN_WAIT_TIMEOUT_S
        deadline = _clock() + limit
        while active and _clock() < deadline:
            _sleep(min(args.interval, max(0.0, deadline - _clock())))
            active = client.loads([args.agent])[0].active_connections
        if active:
            document = {"agent": args.agent, "draining": True, "active_connections": active}
            emit(args, document, lambda: f"{args.agent}: draining, {active} request(s) open")
            print(
                f"lb-service: drain of {args.agent} incomplete: {active} request(s) still "
                f"open after {limit:g} s; wait longer (--timeout) or check the dispatchers",
                file=sys.stderr,
            )
            return DRAIN_INCOMPLETE
    document = {"agent": args.agent, "draining": True, "active_connections": active}
    done = "drained" if args.wait else f"draining, {active} request(s) open"
    emit(args, document, lambda: f"{args.agent}: {done}")
    return 0


def _heartbeat(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    report = None
    if (
        args.queued is not None
        or args.running is not None
        or args.kv_cache is not None
        or (args.loaded_model)
    ):
        report = LoadReport(
            queued_requests=args.queued,
            running_requests=args.running,
            kv_cache_usage=args.kv_cache,
            loaded_models=tuple(args.loaded_model),
        )
    client.heartbeat(args.agent, report)
    said = " (load report kept)" if report is not None else ""
    emit(
        args,
        {"agent": args.agent, "report": report is not None},
        lambda: f"{args.agent}: alive{said}",
    )


def _health(client: LoadBalancerClient, args: argparse.Namespace) -> int:
    try:
        status = client.health()
    except ClientError as error:
        # A probe needs one answer, healthy or not: every failure is "not healthy" (1).
        print(f"lb-service: not healthy: {describe_error(error, args)}", file=sys.stderr)
        return NOT_HEALTHY
    serving = status == "SERVING"
    emit(args, {"status": status}, lambda: f"{args.target}: {status}")
    return 0 if serving else NOT_HEALTHY
