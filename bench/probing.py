"""What probing costs: ``python -m bench.probing`` (``make bench-probing``).

Issue 13's targets: probing 1,000 emulated agents at a 1 s interval costs at most 10% of
one core, and SelectAgent throughput while probing stays within 5% of without. One run:

1. ``lb-service emulate`` serves 1,000 agents on loopback ports (half Ollama, half vLLM);
   ``lb-service serve --config`` declares them with their engines, ``--probe-interval 1``.
2. Once every agent has been probed healthy, the server's CPU time (user + system, from
   ``/proc/PID/stat``) is read over a window with no other traffic, as are the probes the
   server counted (``lb_probe_duration_seconds_count`` on its metrics port).
3. SelectAgent throughput from client processes (``bench.client``), in interleaved
   rounds: with probing, then with the same 1,000 agents registered again without an
   engine (not probed), and so on; each keeps its best round.
4. The server's CPU over the same window once nothing is probed: the floor under step 2.

On two cores or more the server is pinned to the first core, the clients and the
emulator to the others. Writes a Markdown report (``--output``) and prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import machine
from bench.rpc import _clients, _cpu_seconds, _env, _receive, _send
from lb_service import config as cfg
from lb_service.client import LoadBalancerClient
from lb_service.model import Agent, AgentHealth, Engine

LB_SERVICE = str(Path(sys.executable).with_name("lb-service"))
PROBED, PLAIN = "probing", "not probing"
_PROBES = re.compile(r"^lb_probe_duration_seconds_count(?:\{[^}]*\})? ([0-9.e+]+)$", re.M)


@dataclass(frozen=True, slots=True)
class Settings:
    """How the run is sized; the smoke test shrinks it."""

    agents: int = 1000
    interval_s: float = 1.0
    #: Seconds of CPU measured with probing and without; after ``settle_s``.
    cpu_window_s: float = 20.0
    settle_s: float = 3.0
    #: SelectAgent load: client processes x threads, and each round's length.
    processes: int = 2
    threads: int = 8
    duration_s: float = 5.0
    warmup_s: float = 1.0
    rounds: int = 3
    start_delay_s: float = 0.3
    #: Longest wait for every agent to be probed healthy.
    ready_s: float = 90.0


@dataclass(frozen=True, slots=True)
class Idle:
    """A window without SelectAgent traffic: the server's and the emulator's CPU."""

    seconds: float
    server_cpu_s: float | None
    emulator_cpu_s: float | None
    probes: float | None

    @property
    def server_share(self) -> float | None:
        """The server's CPU as a share of one core."""
        return None if self.server_cpu_s is None else self.server_cpu_s / self.seconds

    @property
    def emulator_share(self) -> float | None:
        """The emulator's CPU (answering the probes) as a share of one core."""
        return None if self.emulator_cpu_s is None else self.emulator_cpu_s / self.seconds

    @property
    def probes_per_s(self) -> float | None:
        """Probes the server finished per second (its own count)."""
        return None if self.probes is None else self.probes / self.seconds


@dataclass(frozen=True, slots=True)
class Load:
    """A SelectAgent round: throughput and the server's CPU per call."""

    phase: str
    selects_per_s: float
    server_cpu_us: float | None


@dataclass(frozen=True, slots=True)
class Run:
    """Everything one run measured."""

    settings: Settings
    command: str
    started: datetime.datetime
    seconds: float
    machine: machine.Machine
    idle: dict[str, Idle]
    best: dict[str, Load]
    rounds: list[Load]


def measure(settings: Settings, command: str) -> Run:
    """Run the whole measurement once (see the module's docstring)."""
    started, clock = datetime.datetime.now(datetime.UTC), time.monotonic()
    described = machine.describe()
    server_cpus, other_cpus = _split_cpus()
    with tempfile.TemporaryDirectory(prefix="lb-bench-probing-") as scratch:
        agents_file = Path(scratch) / "agents.yaml"
        with (
            _emulator(settings.agents, Path(scratch), agents_file, other_cpus) as emulator_pid,
            _server(agents_file, settings.interval_s, server_cpus) as (target, pid, metrics),
            LoadBalancerClient(target) as admin,
            _clients(settings.processes) as clients,
        ):
            probed = cfg.declared_from(cfg.read_file(agents_file), agents_file).agents
            plain = [dataclasses.replace(a, engine=Engine.UNSPECIFIED) for a in probed]
            _say(f"{len(probed)} agents declared; waiting for every one to be probed healthy")
            _all_healthy(admin, settings.ready_s)
            time.sleep(settings.settle_s)
            idle = {PROBED: _idle(settings, pid, emulator_pid, metrics)}
            rounds: list[Load] = []
            for round_ in range(settings.rounds):
                for phase, agents in ((PROBED, probed), (PLAIN, plain)):
                    _say(f"round {round_ + 1}/{settings.rounds}: SelectAgent, {phase}")
                    _register(admin, agents, settings)
                    rounds.append(_load(settings, phase, target, pid, clients, other_cpus))
            # The last round left the agents unprobed: the floor under the probing figure.
            idle[PLAIN] = _idle(settings, pid, emulator_pid, metrics)
    best = {
        phase: max((r for r in rounds if r.phase == phase), key=lambda r: r.selects_per_s)
        for phase in (PROBED, PLAIN)
    }
    return Run(settings, command, started, time.monotonic() - clock, described, idle, best, rounds)


