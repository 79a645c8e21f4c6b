"""The client commands of ``lb-service``: agents, leases, loads, weights, strategy, health.

Each command makes its calls through LoadBalancerClient and prints an aligned table,
or with ``--json`` one JSON document (one JSON line per update for ``loads --watch``).
Exit status: 0 on success, the gRPC status code of a failed call otherwise (9
FAILED_PRECONDITION, 14 UNAVAILABLE, 16 UNAUTHENTICATED, 4 DEADLINE_EXCEEDED when
``loads --watch --count`` runs out of time or ``drain --wait`` before the agent's requests
ended, ...), 2 for usage errors (with the command's
own usage), 1 from ``health`` when the server is not serving, 130 when interrupted
(except ``loads --watch``, which Ctrl-C ends normally).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import enum
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from lb_service.client import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, ClientError, LoadBalancerClient
from lb_service.model import (
    Agent,
    AgentHealth,
    AgentLoad,
    Compute,
    Engine,
    Hardware,
    LoadSnapshot,
    Selection,
    Statistics,
    StrategyName,
)

#: Where the bearer token comes from when --token-file is not given (as for the server).
TOKEN_ENV = "LB_ADMIN_TOKEN"
#: Where the server address comes from when --target is not given.
TARGET_ENV = "LB_TARGET"
#: Seconds ``loads --watch --count N`` waits for its N updates unless --timeout says.
WATCH_COUNT_TIMEOUT_S = 30.0
#: Seconds ``drain --wait`` waits for the agent's open requests to end unless --timeout says.
DRAIN_WAIT_TIMEOUT_S = 300.0
#: Exit status of ``drain --wait`` when requests remain at the timeout (DEADLINE_EXCEEDED).
DRAIN_INCOMPLETE = 4
#: Exit status of ``health`` when the server is not SERVING (or cannot be asked).
NOT_HEALTHY = 1
#: The ErrorInfo reason of the server's own UNAVAILABLE when nothing is registered.
NO_AGENTS_REASON = "NO_AGENTS_REGISTERED"
#: Home the cursor and clear the screen: how a terminal table redraws in place.
_REDRAW = "\x1b[H\x1b[2J"
_UINT32_MAX = 2**32 - 1

#: A command: makes its calls and prints; returns its exit status (None: 0).
_Handler = Callable[[LoadBalancerClient, argparse.Namespace], int | None]


class UsageError(Exception):
    """The command line is inconsistent in a way argparse cannot see; exit status 2."""


# --- argument types -----------------------------------------------------------------


def _count(text: str) -> int:
    """A whole number that fits the wire's uint32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 0 <= value <= _UINT32_MAX:
        raise argparse.ArgumentTypeError(f"must be from 0 to {_UINT32_MAX}, got {text!r}")
    return value


def _latency(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of ms >= 0, got {text!r}")
    return value


def _positive_count(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must be KEY=VALUE, got {text!r}")
    return key, value


def _weight(text: str) -> tuple[str, float]:
    agent_id, value = _pair(text)
    try:
        return agent_id, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"weight must be a number, got {text!r}") from None


# --- parser -------------------------------------------------------------------------


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


def _common_options() -> argparse.ArgumentParser:
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
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"deadline of each call, retries included (default: {DEFAULT_TIMEOUT_S:g}); "
        f"with loads --watch --count: the time for all N updates "
        f"(default: {WATCH_COUNT_TIMEOUT_S:g})",
    )
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    return common


def add_commands(commands: Any) -> None:
    """Add the client commands to the ``lb-service`` subparsers ``commands``."""
    common = _common_options()
    _add_agents(commands, common)
    _add_select(commands, common)
    _add_leases(commands, common)
    _add_loads(commands, common)
    _add_admin(commands, common)
    _add_health(commands, common)
    _command(
        commands,
        "health",
        _health,
        "check the server's grpc.health.v1 status: exit 0 when SERVING, 1 otherwise "
        "(for container health checks)",
        common,
    )


