"""How the client commands print.

A table for people or JSON for scripts (``--json``), and a failed call's error on one
line.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import json
from collections.abc import Callable, Mapping, Sequence

import grpc

from lb_service.client import ClientError

#: The ErrorInfo reason of the server's own UNAVAILABLE when nothing is registered.
NO_AGENTS_REASON = "NO_AGENTS_REGISTERED"


def emit(args: argparse.Namespace, value: object, text: Callable[[], str]) -> None:
    """Print ``value`` as JSON with --json, else the human-readable ``text()``."""
    print(json.dumps(plain(value), indent=2) if args.json else text())


def plain(value: object) -> object:
    """Domain values as JSON-ready data: dataclasses to objects, enums to their names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header line over its rows, in aligned columns."""
    return columns([headers, *rows])


def columns(lines: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def number(value: float) -> str:
    """A number as people read it (``%g``)."""
    return f"{value:g}"


def time_text(unix_ms: int) -> str:
    """A unix-ms time as local date and time; ``-`` for none (0)."""
    if not unix_ms:
        return "-"
    return datetime.datetime.fromtimestamp(unix_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def describe_error(error: ClientError, options: argparse.Namespace) -> str:
    """The error on one line; for UNAVAILABLE, whether the server was reached at all.

    Exit status 14 means either no server answered or the server answered that it
    cannot serve (no agents registered, its store unreachable): a reason is only ever
    set by lb-service itself, so its presence tells the two apart.
    """
    message = " ".join(error.message.splitlines())
    if error.code is grpc.StatusCode.UNAVAILABLE:
        if error.reason == NO_AGENTS_REASON:
            return (
                f"UNAVAILABLE: the server at {options.target} answered, but has no agents: "
                f"{message} (lb-service agents add ID --host H --port P)"
            )
        if error.reason:
            return f"UNAVAILABLE: the server at {options.target} answered: {message}"
        return (
            f"UNAVAILABLE: no server answered at {options.target} "
            f"(connection or TLS handshake failed, after retries): {message}"
        )
    return f"{error.code.name}: {message}"
