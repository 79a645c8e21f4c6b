"""Adding the client commands to ``lb-service``, and running the one given."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lb_service.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, ClientError, LoadBalancerClient
from lb_service.client_commands.admin import add_admin
from lb_service.client_commands.agents import add_agents
from lb_service.client_commands.health import add_health
from lb_service.client_commands.loads import add_loads
from lb_service.client_commands.options import TARGET_ENV, TOKEN_ENV, UsageError, common_options
from lb_service.client_commands.output import describe_error
from lb_service.client_commands.requests import add_leases, add_select


def add_commands(commands: Any) -> None:
    """Add the client commands to the ``lb-service`` subparsers ``commands``."""
    common = common_options()
    add_agents(commands, common)
    add_select(commands, common)
    add_leases(commands, common)
    add_loads(commands, common)
    add_admin(commands, common)
    add_health(commands, common)


def run(args: Mapping[str, Any]) -> int:
    """Run the client command ``args`` holds (as parsed); return the exit status."""
    options = argparse.Namespace(**args)
    try:
        options.target = _target(options)
        with _client(options) as client:
            status = options.handler(client, options)
    except UsageError as error:
        parser: argparse.ArgumentParser = options.parser
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except ClientError as error:
        # One line, never a traceback: the code names the kind, the message the cause.
        print(f"lb-service: {describe_error(error, options)}", file=sys.stderr)
        return int(error.code.value[0])
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head -1`); stop quietly, and keep the interpreter
        # from failing again when it flushes stdout at exit.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return status or 0


def _target(options: argparse.Namespace) -> str:
    """The flag (before or after the command), else LB_TARGET, else the default."""
    given = getattr(options, "target", None)
    if given is not None:
        if not given.strip():
            raise UsageError("--target must not be empty")
        return str(given)
    return os.environ.get(TARGET_ENV, "").strip() or DEFAULT_TARGET


def _client(options: argparse.Namespace) -> LoadBalancerClient:
    if (options.tls_cert is None) != (options.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    try:
        return LoadBalancerClient(
            options.target,
            root_certificates=_read(options.tls_ca, "--tls-ca"),
            certificate_chain=_read(options.tls_cert, "--tls-cert"),
            private_key=_read(options.tls_key, "--tls-key"),
            tls=options.tls,
            token=_token(options.token_file),
            timeout=options.timeout or DEFAULT_TIMEOUT_S,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None


def _read(path: Path | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as error:
        raise UsageError(f"{flag}: cannot read {str(path)!r}: {error.strerror}") from None


def _token(path: Path | None) -> str | None:
    # The token comes from a file or the environment, never from argv, where any user
    # on the host could read it in the process list.
    if path is None:
        return os.environ.get(TOKEN_ENV, "").strip() or None
    data = _read(path, "--token-file")
    token = data.decode(errors="replace").strip() if data is not None else ""
    if not token:
        raise UsageError(f"--token-file {str(path)!r} is empty")
    return token
