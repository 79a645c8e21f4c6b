"""The load the RPC parts send: ``python -m bench.client``, one process of several.

Each process runs ``threads`` blocking clients (generated sync stubs, one channel per
process, as a threaded dispatcher would) that call in a loop from ``start_at`` until the
window closes, and prints what it saw as JSON: how many calls started inside the
measuring window and each one's latency in µs. ``watch`` processes instead hold
WatchLoads streams open and read every update until the window closes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from bench.bare import ECHO_METHOD
from bench.server import FLOOR_METHOD

#: The request every SelectAgent-shaped call sends: any agent will do.
SELECT = pb.SelectAgentRequest(task=pb.TaskRequirements())
SELECT_ACQUIRE = pb.SelectAgentRequest(task=pb.TaskRequirements(), acquire=True)


def _operation(channel: grpc.Channel, spec: dict[str, Any]) -> Callable[[list[float]], None]:
    """One unit of the workload; appends each RPC's latency (µs) to the list it is given."""
    stub = pb_grpc.LoadBalancerStub(channel)
    workload = spec["workload"]
    if workload in ("floor", "bare"):
        # Registered on the channel, as generated stubs register lb.v1's methods.
        echo = channel.unary_unary(
            FLOOR_METHOD if workload == "floor" else ECHO_METHOD,
            request_serializer=pb.SelectAgentRequest.SerializeToString,
            response_deserializer=pb.SelectAgentResponse.FromString,
            _registered_method=True,
        )
        return _timed(lambda: echo(SELECT))
    if workload == "select":
        return _timed(lambda: stub.SelectAgent(SELECT))
    if workload == "batch":
        batch = pb.SelectAgentsRequest(requests=[SELECT] * spec["batch"])
        return _timed(lambda: stub.SelectAgents(batch))
    if workload == "acquire":

        def acquire_end(latencies: list[float]) -> None:
            started = time.perf_counter()
            picked = stub.SelectAgent(SELECT_ACQUIRE)
            middle = time.perf_counter()
            stub.RecordRequestEnd(
                pb.RecordRequestEndRequest(request_id=picked.request_id, latency_ms=100.0)
            )
            ended = time.perf_counter()
            latencies += [(middle - started) * 1e6, (ended - middle) * 1e6]

        return acquire_end
    raise ValueError(f"unknown workload {workload!r}")


def _timed(call: Callable[[], object]) -> Callable[[list[float]], None]:
    def timed(latencies: list[float]) -> None:
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1e6)

    return timed


def _load(spec: dict[str, Any]) -> dict[str, Any]:
    window_start = spec["start_at"] + spec["warmup_s"]
    window_end = window_start + spec["duration_s"]
    results: list[list[float]] = []
    with grpc.insecure_channel(spec["target"]) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)

        def worker() -> None:
            operation = _operation(channel, spec)
            seen: list[float] = []
            latencies: list[float] = []
            time.sleep(max(0.0, spec["start_at"] - time.time()))
            while (now := time.time()) < window_end:
                # Calls started before the window warm up the path and are not kept.
                operation(latencies if now >= window_start else seen)
            results.append(latencies)

        threads = [threading.Thread(target=worker) for _ in range(spec["threads"])]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return {"latencies_us": [x for latencies in results for x in latencies]}


async def _watch(spec: dict[str, Any]) -> dict[str, Any]:
    window_end = spec["start_at"] + spec["warmup_s"] + spec["duration_s"]
    updates = 0
    async with grpc.aio.insecure_channel(spec["target"]) as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        calls = [stub.WatchLoads(pb.WatchLoadsRequest()) for _ in range(spec["streams"])]
        for call in calls:  # every stream has its first snapshot before the load starts
            await call.read()
        print(json.dumps({"ready": True}), flush=True)

        async def read(call: Any) -> None:
            nonlocal updates
            while await call.read() is not grpc.aio.EOF:
                updates += 1

        readers = [asyncio.ensure_future(read(call)) for call in calls]
        await asyncio.sleep(max(0.0, window_end - time.time()))
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    return {"updates": updates}


def main() -> None:
    """Run each workload read from standard input (one JSON line each); answer each in JSON.

    The process serves every scenario of a run, so scenarios do not pay for starting
    Python and grpc; it exits when its standard input closes.
    """
    for line in sys.stdin:
        spec = json.loads(line)
        if spec.get("cpus"):
            os.sched_setaffinity(0, spec["cpus"])
        result = asyncio.run(_watch(spec)) if spec["workload"] == "watch" else _load(spec)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
