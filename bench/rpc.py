"""Parts 2-4: SelectAgent against a bare echo, SelectAgents batches, WatchLoads subscribers.

One server process (``bench.server``) serves every lb-service scenario; a second one
(``bench.bare``, a grpc.aio server with nothing else in it) serves the bare echo that
SelectAgent is judged against, in the same interleaved rounds. Client processes
(``bench.client``) drive them. Where the machine has two cores or more, both servers
are pinned to the first core (only one of them is loaded at a time) and the clients
to the others, so the load never takes the server's core. Each scenario reports
client-side throughput and latency and the serving process's own CPU time per RPC
(from /proc), which stays meaningful even when the clients, not the server, are what
limits throughput.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where ``python -m bench.*`` finds the bench package.
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Settings:
    """How long each scenario runs and how it is driven; the smoke test shrinks these."""

    duration_s: float = 2.5
    warmup_s: float = 0.5
    #: Each scenario runs this many times, interleaved with the ones it is compared to;
    #: the round with the best throughput is kept (the least disturbed by neighbours).
    rounds: int = 4
    #: Client processes and threads per process at concurrency 32.
    processes: int = 4
    threads: int = 8
    agents: int = 100
    batches: tuple[int, ...] = (1, 10, 100)
    watchers: int = 100
    #: Seconds between handing a scenario to the (running) client processes and its start.
    start_delay_s: float = 0.3

    @property
    def concurrency(self) -> int:
        """Calls in flight at the higher concurrency."""
        return self.processes * self.threads


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one scenario measured: RPCs completed, their latencies, the server's CPU."""

    workload: str
    concurrency: int
    rpcs_per_s: float
    p50_us: float
    p99_us: float
    #: Server CPU time (user + system) per RPC, in µs; None where /proc is not available.
    server_cpu_us: float | None
    #: Decisions per RPC (the batch size for SelectAgents, else 1 per SelectAgent).
    decisions_per_rpc: float = 1.0

    @property
    def decisions_per_s(self) -> float:
        """Selections made per second."""
        return self.rpcs_per_s * self.decisions_per_rpc


@dataclass(frozen=True, slots=True)
class RpcResults:
    """Everything parts 2-4 measured."""

    settings: Settings
    unary: tuple[Measurement, ...]
    batch: tuple[Measurement, ...]
    streams: dict[int, Measurement] = field(default_factory=dict)

    def find(self, workload: str, concurrency: int) -> Measurement:
        """The unary measurement of ``workload`` at ``concurrency``."""
        return next(m for m in self.unary if (m.workload, m.concurrency) == (workload, concurrency))


def run(settings: Settings | None = None) -> RpcResults:
    """Start a server process and measure parts 2, 3 and 4 against it."""
    settings = settings or Settings()
    with (
        _server("bench.server", "--agents", str(settings.agents)) as (target, pid),
        _server("bench.bare") as bare,
        _clients(settings.processes + 1) as clients,
    ):
        driver = _Driver({"": (target, pid), "bare": bare}, settings, clients)
        unary = [
            m
            for concurrency in (1, settings.concurrency)
            for m in driver.compare(UNARY, concurrency)
        ]
        batch = driver.compare(
            ("select", *(f"batch:{size}" for size in settings.batches)), settings.concurrency
        )
        quiet, watched = driver.compare(
            ("select", "select"), settings.concurrency, watchers=(0, settings.watchers)
        )
        streams = {0: quiet, settings.watchers: watched}
    return RpcResults(settings, tuple(unary), tuple(batch), streams)


#: The unary scenarios, compared in the same interleaved rounds.
UNARY = ("bare", "floor", "select", "acquire")


