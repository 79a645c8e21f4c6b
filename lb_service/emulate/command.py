"""``lb-service emulate FILE``: serve emulated Ollama and vLLM agents until interrupted.

On start it writes the agents it serves as an lb-service config file (``agents:``, the
format ``lb-service serve --config`` reads) to ``--agents-out`` or stdout, and one line
to stderr naming the admin endpoint. Exit status: 0 after SIGINT/SIGTERM, 1 when a port
cannot be opened, 2 for a bad file or arguments.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from lb_service.emulate.server import Emulator
from lb_service.emulate.spec import FAULTS, load
from lb_service.model import Agent
from lb_service.simulate.document import ScenarioError

PROG = "lb-service emulate"


def add_command(commands: Any) -> None:
    """Add the ``emulate`` subcommand to the ``lb-service`` subparsers."""
    parser = commands.add_parser(
        "emulate",
        help="serve emulated Ollama/vLLM agents over HTTP, for tests and demos",
        description=(
            "Serve each agent of FILE (the simulator's cluster format plus engine, faults "
            "and queue limits) on its own loopback port, speaking Ollama's or vLLM's API, "
            "with service times drawn from the file's models. Faults change at run time: "
            f'POST /emulator/agents/ID/fault {{"fault": "{"|".join(FAULTS)}"}} '
            "on the admin port."
        ),
    )
    parser.set_defaults(parser=parser)
    parser.add_argument("file", type=Path, metavar="FILE", help="the emulator (or scenario) file")
    parser.add_argument(
        "--address",
        default="127.0.0.1",
        help="address every agent listens on (default: %(default)s)",
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="multiply every service and load time (0.01: a 2 s request takes 20 ms)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the service-time draws (default: the file's)",
    )
    parser.add_argument(
        "--admin-port", type=int, default=0, metavar="PORT", help="admin port (default: a free one)"
    )
    parser.add_argument(
        "--agents-out",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the agents as an lb-service config file here (default: stdout)",
    )


def run(args: dict[str, Any]) -> int:
    """Run the command with parsed ``args``; return the exit status."""
    path: Path = args["file"]
    if not 0 < args["time_scale"] < float("inf"):
        print(f"{PROG}: error: --time-scale must be a number > 0", file=sys.stderr)
        return 2
    try:
        spec = load(path)
    except ScenarioError as error:
        print(f"{PROG}: {path}: {error}", file=sys.stderr)
        return 2
    emulator = Emulator(
        spec,
        address=args["address"],
        time_scale=args["time_scale"],
        seed=args["seed"],
        admin_port=args["admin_port"],
    )
    try:
        asyncio.run(_serve(emulator, args["agents_out"]))
    except OSError as error:
        print(f"{PROG}: error: cannot listen: {error}", file=sys.stderr)
        return 1
    return 0


async def _serve(emulator: Emulator, agents_out: Path | None) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await emulator.start()
    try:
        text = agents_config(emulator.agents())
        if agents_out is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            await asyncio.to_thread(agents_out.write_text, text)
        admin = f"http://{emulator.address}:{emulator.admin_port}/emulator/agents"
        print(f"{PROG}: serving {len(emulator.agents())} agents; admin: {admin}", file=sys.stderr)
        sys.stderr.flush()
        await stopping.wait()
    finally:
        await emulator.stop()


def agents_config(agents: list[Agent]) -> str:
    """The agents as an lb-service config file (``agents:``), for ``serve --config``."""
    entries = []
    for agent in agents:
        hardware = {
            key: value
            for key, value in (
                ("gpu", agent.hardware.gpu),
                ("vram_gb", agent.hardware.vram_gb),
                ("cpu_cores", agent.hardware.cpu_cores),
                ("ram_gb", agent.hardware.ram_gb),
            )
            if value
        }
        entry: dict[str, Any] = {
            "id": agent.id,
            "host": agent.host,
            "port": agent.port,
            "models": list(agent.models),
            "hardware": hardware,
            "parallel_slots": agent.parallel_slots,
            # Probed by the server as its engine documents (lb_service.health.probes).
            "engine": agent.engine.value,
        }
        if agent.max_connections:
            entry["max_connections"] = agent.max_connections
        entries.append(entry)
    header = "# Agents served by lb-service emulate: lb-service serve --config THIS_FILE\n"
    return header + yaml.safe_dump({"agents": entries}, sort_keys=False)