def _command(
    parent: Any, name: str, handler: _Handler, text: str, common: argparse.ArgumentParser
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = parent.add_parser(
        name, parents=[common], help=text, description=text
    )
    # The parser travels with the arguments so a usage error found later prints this
    # command's usage, not the top-level one.
    parser.set_defaults(handler=handler, parser=parser)
    return parser


def _add_agents(commands: Any, common: argparse.ArgumentParser) -> None:
    agents = commands.add_parser("agents", help="list, add or remove agents")
    actions = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(actions, "list", _agents_list, "list the registered agents", common)
    text = "register an agent (replacing any with the same id)"
    add = _command(actions, "add", _agents_add, text, common)
    add.add_argument("id", metavar="ID")
    # Required here as on the server, so a missing address is a usage error before any call.
    add.add_argument("--host", required=True, help="host name or address dispatchers connect to")
    add.add_argument(
        "--port", type=_count, required=True, help="port dispatchers connect to (1-65535)"
    )
    add.add_argument(
        "--model",
        dest="models",
        action="append",
        default=[],
        metavar="MODEL",
        help="a model the agent serves (repeat for more)",
    )
    add.add_argument("--vram-gb", type=float, default=0.0, metavar="GB", help="GPU memory")
    add.add_argument("--gpu", default="", metavar="NAME", help="GPU model, e.g. 'RTX 4090'")
    add.add_argument("--cpu-cores", type=_count, default=0, metavar="N", help="CPU cores")
    add.add_argument("--ram-gb", type=float, default=0.0, metavar="GB", help="system memory")
    add.add_argument(
        "--max-connections",
        type=_count,
        default=0,
        metavar="N",
        help="most requests at once; more are refused (default 0: no limit)",
    )
    add.add_argument(
        "--parallel-slots",
        type=_count,
        default=0,
        metavar="N",
        help="requests the agent serves at once, e.g. OLLAMA_NUM_PARALLEL; more queue on "
        "the agent, none is refused (default 0: --max-connections, else 4 on a GPU, 1 on a CPU)",
    )
    engines = [e.value for e in Engine if e.value]
    add.add_argument(
        "--engine",
        choices=engines,
        default="",
        metavar="ENGINE",
        help=f"the serving software, so the service probes its health: one of "
        f"{', '.join(engines)} (default: not probed)",
    )
    add.add_argument(
        "--heartbeat-ttl-ms",
        type=_count,
        default=0,
        metavar="MS",
        help="the agent sends a Heartbeat at least this often; none for this long makes it "
        "unhealthy (default 0: no heartbeats)",
    )
    add.add_argument(
        "--probe-path",
        default="",
        metavar="PATH",
        help="with --engine http: the path probed with GET (default /)",
    )
    add.add_argument(
        "--meta",
        dest="metadata",
        type=_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a free-form label (repeat for more)",
    )
    remove = _command(actions, "remove", _agents_remove, "deregister an agent", common)
    remove.add_argument("id", metavar="ID")


def _add_select(commands: Any, common: argparse.ArgumentParser) -> None:
    select = _command(commands, "select", _select, "ask which agent takes a request", common)
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


def _add_leases(commands: Any, common: argparse.ArgumentParser) -> None:
    text = "open a lease on an agent (RecordRequestStart) and print its request id"
    start = _command(commands, "start", _start, text, common)
    start.add_argument("agent", metavar="AGENT", help="id of the agent the request went to")
    start.add_argument(
        "--model",
        default="",
        metavar="M",
        help="the model the request asks for, so the service learns its cost on the agent",
    )
    text = "end a lease (RecordRequestEnd) with the request's latency; repeating it is harmless"
    end = _command(commands, "end", _end, text, common)
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
        type=_latency,
        required=True,
        metavar="MS",
        help="how long the request took, in ms",
    )
    end.add_argument("--failed", action="store_true", help="the request failed")


