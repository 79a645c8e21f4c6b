"""A request's way through the service: ``select``, ``start`` and ``end``."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from lb_service.client import DEFAULT_TARGET, LoadBalancerClient
from lb_service.client_commands.options import latency, subcommand
from lb_service.client_commands.output import emit, table
from lb_service.model import Compute, Selection


def add_select(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``select``."""
    select = subcommand(commands, "select", _select, "ask which agent takes a request", common)
    select.add_argument("--model", default="", help="model the agent must serve")
    select.add_argument("--min-vram", type=float, default=0.0, metavar="GB", help="least VRAM")
    kind = select.add_mutually_exclusive_group()
    kind.add_argument(
        "--gpu",
        dest="compute",
        action="store_const",
        const=Compute.GPU,
        default=Compute.ANY,
        help="the agent must have a GPU",
    )
    kind.add_argument(
        "--cpu",
        dest="compute",
        action="store_const",
        const=Compute.CPU,
        help="the agent must be CPU-only",
    )
    select.add_argument("--session", default="", metavar="ID", help="sticky-session key")
    select.add_argument(
        "--acquire",
        action="store_true",
        help="also open a lease and print its request id, and on stderr the "
        "'lb-service end' command that ends it (else it expires on the server)",
    )


def add_leases(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``start`` and ``end``."""
    text = "open a lease on an agent (RecordRequestStart) and print its request id"
    start = subcommand(commands, "start", _start, text, common)
    start.add_argument("agent", metavar="AGENT", help="id of the agent the request went to")
    start.add_argument(
        "--model",
        default="",
        metavar="M",
        help="the model the request asks for, so the service learns its cost on the agent",
    )
    text = "end a lease (RecordRequestEnd) with the request's latency; repeating it is harmless"
    end = subcommand(commands, "end", _end, text, common)
    end.add_argument("request_id", metavar="REQUEST_ID", help="the lease's request id")
    end.add_argument(
        "--agent",
        required=True,
        metavar="AGENT",
        help="the agent the lease is on (the server checks the lease belongs to it)",
    )
    # Required: without it 0 ms would be recorded, and the agent would look fast.
    end.add_argument(
        "--latency-ms",
        type=latency,
        required=True,
        metavar="MS",
        help="how long the request took, in ms",
    )
    end.add_argument("--failed", action="store_true", help="the request failed")


def _select(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    selection = client.select(
        model=args.model,
        min_vram_gb=args.min_vram,
        compute=args.compute,
        session_id=args.session,
        acquire=args.acquire,
    )
    emit(args, selection, lambda: _selection_table(selection))
    if selection.request_id:
        _print_end_hint(args, selection.request_id, selection.agent.id)


def _start(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    request_id = client.start(args.agent, model=args.model)
    document = {"request_id": request_id, "agent_id": args.agent}
    # The id alone on stdout, so `REQ=$(lb-service start gpu-1)` works.
    emit(args, document, lambda: request_id)
    _print_end_hint(args, request_id, args.agent)


def _end(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    client.end(args.request_id, latency_ms=args.latency_ms, agent_id=args.agent, failed=args.failed)
    outcome = "failed" if args.failed else "done"
    document = {"ended": args.request_id, "agent_id": args.agent, "failed": args.failed}
    emit(args, document, lambda: f"ended {args.request_id} on {args.agent} ({outcome})")


def _print_end_hint(args: argparse.Namespace, request_id: str, agent_id: str) -> None:
    """Print, on stderr so stdout stays parseable, the command that ends the lease."""
    command = ["lb-service", "end", request_id, "--agent", agent_id, "--latency-ms", "MS"]
    print(
        f"lease {request_id} stays open until ended (or it expires on the server); end it "
        f"with: {shlex.join([*command, *_connection_flags(args)])} [--failed]",
        file=sys.stderr,
    )


def _connection_flags(args: argparse.Namespace) -> list[str]:
    """The connection flags this run was given, so a printed command reaches the same server."""
    flags = [] if args.target == DEFAULT_TARGET else ["--target", args.target]
    if args.tls:
        flags.append("--tls")
    for flag, path in (
        ("--tls-ca", args.tls_ca),
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
        ("--token-file", args.token_file),
    ):
        if path is not None:
            flags += [flag, str(path)]
    return flags


def _selection_table(selection: Selection) -> str:
    agent = selection.agent
    row = (
        agent.id,
        f"{agent.host}:{agent.port}",
        selection.strategy.value,
        "yes" if selection.sticky else "no",
        selection.request_id or "-",
    )
    return table(("AGENT", "ADDRESS", "STRATEGY", "STICKY", "REQUEST_ID"), [row])
