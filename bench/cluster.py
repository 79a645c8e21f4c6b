"""Replicas on one Redis against one memory-store server: ``python -m bench.cluster``.

``make bench-cluster`` measures, in one run, the decisions per second (one decision =
SelectAgent with ``acquire`` plus its RecordRequestEnd) that the same client load gets
from a single ``lb-service serve`` on the memory store, then from 1, 2 and 3 replicas
sharing one Redis. The load comes from client processes (``bench.client``, blocking
threads), each one talking to one replica, so the load is spread over the replicas as
a round-robin client would spread it. Setups run in interleaved rounds; each keeps its
best round. Replicas and Redis are not pinned: using the cores is what replicas are for.

Redis is ``REDIS_URL`` when set, else a private ``redis-server`` on a free port.
Writes a Markdown report (``--output``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench import machine
from bench.fleet import fleet
from bench.rpc import _clients, _cpu_seconds, _env, _percentile, _receive, _send
from lb_service.client import LoadBalancerClient

#: ``lb-service`` of the running interpreter's environment.
LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))
MEMORY = "memory"
#: While waiting for a replica to listen, try again every 50 ms, not after gRPC's 1 s.
_QUICK_RECONNECT = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 100),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """How the run is sized; the smoke test shrinks it."""

    #: Replica counts measured on Redis (the memory-store server is always measured).
    replicas: tuple[int, ...] = (1, 2, 3)
    #: Client processes and blocking threads in each: calls in flight = their product.
    processes: int = 3
    threads: int = 8
    agents: int = 20
    #: Fleet sizes the growth table compares (one replica each, memory and Redis).
    growth_agents: tuple[int, int] = (10, 1000)
    duration_s: float = 4.0
    warmup_s: float = 1.0
    rounds: int = 2
    #: Seconds between handing the load to the client processes and its start.
    start_delay_s: float = 0.3

    @property
    def setups(self) -> list[str]:
        """Every setup's name, the baseline first."""
        return [MEMORY, *(f"redis x{n}" for n in self.replicas)]


@dataclass(frozen=True, slots=True)
class Result:
    """One setup's best round."""

    setup: str
    replicas: int
    decisions_per_s: float
    p50_us: float
    p99_us: float
    #: CPU time of the lb-service processes (and of Redis) per decision, in µs.
    server_cpu_us: float | None
    redis_cpu_us: float | None


@dataclass(frozen=True, slots=True)
class Run:
    """The whole run: when, where, with what, and each setup's result."""

    settings: Settings
    command: str
    started: datetime.datetime
    seconds: float
    machine: machine.Machine
    redis: str
    results: list[Result] = field(default_factory=list)
    #: The same decision at the two ``growth_agents`` sizes: (agents, result) per setup.
    growth: list[tuple[int, Result]] = field(default_factory=list)


def measure(settings: Settings, command: str, redis_url: str | None = None) -> Run:
    """Measure every setup in interleaved rounds against one Redis."""
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    described = machine.describe()
    with _redis(redis_url) as (url, redis_pid), _clients(settings.processes) as clients:
        best: dict[str, Result] = {}
        grown: dict[tuple[int, str], Result] = {}
        for round_ in range(settings.rounds):
            for setup in settings.setups:
                _say(f"round {round_ + 1}/{settings.rounds}: {setup}")
                found = _measure_setup(setup, settings, url, redis_pid, clients)
                if setup not in best or found.decisions_per_s > best[setup].decisions_per_s:
                    best[setup] = found
            for agents in settings.growth_agents:
                sized = dataclasses.replace(settings, agents=agents)
                for setup in (MEMORY, "redis x1"):
                    _say(f"round {round_ + 1}/{settings.rounds}: {setup}, {agents} agents")
                    found = _measure_setup(setup, sized, url, redis_pid, clients)
                    kept = grown.get((agents, setup))
                    if kept is None or found.decisions_per_s > kept.decisions_per_s:
                        grown[agents, setup] = found
        version = _redis_version(url)
    return Run(
        settings,
        command,
        started,
        time.monotonic() - clock,
        described,
        version,
        [best[s] for s in settings.setups],
        [(agents, result) for (agents, _), result in grown.items()],
    )


