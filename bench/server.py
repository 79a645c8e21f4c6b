"""The server the RPC parts measure: ``python -m bench.server``, a process of its own.

It hosts a real LoadBalancerServer (the stack ``lb-service serve`` runs: server
stack, servicer, balancer, memory store, on the event loop ``serve`` picks by default,
``lb_service.service.loop``) with the fleet registered, plus one
bench-only method on the same grpc.aio server, ``/bench.Floor/Echo``: the bare echo's
method (``bench.bare``) served behind this server's stack, so it costs what any RPC of
that shape costs on this server and nothing more. The floor is not part of lb.v1: it
exists only in this process.

Prints ``port <n>`` once serving; stops when its standard input closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bench.bare import echo_handlers
from bench.fleet import fleet
from lb_service.balancer import LoadBalancer
from lb_service.logs import configure_logging
from lb_service.service.loop import run
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore

#: The floor method's full name.
FLOOR_METHOD = "/bench.Floor/Echo"


async def _serve(agents: int) -> None:
    balancer = LoadBalancer(MemoryStore())
    for agent in fleet(agents):
        await balancer.register(agent)
    server = LoadBalancerServer(balancer, ServerOptions(listen="127.0.0.1:0", grace_period_s=0.5))
    # Registered as lb.v1's methods are, so the floor pays exactly the stack they pay.
    server.add_method_handlers("bench.Floor", echo_handlers())
    port = await server.start()
    print(f"port {port}", flush=True)
    # Standard input closing (the benchmark finished or died) is the signal to stop.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


def main() -> None:
    """Serve until standard input closes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=100, help="agents to register")
    parser.add_argument("--cpu", type=int, action="append", help="pin to this CPU (repeatable)")
    args = parser.parse_args()
    if args.cpu:
        os.sched_setaffinity(0, args.cpu)
    # As `lb-service serve` runs by default: info level, JSON lines (to the caller's pipe).
    configure_logging("info", "json")
    run(_serve(args.agents))


if __name__ == "__main__":
    main()