class _Driver:
    """Runs scenarios against the server processes with a pool of client processes."""

    def __init__(
        self,
        servers: dict[str, tuple[str, int]],
        settings: Settings,
        clients: list[subprocess.Popen[str]],
    ) -> None:
        # Address and pid by workload; "" is lb-service's server, which serves the rest.
        self._servers = servers
        self._settings = settings
        # The last client process holds the watchers; the others call.
        self._callers, self._watcher = clients[:-1], clients[-1]
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        # The server has the first CPU to itself; clients share the rest.
        self._client_cpus = cpus[1:] if len(cpus) > 1 else []

    def compare(
        self, workloads: Sequence[str], concurrency: int, watchers: Sequence[int] = ()
    ) -> list[Measurement]:
        """Measure scenarios in interleaved rounds; keep each one's best round.

        ``watchers`` gives, per workload, how many WatchLoads streams stay open meanwhile.
        """
        scenarios = list(zip(workloads, watchers or [0] * len(workloads), strict=True))
        rounds: list[list[Measurement]] = [[] for _ in scenarios]
        for _ in range(self._settings.rounds):
            for found, (workload, watching) in zip(rounds, scenarios, strict=True):
                found.append(self.measure(workload, concurrency, watching))
        return [max(found, key=lambda m: m.rpcs_per_s) for found in rounds]

    def measure(self, workload: str, concurrency: int, watchers: int = 0) -> Measurement:
        """Run one scenario: ``concurrency`` blocking callers, optionally with open watchers."""
        s = self._settings
        name, _, size = workload.partition(":")
        target, pid = self._servers.get(name, self._servers[""])
        processes = 1 if concurrency == 1 else s.processes
        spec: dict[str, Any] = {
            "target": target,
            "workload": name,
            "batch": int(size or 1),
            "threads": concurrency // processes,
            "warmup_s": s.warmup_s,
            "duration_s": s.duration_s,
            "cpus": self._client_cpus,
        }
        if watchers:
            watch = {**spec, "workload": "watch", "streams": watchers, "start_at": time.time()}
            # The watchers stay open until the callers' window has closed.
            watch["warmup_s"] = s.start_delay_s + s.warmup_s
            _send(self._watcher, watch)
            _receive(self._watcher)  # every stream is open and has had its first snapshot
        spec["start_at"] = start_at = time.time() + s.start_delay_s
        callers = self._callers[:processes]
        for caller in callers:
            _send(caller, spec)
        time.sleep(max(0.0, start_at + s.warmup_s - time.time()))
        cpu_before = _cpu_seconds(pid)
        time.sleep(s.duration_s)
        cpu_after = _cpu_seconds(pid)
        latencies = sorted(x for c in callers for x in _receive(c)["latencies_us"])
        if watchers:
            _receive(self._watcher)
        rpcs = len(latencies)
        server_cpu = (
            None
            if cpu_before is None or cpu_after is None or not rpcs
            else (cpu_after - cpu_before) * 1e6 / rpcs
        )
        return Measurement(
            workload=workload,
            concurrency=concurrency,
            rpcs_per_s=rpcs / s.duration_s,
            p50_us=_percentile(latencies, 0.50),
            p99_us=_percentile(latencies, 0.99),
            server_cpu_us=server_cpu,
            decisions_per_rpc=float(size) if size else 1.0,
        )


@contextmanager
def _clients(count: int) -> Iterator[list[subprocess.Popen[str]]]:
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.client"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_env(),
            text=True,
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            assert process.stdin is not None
            process.stdin.close()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _send(process: subprocess.Popen[str], spec: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(spec) + "\n")
    process.stdin.flush()


def _receive(process: subprocess.Popen[str]) -> dict[str, Any]:
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        raise RuntimeError(f"a benchmark client exited with status {process.wait()}")
    result: dict[str, Any] = json.loads(line)
    return result


@contextmanager
def _server(module: str, *args: str) -> Iterator[tuple[str, int]]:
    """Start ``python -m module``; yield its address and pid once it serves."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin = ["--cpu", str(cpus[0])] if len(cpus) > 1 else []
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args, *pin],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=_env(),
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("port "):
            raise RuntimeError(f"the benchmark server {module} did not start")
        yield f"127.0.0.1:{line.split()[1]}", process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": f"{_ROOT}{os.pathsep}{path}" if path else str(_ROOT)}


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used, from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After the command name: utime and stime are the 12th and 13th fields, in ticks.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    return statistics.quantiles(sorted_values, n=100, method="inclusive")[
        min(98, max(0, round(fraction * 100) - 1))
    ]
