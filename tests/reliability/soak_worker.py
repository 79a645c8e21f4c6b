"""One soak client process: mixed lb.v1 traffic for a fixed window, then a JSON report on stdout.

Run as ``python -m tests.reliability.soak_worker '<json settings>'``. Between
``start_at`` and ``stop_at`` (unix seconds) it runs, concurrently: dispatchers that
acquire a lease and end it, plain selections in sessions, load and statistics reads,
weight changes (when ``admin``), and WatchLoads subscribers that connect, read a few
snapshots and cancel. Every lease it opens it ends. Traffic goes only to ``address``
(loopback), and every loop stops by itself at ``stop_at``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

Code: TypeAlias = grpc.StatusCode
#: Codes a soak client may see, by RPC: all busy is a normal answer under load.
EXPECTED: dict[str, set[Code]] = {
    "SelectAgent": {Code.OK, Code.RESOURCE_EXHAUSTED},
    "RecordRequestEnd": {Code.OK},
    "GetLoads": {Code.OK},
    "GetStatistics": {Code.OK},
    "UpdateWeights": {Code.OK},
    "WatchLoads": {Code.OK},
}
DEADLINE_S = 10.0


@dataclass
class Report:
    """What one worker saw; the parent adds them up."""

    codes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    leases_opened: int = 0
    leases_ended: int = 0
    selections: int = 0
    watch_cycles: int = 0
    #: SelectAgent round trips, in units of 10 µs.
    select_latency: Counter[int] = field(default_factory=Counter)

    def record(self, method: str, code: Code, detail: str = "") -> None:
        self.codes[f"{method}:{code.name}"] += 1
        if code not in EXPECTED[method] and len(self.unexpected) < 20:
            self.unexpected.append(f"{method}: {code.name}: {detail}")


class Worker:
    """The traffic of one client process."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.rng = random.Random(settings["seed"])
        self.stop_at = float(settings["stop_at"])
        self.agents: list[str] = settings["agents"]
        self.report = Report()

    def rounds(self) -> Iterator[int]:
        """Round numbers of one loop: at least one, then more until ``stop_at``.

        At least one, so a worker that started late (a busy machine can take seconds to
        start a process that imports grpc) still exercises every RPC it was meant to.
        """
        count = 0
        while count == 0 or time.time() < self.stop_at:
            yield count
            count += 1

    async def call(self, method: str, send: Callable[[], Awaitable[Any]]) -> Any:
        try:
            reply = await send()
        except grpc.aio.AioRpcError as error:
            self.report.record(method, error.code(), error.details() or "")
            return None
        self.report.record(method, Code.OK)
        return reply

    async def dispatcher(self, stub: pb_grpc.LoadBalancerStub) -> None:
        """Acquire, 'run' the request briefly, end it: the dispatcher's whole cycle."""
        for _ in self.rounds():
            session = f"chat-{self.rng.randrange(200)}" if self.rng.random() < 0.5 else ""
            started = time.perf_counter()
            picked = await self.call(
                "SelectAgent",
                functools.partial(
                    stub.SelectAgent,
                    pb.SelectAgentRequest(session_id=session, acquire=True),
                    timeout=DEADLINE_S,
                ),
            )
            self.report.select_latency[round((time.perf_counter() - started) * 100_000)] += 1
            if picked is None:
                await asyncio.sleep(0.005)
                continue
            self.report.selections += 1
            self.report.leases_opened += 1
            await asyncio.sleep(self.rng.random() * 0.004)
            ended = await self.call(
                "RecordRequestEnd",
                functools.partial(
                    stub.RecordRequestEnd,
                    pb.RecordRequestEndRequest(
                        request_id=picked.request_id,
                        latency_ms=self.rng.uniform(5, 500),
                        failed=self.rng.random() < 0.05,
                    ),
                    timeout=DEADLINE_S,
                ),
            )
            self.report.leases_ended += ended is not None

    async def selector(self, stub: pb_grpc.LoadBalancerStub) -> None:
        """Selections without a lease, in sessions and with requirements."""
        for _ in self.rounds():
            task = pb.TaskRequirements(model=self.rng.choice(["", "llama3:8b"]))
            started = time.perf_counter()
            picked = await self.call(
                "SelectAgent",
                functools.partial(
                    stub.SelectAgent,
                    pb.SelectAgentRequest(task=task, session_id=f"s-{self.rng.randrange(50)}"),
                    timeout=DEADLINE_S,
                ),
            )
            self.report.select_latency[round((time.perf_counter() - started) * 100_000)] += 1
            self.report.selections += picked is not None

    async def reader(self, stub: pb_grpc.LoadBalancerStub) -> None:
        """Loads and statistics, as dashboards and dispatchers read them."""
        for _ in self.rounds():
            await self.call(
                "GetLoads", lambda: stub.GetLoads(pb.GetLoadsRequest(), timeout=DEADLINE_S)
            )
            await self.call(
                "GetStatistics",
                lambda: stub.GetStatistics(pb.GetStatisticsRequest(), timeout=DEADLINE_S),
            )
            await asyncio.sleep(0.01)

    async def admin(self, stub: pb_grpc.LoadBalancerStub) -> None:
        """Weight changes at run time (never all zero, so weighted picks always succeed)."""
        for _ in self.rounds():
            weights = {agent_id: self.rng.choice([0.5, 1.0, 4.0]) for agent_id in self.agents}
            await self.call(
                "UpdateWeights",
                functools.partial(
                    stub.UpdateWeights, pb.UpdateWeightsRequest(weights=weights), timeout=DEADLINE_S
                ),
            )
            await asyncio.sleep(0.05)

    async def watcher(self, stub: pb_grpc.LoadBalancerStub) -> None:
        """Subscribe, read the snapshot and an update or two, cancel; again until the end."""
        for _ in self.rounds():
            call = stub.WatchLoads(pb.WatchLoadsRequest(min_interval_ms=100))
            try:
                await asyncio.wait_for(call.read(), DEADLINE_S)
                for _ in range(self.rng.randint(0, 2)):
                    try:
                        await asyncio.wait_for(call.read(), 0.5)
                    except TimeoutError:
                        break  # no change to report: fine, the server is idle
                self.report.record("WatchLoads", Code.OK)
            except grpc.aio.AioRpcError as error:
                self.report.record("WatchLoads", error.code(), error.details() or "")
            except TimeoutError:
                self.report.record("WatchLoads", Code.DEADLINE_EXCEEDED, "no first snapshot")
            finally:
                call.cancel()
            self.report.watch_cycles += 1
            await asyncio.sleep(self.rng.random() * 0.2)

    async def run(self) -> Report:
        settings = self.settings
        async with grpc.aio.insecure_channel(settings["address"]) as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            await channel.channel_ready()
            await asyncio.sleep(max(0.0, float(settings["start_at"]) - time.time()))
            loops = [self.dispatcher(stub) for _ in range(settings["dispatchers"])]
            loops += [self.selector(stub), self.reader(stub)]
            loops += [self.watcher(stub) for _ in range(settings["watchers"])]
            if settings["admin"]:
                loops.append(self.admin(stub))
            await asyncio.gather(*loops)
        return self.report


def main() -> None:
    """Run one worker with the JSON settings in argv[1]; print its report as JSON."""
    report = asyncio.run(Worker(json.loads(sys.argv[1])).run())
    print(
        json.dumps(
            {
                "codes": report.codes,
                "unexpected": report.unexpected,
                "leases_opened": report.leases_opened,
                "leases_ended": report.leases_ended,
                "selections": report.selections,
                "watch_cycles": report.watch_cycles,
                "select_latency": report.select_latency,
            }
        )
    )


if __name__ == "__main__":
    main()
