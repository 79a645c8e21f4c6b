"""Real ``lb-service serve`` replicas sharing one Redis, and stubs to talk to them.

Each replica is a process of its own (``tests.reliability.server_process``: its JSON log
is drained by a thread, so a busy replica never blocks on a full pipe), started with
``--store <redis url> --store-prefix <prefix>`` on a free loopback port. Replicas are
started together, in parallel, and stopped with SIGTERM, so coverage records them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.reliability.server_process import ServerProcess

#: Fast sweeps and watch updates, so the tests wait little; the defaults otherwise.
REPLICA_ARGS = ("--watch-min-interval-ms", "20", "--grace-period", "2")
#: Longest a test waits for something it polls for (not a timing assertion: a hang guard).
WAIT_S = 15.0


def start_replicas(count: int, store: str, prefix: str, *args: str) -> list[ServerProcess]:
    """Start ``count`` replicas on one store and prefix, in parallel; return them serving."""
    command = ("--store", store, "--store-prefix", prefix, *REPLICA_ARGS, *args)
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: ServerProcess(*command), range(count)))


def stop_replicas(replicas: Sequence[ServerProcess]) -> None:
    """Stop every replica still running with SIGTERM (SIGKILL only if one hangs)."""
    with ThreadPoolExecutor(max(1, len(replicas))) as pool:
        list(pool.map(lambda replica: replica.close(), replicas))


class Client:
    """One grpc.aio channel per replica, with the lb.v1 and health stubs of each."""

    def __init__(self, replicas: Sequence[ServerProcess]) -> None:
        self.channels = [grpc.aio.insecure_channel(r.address) for r in replicas]
        self.stubs = [pb_grpc.LoadBalancerStub(c) for c in self.channels]
        self.health = [health_pb2_grpc.HealthStub(c) for c in self.channels]

    def __len__(self) -> int:
        return len(self.stubs)

    def stub(self, index: int) -> pb_grpc.LoadBalancerStub:
        """The lb.v1 stub of replica ``index`` (modulo the number of replicas)."""
        return self.stubs[index % len(self.stubs)]

    async def close(self) -> None:
        """Close every channel."""
        for channel in self.channels:
            await channel.close()

    async def register(self, *agent_ids: str, replica: int = 0) -> None:
        """Register plain agents (no models, no limits) through one replica."""
        for agent_id in agent_ids:
            agent = pb.Agent(id=agent_id, host="10.0.0.1", port=8000)
            await self.stub(replica).RegisterAgent(pb.RegisterAgentRequest(agent=agent))

    async def loads(self, replica: int = 0) -> dict[str, pb.AgentLoad]:
        """Every registered agent's load, as one replica reports it."""
        reply = await self.stub(replica).GetLoads(pb.GetLoadsRequest(), timeout=5)
        return {load.agent_id: load for load in reply.loads}

    async def health_status(self, replica: int) -> list[int]:
        """Health of the server ("") and of lb.v1.LoadBalancer on one replica."""
        return [
            (
                await self.health[replica].Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=5
                )
            ).status
            for service in ("", "lb.v1.LoadBalancer")
        ]


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within_s: float = WAIT_S, every_s: float = 0.02
) -> float:
    """Poll ``check`` until it holds; return the seconds it took, fail after ``within_s``."""
    started = time.monotonic()
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return time.monotonic() - started
        if time.monotonic() - started > within_s:
            raise AssertionError(f"not true within {within_s} s")
        await asyncio.sleep(every_s)