def _add_loads(commands: Any, common: argparse.ArgumentParser) -> None:
    loads = _command(commands, "loads", _loads, "show agent loads", common)
    loads.add_argument("ids", nargs="*", metavar="ID", help="agents to show (default: all)")
    loads.add_argument("--watch", action="store_true", help="keep showing updates until Ctrl-C")
    loads.add_argument(
        "--interval-ms",
        type=_count,
        default=0,
        metavar="MS",
        help="with --watch: least time between updates (default: the server's floor)",
    )
    loads.add_argument(
        "--count",
        type=_positive_count,
        metavar="N",
        help="with --watch: stop after N updates (for scripts)",
    )


def _add_admin(commands: Any, common: argparse.ArgumentParser) -> None:
    _command(commands, "stats", _stats, "show service-wide counters", common)

    weights = commands.add_parser("weights", help="override agent weights")
    actions = weights.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(actions, "get", _weights_get, "show every agent's effective weight", common)
    text = "override weights, all or none"
    set_weights = _command(actions, "set", _weights_set, text, common)
    set_weights.add_argument("weights", nargs="+", type=_weight, metavar="ID=WEIGHT")

    strategy = commands.add_parser("strategy", help="show or change the selection strategy")
    actions = strategy.add_subparsers(dest="action", required=True, metavar="ACTION")
    _command(actions, "get", _strategy_get, "show the current strategy", common)
    set_strategy = _command(actions, "set", _strategy_set, "change the strategy", common)
    names = [s.value for s in StrategyName]
    set_strategy.add_argument(
        "name", choices=names, metavar="NAME", help=f"one of: {', '.join(names)}"
    )


def _add_health(commands: Any, common: argparse.ArgumentParser) -> None:
    text = (
        "drain an agent: no new picks, its open requests end normally (--undo takes it "
        "back; --wait waits until none is open, exit 4 if some remain at --timeout)"
    )
    drain = _command(commands, "drain", _drain, text, common)
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
        type=_seconds,
        default=1.0,
        metavar="SECONDS",
        help="with --wait: time between two looks at its open requests (default 1)",
    )
    text = "send one heartbeat for an agent registered with --heartbeat-ttl-ms"
    beat = _command(commands, "heartbeat", _heartbeat, text, common)
    beat.add_argument("agent", metavar="AGENT", help="id of the agent that is alive")


# --- running ------------------------------------------------------------------------


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
        print(f"lb-service: {_describe(error, options)}", file=sys.stderr)
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


def _describe(error: ClientError, options: argparse.Namespace) -> str:
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


# --- handlers -----------------------------------------------------------------------


