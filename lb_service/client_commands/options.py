"""The client commands' shared command-line parts.

Argument types, the connection options every client command takes, and how a
command's parser is made.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lb_service.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, LoadBalancerClient

#: Where the bearer token comes from when --token-file is not given (as for the server).
TOKEN_ENV = "LB_ADMIN_TOKEN"

#: Where the server address comes from when --target is not given.
TARGET_ENV = "LB_TARGET"

#: Seconds ``loads --watch --count N`` waits for its N updates unless --timeout says.
WATCH_COUNT_TIMEOUT_S = 30.0

_UINT32_MAX = 2**32 - 1

#: A command: makes its calls and prints; returns its exit status (None: 0).
Handler = Callable[[LoadBalancerClient, argparse.Namespace], int | None]


class UsageError(Exception):
    """The command line is inconsistent in a way argparse cannot see; exit status 2."""


def count(text: str) -> int:
    """A whole number that fits the wire's uint32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value <= _UINT32_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {_UINT32_MAX}, got {text!r}")
    return value


def latency(text: str) -> float:
    """A latency in ms: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of ms >= 0, got {text!r}")
    return value


def positive_count(text: str) -> int:
    """A whole number from 1 that fits the wire's uint32."""
    value = count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def seconds(text: str) -> float:
    """A duration in seconds: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def pair(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as (key, value); the key must not be empty."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def weight(text: str) -> tuple[str, float]:
    """``ID=WEIGHT`` as (agent id, weight)."""
    agent_id, value = pair(text)
    try:
        return agent_id, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight must be a number, got {text!r}") from None


def add_target(parser: argparse.ArgumentParser | Any) -> None:
    """Add ``--target`` to ``parser``; it may be given before the command or after it.

    Both places leave it unset unless given, so the one given last wins and ``run``
    can fall back to LB_TARGET, then the default.
    """
    parser.add_argument(
        "--target",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help=f"server address (default: ${TARGET_ENV}, else {DEFAULT_TARGET}); several "
        "replicas: ipv4:HOST:PORT,HOST:PORT,... (calls go round robin)",
    )


def common_options() -> argparse.ArgumentParser:
    """The options every client command takes: the server connection and ``--json``."""
    common = argparse.ArgumentParser(add_help=False)
    server = common.add_argument_group("server connection")
    add_target(server)
    server.add_argument(
        "--tls", action="store_true", help="use TLS, verifying the server with the system's CAs"
    )
    server.add_argument(
        "--tls-ca", type=Path, metavar="PATH", help="PEM CA bundle to verify the server (TLS)"
    )
    server.add_argument(
        "--tls-cert", type=Path, metavar="PATH", help="PEM client certificate (mutual TLS)"
    )
    server.add_argument("--tls-key", type=Path, metavar="PATH", help="PEM key of --tls-cert")
    server.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help=f"file holding the bearer token (or set {TOKEN_ENV}); "
        "never pass the token itself, the process list would show it",
    )
    server.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help=f"deadline of each call, retries included (default: {DEFAULT_TIMEOUT_S:g}); "
        f"with loads --watch --count: the time for all N updates "
        f"(default: {WATCH_COUNT_TIMEOUT_S:g})",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def subcommand(
    parent: Any, name: str, handler: Handler, text: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    """Add the command ``name`` running ``handler``, with the common options, to ``parent``."""
    parser: argparse.ArgumentParser = parent.add_parser(
        name, parents=[common], help=text, description=text
    )
    # The parser travels with the arguments so a usage error found later prints this
    # command's usage, not the top-level one.
    parser.set_defaults(handler=handler, parser=parser)
    return parser