def _measure_setup(
    setup: str,
    settings: Settings,
    redis_url: str,
    redis_pid: int | None,
    clients: list[subprocess.Popen[str]],
) -> Result:
    count = 1 if setup == MEMORY else int(setup.rpartition("x")[2])
    store = MEMORY if setup == MEMORY else redis_url
    with _replicas(count, store, f"lbbench-{uuid.uuid4().hex[:8]}") as replicas:
        with LoadBalancerClient(replicas[0][0]) as admin:
            for agent in fleet(settings.agents):
                admin.register(agent)
        start_at = time.time() + settings.start_delay_s
        for i, client in enumerate(clients):
            _send(
                client,
                {
                    "target": replicas[i % count][0],
                    "workload": "acquire",
                    "batch": 1,
                    "threads": settings.threads,
                    "warmup_s": settings.warmup_s,
                    "duration_s": settings.duration_s,
                    "cpus": [],
                    "start_at": start_at,
                },
            )
        time.sleep(max(0.0, start_at + settings.warmup_s - time.time()))
        pids = [pid for _, pid in replicas] + ([redis_pid] if redis_pid else [])
        before = [_cpu_seconds(pid) for pid in pids]
        time.sleep(settings.duration_s)
        after = [_cpu_seconds(pid) for pid in pids]
        latencies = sorted(x for client in clients for x in _receive(client)["latencies_us"])
    # Each decision is two RPCs (the acquire and the end), each timed on its own.
    decisions = len(latencies) // 2
    cpu = [None if b is None or a is None else a - b for b, a in zip(before, after, strict=True)]
    server_cpu = cpu[:count]
    redis_cpu = cpu[count] if redis_pid and store != MEMORY else None
    return Result(
        setup=setup,
        replicas=count,
        decisions_per_s=decisions / settings.duration_s,
        p50_us=_percentile(latencies, 0.50),
        p99_us=_percentile(latencies, 0.99),
        server_cpu_us=_per(
            None if None in server_cpu else sum(c or 0.0 for c in server_cpu), decisions
        ),
        redis_cpu_us=_per(redis_cpu, decisions),
    )


def _per(seconds: float | None, decisions: int) -> float | None:
    return None if seconds is None or not decisions else seconds * 1e6 / decisions


@contextmanager
def _replicas(count: int, store: str, prefix: str) -> Iterator[list[tuple[str, int]]]:
    """``count`` lb-service processes on ``store``: (address, pid) each, serving."""
    started: list[subprocess.Popen[bytes]] = []
    addresses = []
    try:
        for _ in range(count):
            address = f"127.0.0.1:{_free_port()}"
            started.append(
                subprocess.Popen(
                    [LB_SERVICE, "serve", "--listen", address, "--store", store,
                     "--store-prefix", prefix, "--log-level", "warning", "--log-format", "json"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    env=_env(),
                )
            )  # fmt: skip
            addresses.append(address)
        for address, process in zip(addresses, started, strict=True):
            with grpc.insecure_channel(address, _QUICK_RECONNECT) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=20)
                except grpc.FutureTimeoutError:
                    raise RuntimeError(
                        f"lb-service on {address} did not start (exit {process.poll()})"
                    ) from None
        yield [(a, p.pid) for a, p in zip(addresses, started, strict=True)]
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def _redis(url: str | None) -> Iterator[tuple[str, int | None]]:
    """``url`` as it is (no pid to measure), or a private redis-server: (url, pid)."""
    if url:
        yield url, None
        return
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("bench.cluster: redis-server is not installed; set REDIS_URL")
    port, scratch = _free_port(), tempfile.mkdtemp(prefix="lb-bench-redis-")
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", scratch],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while _redis_version(url) == "unknown":
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)