def _agents_list(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    agents = client.agents()
    _emit(args, agents, lambda: _agents_table(agents))


def _agents_add(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    agent = Agent(
        id=args.id,
        host=args.host,
        port=args.port,
        models=tuple(args.models),
        hardware=Hardware(
            gpu=args.gpu, vram_gb=args.vram_gb, cpu_cores=args.cpu_cores, ram_gb=args.ram_gb
        ),
        metadata=dict(args.metadata),
        max_connections=args.max_connections,
        parallel_slots=args.parallel_slots,
        engine=Engine(args.engine),
        heartbeat_ttl_ms=args.heartbeat_ttl_ms,
        probe_path=args.probe_path,
    )
    client.register(agent)
    _emit(args, agent, lambda: f"registered agent {agent.id}")


def _agents_remove(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    client.deregister(args.id)
    _emit(args, {"removed": args.id}, lambda: f"removed agent {args.id}")


def _select(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    selection = client.select(
        model=args.model,
        min_vram_gb=args.min_vram,
        compute=args.compute,
        session_id=args.session,
        acquire=args.acquire,
    )
    _emit(args, selection, lambda: _selection_table(selection))
    if selection.request_id:
        _print_end_hint(args, selection.request_id, selection.agent.id)


def _start(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    request_id = client.start(args.agent, model=args.model)
    document = {"request_id": request_id, "agent_id": args.agent}
    # The id alone on stdout, so `REQ=$(lb-service start gpu-1)` works.
    _emit(args, document, lambda: request_id)
    _print_end_hint(args, request_id, args.agent)


def _end(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    client.end(args.request_id, latency_ms=args.latency_ms, agent_id=args.agent, failed=args.failed)
    outcome = "failed" if args.failed else "done"
    document = {"ended": args.request_id, "agent_id": args.agent, "failed": args.failed}
    _emit(args, document, lambda: f"ended {args.request_id} on {args.agent} ({outcome})")


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


def _loads(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    if args.watch:
        _watch(client, args)
        return
    if args.interval_ms or args.count:
        raise UsageError("--interval-ms and --count only apply with --watch")
    loads = client.loads(args.ids)
    _emit(args, loads, lambda: _loads_table(loads))


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
        print(json.dumps(_plain(snapshot)), flush=True)

    def table(snapshot: LoadSnapshot) -> None:
        heading = f"loads at {_time(snapshot.timestamp_ms)}"
        if terminal:
            # Redraw in place, so the table stays put and only the numbers change.
            text = f"{_REDRAW}{heading} (Ctrl-C to stop)\n{_loads_table(snapshot.loads)}"
            print(text, flush=True)
        else:
            print(f"{heading}\n{_loads_table(snapshot.loads)}\n", flush=True)

    return json_line if as_json else table


def _stats(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    stats = client.statistics()
    _emit(args, stats, lambda: _stats_text(stats))


def _weights_get(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    # GetLoads, not an empty UpdateWeights: reading must not need the admin token.
    weights = {load.agent_id: load.weight for load in client.loads()}
    _emit_weights(args, weights)


def _weights_set(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    _emit_weights(args, client.update_weights(dict(args.weights)))


def _emit_weights(args: argparse.Namespace, weights: Mapping[str, float]) -> None:
    rows = [(agent_id, _number(weight)) for agent_id, weight in sorted(weights.items())]
    _emit(args, weights, lambda: _table(("AGENT", "WEIGHT"), rows))


def _health(client: LoadBalancerClient, args: argparse.Namespace) -> int:
    try:
        status = client.health()
    except ClientError as error:
        # A probe needs one answer, healthy or not: every failure is "not healthy" (1).
        print(f"lb-service: not healthy: {_describe(error, args)}", file=sys.stderr)
        return NOT_HEALTHY
    serving = status == "SERVING"
    _emit(args, {"status": status}, lambda: f"{args.target}: {status}")
    return 0 if serving else NOT_HEALTHY


#: How ``drain --wait`` reads the time and waits between looks (tests replace them).
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def _drain(client: LoadBalancerClient, args: argparse.Namespace) -> int:
    if args.undo and args.wait:
        raise UsageError("--wait waits for a drain to complete; it does not go with --undo")
    active = client.drain(args.agent, undrain=args.undo)
    if args.undo:
        _emit(args, {"agent": args.agent, "draining": False}, lambda: f"{args.agent}: undrained")
        return 0
    if args.wait:
        limit = args.timeout or DRAIN_WAIT_TIMEOUT_S
        deadline = _clock() + limit
        while active and _clock() < deadline:
            _sleep(min(args.interval, max(0.0, deadline - _clock())))
            active = client.loads([args.agent])[0].active_connections
        if active:
            document = {"agent": args.agent, "draining": True, "active_connections": active}
            _emit(args, document, lambda: f"{args.agent}: draining, {active} request(s) open")
            print(
                f"lb-service: drain of {args.agent} incomplete: {active} request(s) still "
                f"open after {limit:g} s; wait longer (--timeout) or check the dispatchers",
                file=sys.stderr,
            )
            return DRAIN_INCOMPLETE
    document = {"agent": args.agent, "draining": True, "active_connections": active}
    done = "drained" if args.wait else f"draining, {active} request(s) open"
    _emit(args, document, lambda: f"{args.agent}: {done}")
    return 0


def _heartbeat(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    client.heartbeat(args.agent)
    _emit(args, {"agent": args.agent}, lambda: f"{args.agent}: alive")


def _strategy_get(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    strategy = client.statistics().strategy
    _emit(args, {"strategy": strategy}, lambda: strategy.value)


def _strategy_set(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    strategy = StrategyName(args.name)
    previous = client.set_strategy(strategy)
    document = {"strategy": strategy, "previous": previous}
    _emit(args, document, lambda: f"strategy {strategy.value} (was {previous.value})")


# --- output -------------------------------------------------------------------------


def _emit(args: argparse.Namespace, value: object, text: Callable[[], str]) -> None:
    """Print ``value`` as JSON with --json, else the human-readable ``text()``."""
    print(json.dumps(_plain(value), indent=2) if args.json else text())


def _plain(value: object) -> object:
    """Domain values as JSON-ready data: dataclasses to objects, enums to their names."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header line over its rows, in aligned columns."""
    return _columns([headers, *rows])


def _columns(lines: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, without trailing blanks."""
    widths = [max(len(cell) for cell in column) for column in zip(*lines, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _number(value: float) -> str:
    return f"{value:g}"


def _time(unix_ms: int) -> str:
    if not unix_ms:
        return "-"
    return datetime.datetime.fromtimestamp(unix_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def _agents_table(agents: Sequence[Agent]) -> str:
    # SLOTS is the declared parallel_slots; "-" where the server guesses them.
    headers = ("ID", "HOST", "PORT", "MODELS", "GPU", "VRAM_GB", "CPUS", "RAM_GB", "MAX_CONN",
               "SLOTS", "METADATA")  # fmt: skip
    rows = [
        (
            a.id,
            a.host or "-",
            str(a.port),
            ",".join(a.models) or "-",
            a.hardware.gpu or "-",
            _number(a.hardware.vram_gb),
            str(a.hardware.cpu_cores),
            _number(a.hardware.ram_gb),
            str(a.max_connections or "-"),
            str(a.parallel_slots or "-"),
            ",".join(f"{k}={v}" for k, v in sorted(a.metadata.items())) or "-",
        )
        for a in agents
    ]
    return _table(headers, rows)


def _selection_table(selection: Selection) -> str:
    agent = selection.agent
    row = (
        agent.id,
        f"{agent.host}:{agent.port}",
        selection.strategy.value,
        "yes" if selection.sticky else "no",
        selection.request_id or "-",
    )
    return _table(("AGENT", "ADDRESS", "STRATEGY", "STICKY", "REQUEST_ID"), [row])


def _loads_table(loads: Sequence[AgentLoad]) -> str:
    headers = ("AGENT", "ACTIVE", "AVG_LATENCY_MS", "CAPACITY_RPS", "REQUESTS", "FAILED",
               "WEIGHT", "LAST_REQUEST", "EJECTED_UNTIL", "HEALTH")  # fmt: skip
    rows = [
        (
            load.agent_id,
            str(load.active_connections),
            f"{load.avg_latency_ms:.1f}",
            f"{load.capacity_rps:.2f}" if load.capacity_rps else "-",
            str(load.total_requests),
            str(load.failed_requests),
            _number(load.weight),
            _time(load.last_request_at_ms),
            _time(load.ejected_until_ms),
            _health_cell(load),
        )
        for load in loads
    ]
    return _table(headers, rows)


def _health_cell(load: AgentLoad) -> str:
    """``healthy``, or the state with its reason: ``unhealthy (probe: connection refused)``."""
    if load.health is AgentHealth.HEALTHY or not load.health_reason:
        return load.health.value
    return f"{load.health.value} ({load.health_reason})"


def _stats_text(stats: Statistics) -> str:
    summary = _columns(
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
    return f"{summary}\n\n{_table(('AGENT', 'SELECTIONS'), rows)}"