def _split_cpus() -> tuple[list[int], list[int]]:
    """The server's core and everyone else's: [first], [the rest] when there are two."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return (cpus[:1], cpus[1:]) if len(cpus) > 1 else ([], [])


def _pinned(cpus: list[int]) -> Callable[[], None] | None:
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


@contextmanager
def _emulator(count: int, scratch: Path, agents_file: Path, cpus: list[int]) -> Iterator[int]:
    """``lb-service emulate`` with ``count`` agents, half Ollama and half vLLM; its pid."""
    fleet = scratch / "fleet.yaml"
    groups = [("ollama", count - count // 2), ("vllm", count // 2)]
    fleet.write_text(
        "models:\n  m: {service_ms: {mean: 10, sigma: 0}}\ncluster:\n"
        + "".join(
            f"  - {{id: {engine}, count: {n}, engine: {engine}, models: [m]}}\n"
            for engine, n in groups
            if n
        )
    )
    log = (scratch / "emulator.log").open("w")
    process = subprocess.Popen(
        [LB_SERVICE, "emulate", str(fleet), "--agents-out", str(agents_file)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        preexec_fn=_pinned(cpus),
    )
    log.close()
    try:
        deadline = time.monotonic() + 60
        while "admin:" not in (scratch / "emulator.log").read_text():
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"the emulator did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield process.pid
    finally:
        _stop(process)


@contextmanager
def _server(
    agents_file: Path, interval_s: float, cpus: list[int]
) -> Iterator[tuple[str, int, str]]:
    """``lb-service serve`` probing ``agents_file``'s agents: (target, pid, metrics URL)."""
    port, metrics_port = _free_port(), _free_port()
    process = subprocess.Popen(
        [LB_SERVICE, "serve", "--listen", f"127.0.0.1:{port}", "--config", str(agents_file),
         "--probe-interval", str(interval_s), "--metrics-listen", f"127.0.0.1:{metrics_port}",
         "--log-level", "warning", "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
        preexec_fn=_pinned(cpus),
    )  # fmt: skip
    try:
        metrics = f"http://127.0.0.1:{metrics_port}/metrics"
        deadline = time.monotonic() + 60
        while _probes(metrics) is None:
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"lb-service did not start (exit {process.poll()})")
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", process.pid, metrics
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _probes(metrics_url: str) -> float | None:
    """Probes the server has finished, summed over engines; None if it does not answer."""
    try:
        text = httpx.get(metrics_url, timeout=5.0, trust_env=False).text
    except httpx.HTTPError:
        return None
    return sum(float(count) for count in _PROBES.findall(text))