def _redis_version(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    except redis.RedisError:
        return "unknown"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _say(text: str) -> None:
    print(f"bench.cluster: {text}", file=sys.stderr, flush=True)


def markdown(run: Run) -> str:
    """The report: the setting, then one row per setup with its ratio to the memory store."""
    s, m = run.settings, run.machine
    baseline = next(r for r in run.results if r.setup == MEMORY).decisions_per_s
    lines = [
        "# Replicas on one Redis vs one memory-store server",
        "",
        f"`{run.command}` on {run.started:%Y-%m-%d %H:%M} UTC, {run.seconds:.0f} s. "
        f"{m.cpu}, {m.usable_cores} usable cores (load {m.load_average}), {m.python}, "
        f"grpcio {m.grpcio}, Redis {run.redis}.",
        "",
        f"One decision = SelectAgent(acquire) + RecordRequestEnd, over {s.agents} agents, "
        f"least-connections. Load: {s.processes} client processes x {s.threads} blocking "
        f"threads ({s.processes * s.threads} pairs in flight), client process i talking "
        f"to replica i mod N; {s.duration_s:g} s measured after {s.warmup_s:g} s of warm-up, "
        f"best of {s.rounds} interleaved rounds. The clients run on the same cores.",
        "",
        "| setup | replicas | decisions/s | vs memory | p50 µs | p99 µs "
        "| lb-service CPU µs/decision | Redis CPU µs/decision |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in run.results:
        ratio = r.decisions_per_s / baseline if baseline else float("nan")
        lines.append(
            f"| {r.setup} | {r.replicas} | {r.decisions_per_s:,.0f} | {ratio:.2f}x "
            f"| {r.p50_us:,.0f} | {r.p99_us:,.0f} | {_figure(r.server_cpu_us)} "
            f"| {_figure(r.redis_cpu_us)} |"
        )
    lines += [
        "",
        "p50/p99 are per RPC (each acquire and each end timed on its own). CPU is the "
        "user + system time of the lb-service processes (all replicas) and of "
        "redis-server during the measured window, per decision; Redis CPU is only "
        "known for the private server the run starts (not with REDIS_URL).",
        "",
        *_growth(run),
    ]
    return "\n".join(lines)


def _growth(run: Run) -> list[str]:
    """The growth table: one replica per store at both fleet sizes, and the cost ratio."""
    if not run.growth:
        return []
    small, large = run.settings.growth_agents
    lines = [
        f"## As the fleet grows: {small:,} against {large:,} agents",
        "",
        "The same decision on one replica of each store, at both fleet sizes, measured "
        "in the same interleaved rounds. Issue 12's target: a Redis-backed decision at "
        f"{large:,} agents costs at most 2x one at {small:,} (here: decisions/s, and "
        "lb-service + Redis CPU per decision).",
        "",
        "| setup | agents | decisions/s | lb-service CPU µs/decision | Redis CPU µs/decision |",
        "|---|---:|---:|---:|---:|",
    ]
    by_key = {(result.setup, agents): result for agents, result in run.growth}
    for setup in (MEMORY, "redis x1"):
        for agents in (small, large):
            r = by_key[setup, agents]
            lines.append(
                f"| {setup} | {agents:,} | {r.decisions_per_s:,.0f} "
                f"| {_figure(r.server_cpu_us)} | {_figure(r.redis_cpu_us)} |"
            )
    lines.append("")
    for setup in (MEMORY, "redis x1"):
        a, b = by_key[setup, small], by_key[setup, large]
        slower = a.decisions_per_s / b.decisions_per_s if b.decisions_per_s else float("nan")
        cost = _cpu(a), _cpu(b)
        cpu = (
            f", CPU per decision {cost[1] / cost[0]:.1f}x"
            if cost[0] and cost[1] is not None
            else ""
        )
        lines.append(
            f"- {setup}: {large:,} agents take {slower:.1f}x the time per decision of "
            f"{small:,}{cpu}."
        )
    lines.append("")
    return lines


def _cpu(result: Result) -> float | None:
    """lb-service and Redis CPU per decision, when both are known (Redis: 0 if not used)."""
    if result.server_cpu_us is None:
        return None
    if result.setup != MEMORY and result.redis_cpu_us is None:
        return None
    return result.server_cpu_us + (result.redis_cpu_us or 0.0)


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


#: Tiny sizes for tests/bench: proves the harness runs, measures nothing.
SMOKE = Settings(
    replicas=(1,),
    processes=1,
    threads=1,
    agents=3,
    growth_agents=(2, 4),
    duration_s=0.2,
    warmup_s=0.05,
    rounds=1,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("bench/cluster.md"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: measures nothing")
    args = parser.parse_args(argv)
    settings = SMOKE if args.smoke else Settings()
    run = measure(settings, "make bench-cluster", os.environ.get("REDIS_URL"))
    text = markdown(run)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
