"""Load and soak: many client processes with mixed RPCs against the real server process.

Small in ``make test`` (a few seconds); full with ``make soak`` (``LB_RELIABILITY_SIZE=full``:
16 client processes, 50 WatchLoads subscribers, 60 s after a 15 s warm-up). Loopback only;
every client stops by itself at a fixed time. It asserts that no client saw an unexpected
status code, that every count returns to zero, that the server's counters agree with what
the clients did, that resident memory after the run is within the size's bound of what it
was after warm-up, and that the server holds no more streams or asyncio tasks than an idle
one. It prints the p99 SelectAgent latency (measured, never asserted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc

from tests.reliability.server_process import ServerProcess
from tests.reliability.sizing import SIZE

REPO = Path(__file__).resolve().parents[2]
HANG_GUARD_S = 60.0
#: Time the client processes get to start (import grpc, connect) before the common start.
STARTUP_S = 2.0 + 0.3 * SIZE.soak_clients
AGENTS = [
    pb.Agent(
        id="cpu-1",
        host="10.0.0.11",
        port=11434,
        models=["llama3:8b"],
        hardware=pb.Hardware(cpu_cores=32),
    ),
    pb.Agent(id="cpu-2", host="10.0.0.12", port=11434, models=["llama3:8b"], max_connections=2),
    pb.Agent(
        id="gpu-24",
        host="10.0.0.21",
        port=11434,
        models=["llama3:8b", "llama3:70b"],
        hardware=pb.Hardware(gpu="RTX 4090", vram_gb=24),
        max_connections=8,
    ),
    pb.Agent(
        id="gpu-80",
        host="10.0.0.22",
        port=11434,
        models=["llama3:8b", "llama3:70b"],
        hardware=pb.Hardware(gpu="A100", vram_gb=80),
    ),
]


@pytest.fixture
def server() -> Iterator[ServerProcess]:
    """The real server process, with four agents registered."""
    running = ServerProcess("--grace-period", "5")
    try:
        with grpc.insecure_channel(running.address) as channel:
            stub = pb_grpc.LoadBalancerStub(channel)
            for agent in AGENTS:
                stub.RegisterAgent(pb.RegisterAgentRequest(agent=agent), timeout=HANG_GUARD_S)
        yield running
    finally:
        running.close()


def _start_workers(address: str, start_at: float, stop_at: float) -> list[subprocess.Popen[str]]:
    watchers = [SIZE.soak_watchers // SIZE.soak_clients] * SIZE.soak_clients
    for i in range(SIZE.soak_watchers % SIZE.soak_clients):
        watchers[i] += 1
    workers = []
    for i in range(SIZE.soak_clients):
        settings = {
            "address": address,
            "seed": i,
            "start_at": start_at,
            "stop_at": stop_at,
            "agents": [a.id for a in AGENTS],
            "dispatchers": 2,
            "watchers": watchers[i],
            "admin": i < 2,
        }
        workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.reliability.soak_worker", json.dumps(settings)],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        )
    return workers


def _p99_ms(latency: Counter[int]) -> float:
    total = sum(latency.values())
    seen = 0
    for bucket in sorted(latency):
        seen += latency[bucket]
        if seen >= 0.99 * total:
            return bucket / 100
    return 0.0


def test_soak_leaves_counts_memory_and_tasks_where_they_started(server: ServerProcess) -> None:
    """Under mixed load nothing unexpected is answered, and afterwards nothing is left behind."""
    start_at = time.time() + STARTUP_S
    stop_at = start_at + SIZE.soak_warmup_s + SIZE.soak_duration_s
    workers = _start_workers(server.address, start_at, stop_at)
    try:
        # While the clients start: what an idle server reports as it shuts down.
        idle_server = ServerProcess()
        assert idle_server.terminate() == 0
        idle = idle_server.wait_for("shutting_down")
        idle_server.close()
        time.sleep(max(0.0, start_at + SIZE.soak_warmup_s - time.time()))
        rss_warm = server.rss_kib()
        outputs = [w.communicate(timeout=stop_at - time.time() + HANG_GUARD_S)[0] for w in workers]
    finally:
        for worker in workers:
            worker.kill()
    assert [w.returncode for w in workers] == [0] * len(workers)
    reports = [json.loads(out) for out in outputs]

    codes: Counter[str] = Counter()
    latency: Counter[int] = Counter()
    for report in reports:
        codes.update(report["codes"])
        latency.update({int(k): v for k, v in report["select_latency"].items()})
        assert report["unexpected"] == []
        assert report["leases_ended"] == report["leases_opened"]

    with grpc.insecure_channel(server.address) as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        stats = stub.GetStatistics(pb.GetStatisticsRequest(), timeout=HANG_GUARD_S)
        loads = stub.GetLoads(pb.GetLoadsRequest(), timeout=HANG_GUARD_S).loads
    # Every lease opened was ended, so every count is back to zero, and the server's
    # counters are exactly what the clients did.
    assert stats.active_connections == 0
    assert [load.active_connections for load in loads] == [0] * len(AGENTS)
    assert stats.total_requests == sum(r["leases_opened"] for r in reports)
    assert stats.total_selections == sum(r["selections"] for r in reports)
    assert sum(stats.selections_by_agent.values()) == stats.total_selections
    rss_end = server.rss_kib()

    # grpc finishes an RPC's own tasks just after its answer is sent: give the last reads
    # a moment, so that only what is really left behind shows in the count.
    time.sleep(1.0)
    assert server.terminate() == 0
    shutdown = server.wait_for("shutting_down")
    print(
        f"\nsoak ({SIZE.name}): {SIZE.soak_clients} client processes, "
        f"{SIZE.soak_watchers} watchers, {SIZE.soak_warmup_s:g} s warm-up + "
        f"{SIZE.soak_duration_s:g} s\n"
        f"  RPCs: {sum(codes.values())} ({dict(sorted(codes.items()))})\n"
        f"  leases: {stats.total_requests}, selections: {stats.total_selections}, "
        f"watch cycles: {sum(r['watch_cycles'] for r in reports)}\n"
        f"  SelectAgent p99: {_p99_ms(latency):.2f} ms over {sum(latency.values())} calls\n"
        f"  server RSS: {rss_warm} KiB after warm-up, {rss_end} KiB after the run "
        f"({(rss_end - rss_warm) / rss_warm:+.1%})\n"
        f"  at shutdown: {shutdown['open_streams']} streams, {shutdown['tasks']} tasks "
        f"(idle server: {idle['tasks']})"
    )
    assert codes["WatchLoads:OK"] > 0
    assert rss_end <= rss_warm * (1 + SIZE.soak_rss_growth)
    assert (shutdown["open_streams"], shutdown["tasks"]) == (0, idle["tasks"])
