"""``lb-service agents list | add | remove``: the registry."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from lb_service.client import LoadBalancerClient
from lb_service.client_commands.options import count, pair, subcommand
from lb_service.client_commands.output import emit, number, table
from lb_service.model import Agent, Engine, Hardware


def add_agents(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``agents list | add | remove``."""
    agents = commands.add_parser("agents", help="list, add or remove agents")
    actions = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    subcommand(actions, "list", _agents_list, "list the registered agents", common)
    text = "register an agent (replacing any with the same id)"
    add = subcommand(actions, "add", _agents_add, text, common)
    add.add_argument("id", metavar="ID")
    # Required here as on the server, so a missing address is a usage error before any call.
    add.add_argument("--host", required=True, help="host name or address dispatchers connect to")
    add.add_argument(
        "--port", type=count, required=True, help="port dispatchers connect to (1-65535)"
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
    add.add_argument("--cpu-cores", type=count, default=0, metavar="N", help="CPU cores")
    add.add_argument("--ram-gb", type=float, default=0.0, metavar="GB", help="system memory")
    add.add_argument(
        "--max-connections",
        type=count,
        default=0,
        metavar="N",
        help="most requests at once; more are refused (default 0: no limit)",
    )
    add.add_argument(
        "--parallel-slots",
        type=count,
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
        type=count,
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
        type=pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a free-form label (repeat for more)",
    )
    remove = subcommand(actions, "remove", _agents_remove, "deregister an agent", common)
    remove.add_argument("id", metavar="ID")


def _agents_list(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    agents = client.agents()
    emit(args, agents, lambda: _agents_table(agents))


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
    emit(args, agent, lambda: f"registered agent {agent.id}")


def _agents_remove(client: LoadBalancerClient, args: argparse.Namespace) -> None:
    client.deregister(args.id)
    emit(args, {"removed": args.id}, lambda: f"removed agent {args.id}")


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
            number(a.hardware.vram_gb),
            str(a.hardware.cpu_cores),
            number(a.hardware.ram_gb),
            str(a.max_connections or "-"),
            str(a.parallel_slots or "-"),
            ",".join(f"{k}={v}" for k, v in sorted(a.metadata.items())) or "-",
        )
        for a in agents
    ]
    return table(headers, rows)