def _all_healthy(admin: LoadBalancerClient, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while any(load.health is not AgentHealth.HEALTHY for load in admin.loads()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"not every agent was probed healthy within {within_s:g} s")
        time.sleep(0.5)


def _register(admin: LoadBalancerClient, agents: Sequence[Agent], settings: Settings) -> None:
    """Register ``agents`` again (with engines or without), then let the change settle."""
    for agent in agents:
        admin.register(agent)
    if agents and agents[0].engine is not Engine.UNSPECIFIED:
        _all_healthy(admin, settings.ready_s)
    time.sleep(settings.settle_s)


def _idle(settings: Settings, pid: int, emulator_pid: int, metrics: str) -> Idle:
    before = (_cpu_seconds(pid), _cpu_seconds(emulator_pid), _probes(metrics))
    time.sleep(settings.cpu_window_s)
    after = (_cpu_seconds(pid), _cpu_seconds(emulator_pid), _probes(metrics))
    server, emulator, probes = (
        None if a is None or b is None else a - b for b, a in zip(before, after, strict=True)
    )
    return Idle(settings.cpu_window_s, server, emulator, probes)


def _load(
    settings: Settings,
    phase: str,
    target: str,
    pid: int,
    clients: list[subprocess.Popen[str]],
    cpus: list[int],
) -> Load:
    start_at = time.time() + settings.start_delay_s
    for client in clients:
        _send(
            client,
            {
                "target": target,
                "workload": "select",
                "batch": 1,
                "threads": settings.threads,
                "warmup_s": settings.warmup_s,
                "duration_s": settings.duration_s,
                "cpus": cpus,
                "start_at": start_at,
            },
        )
    time.sleep(max(0.0, start_at + settings.warmup_s - time.time()))
    before = _cpu_seconds(pid)
    time.sleep(settings.duration_s)
    after = _cpu_seconds(pid)
    calls = sum(len(_receive(client)["latencies_us"]) for client in clients)
    cpu_us = None if before is None or after is None or not calls else (after - before) * 1e6
    return Load(phase, calls / settings.duration_s, None if cpu_us is None else cpu_us / calls)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _say(text: str) -> None:
    print(f"bench.probing: {text}", file=sys.stderr, flush=True)


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def _number(value: float | None, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,.0f}{unit}"


def markdown(run: Run) -> str:
    """The report: the setting, the idle CPU with and without probing, the throughput ratio."""
    s, m = run.settings, run.machine
    probing, plain = run.idle[PROBED], run.idle[PLAIN]
    with_probes, without = run.best[PROBED], run.best[PLAIN]
    ratio = with_probes.selects_per_s / without.selects_per_s if without.selects_per_s else 0.0
    added = (
        None
        if probing.server_share is None or plain.server_share is None
        else probing.server_share - plain.server_share
    )
    lines = [
        "# What probing costs",
        "",
        f"`{run.command}` on {run.started:%Y-%m-%d %H:%M} UTC, {run.seconds:.0f} s. "
        f"{m.cpu}, {m.usable_cores} usable cores (load {m.load_average} at the start; the "
        f"machine is shared, so other work ran beside it), {m.python}, grpcio {m.grpcio}.",
        "",
        f"{s.agents} agents emulated by one `lb-service emulate` process (half Ollama, "
        f"half vLLM) on loopback, probed by `lb-service serve --probe-interval "
        f"{s.interval_s:g}`. The server is pinned to one core, the emulator and the "
        "clients to the other.",
        "",
        "| server without SelectAgent traffic | probing | not probing |",
        "|---|---:|---:|",
        f"| server CPU, share of one core ({s.cpu_window_s:g} s window) "
        f"| {_share(probing.server_share)} | {_share(plain.server_share)} |",
        f"| probes finished per second | {_number(probing.probes_per_s)} "
        f"| {_number(plain.probes_per_s)} |",
        f"| emulator CPU, share of one core | "
        f"{_share(probing.emulator_share)} | {_share(plain.emulator_share)} |",
        "",
        f"Probing costs the server **{_share(added)} of one core** over not probing "
        f"(target: at most 10%).",
        "",
        f"| SelectAgent, {s.processes} client processes x {s.threads} threads | probing "
        "| not probing |",
        "|---|---:|---:|",
        f"| calls/s (best of {s.rounds} interleaved rounds of {s.duration_s:g} s) "
        f"| {_number(with_probes.selects_per_s)} | {_number(without.selects_per_s)} |",
        f"| server CPU µs per call | {_number(with_probes.server_cpu_us)} "
        f"| {_number(without.server_cpu_us)} |",
        "",
        f"Throughput while probing: **{ratio:.2f}x** the throughput without (target: "
        "at least 0.95x). Every round: "
        + ", ".join(f"{r.phase} {r.selects_per_s:,.0f}/s" for r in run.rounds)
        + ".",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


#: Tiny sizes for tests/bench: proves the harness runs, measures nothing. Each load
#: window is long enough (1.5 s after a 0.3 s warm-up) that a call completes in it even
#: on a crowded machine: 0.3 s windows saw none while simulators shared both cores.
SMOKE = Settings(
    agents=6,
    interval_s=0.2,
    cpu_window_s=0.5,
    settle_s=0.2,
    processes=1,
    threads=1,
    duration_s=1.5,
    warmup_s=0.3,
    rounds=1,
    ready_s=30.0,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.probing", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("bench/probing.md"))
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: measures nothing")
    args = parser.parse_args(argv)
    run = measure(SMOKE if args.smoke else Settings(), "make bench-probing")
    text = markdown(run)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
