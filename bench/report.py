"""BENCHMARKS.md and the decision-cost plot, rendered from one run's results."""

from __future__ import annotations

import datetime
import json
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.core import SIZES, TASKS, CoreResults
from bench.machine import Machine
from bench.memory import Footprint
from bench.rpc import Measurement, RpcResults
from lb_service.model import StrategyName

#: The figures measured before this suite's optimisations (see ``bench/before.json``).
BEFORE_FILE = Path(__file__).with_name("before.json")
#: Notes on the profile and what changed, written by people; included as they are.
FINDINGS_FILE = Path(__file__).with_name("findings.md")


@dataclass(frozen=True, slots=True)
class Run:
    """Everything one ``make bench`` measured."""

    command: str
    started: datetime.datetime
    seconds: float
    machine: Machine
    core: CoreResults
    rpc: RpcResults
    memory: list[Footprint]


@dataclass(frozen=True, slots=True)
class Target:
    """One of the issue's targets, the figure that decides it, and whether it is met."""

    part: str
    target: str
    figure: str
    met: bool


def targets(run: Run) -> list[Target]:
    """Judge every target of the issue against this run's figures."""
    core, rpc = run.core, run.rpc
    found: list[Target] = []
    at_1000 = [d for d in core.decisions if d.agents == 1_000]
    if at_1000:
        worst = max(at_1000, key=lambda d: d.us)
        found.append(
            Target(
                "Core",
                "≤ 20 µs per decision at 1,000 agents, every strategy, with and without a model",
                f"worst {worst.us:.1f} µs "
                f"({worst.strategy.value}, requirement {worst.requirement})",
                worst.us <= 20,
            )
        )
    if {100, 10_000} <= {d.agents for d in core.decisions}:
        growth = [
            (core.us(10_000, s, r) / core.us(100, s, r), s, r) for s in StrategyName for r in TASKS
        ]
        ratio, strategy, requirement = max(growth, key=lambda g: g[0])
        found.append(
            Target(
                "Core",
                "≤ 3× growth from 100 to 10,000 agents",
                f"worst {ratio:.2f}× ({strategy.value}, requirement {requirement})",
                ratio <= 3,
            )
        )
    found += rpc_targets(rpc)
    unary = next(m for m in rpc.batch if m.workload == "select")
    largest = max(rpc.batch, key=lambda m: m.decisions_per_rpc)
    gain = _ratio(largest.decisions_per_s, unary.decisions_per_s)
    found.append(
        Target(
            "Batch",
            "100 decisions per SelectAgents give ≥ 20× the decisions/s of unary SelectAgent",
            f"{gain:.1f}× at {largest.decisions_per_rpc:.0f} per call "
            f"({largest.decisions_per_s:,.0f} vs {unary.decisions_per_s:,.0f} decisions/s)",
            gain >= 20 and largest.decisions_per_rpc >= 100,
        )
    )
    quiet, watched = rpc.streams[0], max(rpc.streams.items())[1]
    kept = _ratio(watched.rpcs_per_s, quiet.rpcs_per_s)
    found.append(
        Target(
            "Streams",
            f"{max(rpc.streams)} open watchers cost SelectAgent ≤ 15% of its throughput",
            f"{1 - kept:.0%} lost ({watched.rpcs_per_s:,.0f} vs {quiet.rpcs_per_s:,.0f} RPC/s)",
            kept >= 0.85,
        )
    )
    for footprint in run.memory:
        found.append(
            Target(
                "Memory",
                f"≤ {footprint.budget:,} B per {footprint.record}",
                f"{footprint.bytes_each:,.0f} B",
                footprint.bytes_each <= footprint.budget,
            )
        )
    return found


def rpc_targets(rpc: RpcResults) -> list[Target]:
    """The issue's RPC targets: SelectAgent against the bare echo of the same run."""
    high = rpc.settings.concurrency
    bare_hi, select_hi = rpc.find("bare", high), rpc.find("select", high)
    bare_1, select_1 = rpc.find("bare", 1), rpc.find("select", 1)
    throughput = _ratio(select_hi.rpcs_per_s, bare_hi.rpcs_per_s)
    p50 = _ratio(select_1.p50_us, bare_1.p50_us)
    return [
        Target(
            "RPC",
            f"SelectAgent throughput ≥ 0.85× the bare echo at concurrency {high}",
            f"{throughput:.2f}× ({select_hi.rpcs_per_s:,.0f} vs {bare_hi.rpcs_per_s:,.0f} RPC/s)",
            throughput >= 0.85,
        ),
        Target(
            "RPC",
            "SelectAgent p50 ≤ 1.10× the bare echo at concurrency 1",
            f"{p50:.2f}× ({select_1.p50_us:,.0f} vs {bare_1.p50_us:,.0f} µs)",
            p50 <= 1.10,
        ),
    ]


def write(run: Run, markdown: Path, plot: Path) -> None:
    """Write BENCHMARKS.md and the plot; also keep the raw figures beside the plot as JSON."""
    plot_decisions(run.core, plot)
    relative = Path(os.path.relpath(plot.resolve(), markdown.resolve().parent))
    markdown.write_text(render(run, relative))
    plot.with_suffix(".json").write_text(json.dumps(_raw(run), indent=1, default=str) + "\n")


def render(run: Run, plot: Path) -> str:
    """BENCHMARKS.md for a run."""
    m = run.machine
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{run.command}` on {run.started:%Y-%m-%d %H:%M} UTC in {run.seconds:.0f} s."
        " Regenerate it with the same command; every figure below comes from that one run.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m.cpu} |",
        f"| cores | {m.cores} ({m.usable_cores} usable) |",
        f"| load average at start (1/5/15 min) | {m.load_average} |",
        f"| Python | {m.python} |",
        f"| grpcio / protobuf | {m.grpcio} / {m.protobuf} |",
        f"| system | {m.system} |",
        "",
        "The machine is shared and its speed drifts, so every figure sits next to a",
        "baseline measured in the same run, as a ratio: the scan-the-registry pick for the",
        "core, a bare grpc.aio echo server for RPCs, unary SelectAgent for batches, no",
        "watchers for streams, the issue's budget for memory.",
        "",
        "## Targets",
        "",
        "| part | target | this run | met |",
        "|---|---|---|---|",
        *(
            f"| {t.part} | {t.target} | {t.figure} | {'yes' if t.met else '**no**'} |"
            for t in targets(run)
        ),
        "",
        *_core(run.core, plot),
        *_rpc(run.rpc),
        *_batch(run.rpc),
        *_streams(run.rpc),
        *_memory(run.memory),
        *_before_after(run.core),
    ]
    if FINDINGS_FILE.exists():
        lines += [FINDINGS_FILE.read_text().rstrip(), ""]
    return "\n".join(lines)


def _core(core: CoreResults, plot: Path) -> list[str]:
    sizes = sorted({d.agents for d in core.decisions})
    header = " | ".join(f"{n:,} agents" for n in sizes)
    grows = {100, 10_000} <= set(sizes)
    lines = [
        "## 1. Core: cost of one decision",
        "",
        "`LoadBalancer.select` called directly on one event loop (no gRPC): µs per decision,",
        f"the median of {core.budget.repeats} timed runs, the best of {core.budget.passes} "
        "passes over the table. The fleet mixes GPU sizes; every agent serves one",
        "model and one agent in ten also serves a second one, which the *model* rows",
        "require. About half the agents hold open requests and every agent has a measured",
        "latency. Picks are made without `acquire`, so every repeat sees the same loads.",
        "In brackets: how many times faster than the same pick scanning the registry",
        "(the pre-index path, still used for candidates passed with a request).",
        "",
        f"| strategy | requirement | {header} |{' growth 100 → 10,000 |' if grows else ''}",
        f"|---|---|{'---:|' * len(sizes)}{'---:|' if grows else ''}",
    ]
    for strategy in StrategyName:
        for requirement in TASKS:
            cells = []
            for size in sizes:
                d = next(
                    d
                    for d in core.decisions
                    if (d.agents, d.strategy, d.requirement) == (size, strategy, requirement)
                )
                cells.append(f"{d.us:.1f} ({_ratio(d.scan_us, d.us):,.0f}×)")
            growth = ""
            if grows:
                ratio = _ratio(
                    core.us(10_000, strategy, requirement), core.us(100, strategy, requirement)
                )
                growth = f" {ratio:.2f}× |"
            lines.append(f"| {strategy.value} | {requirement} | {' | '.join(cells)} |{growth}")
    lines += [
        "",
        f"![decision cost against agent count]({plot.as_posix()})",
        "",
        "Request tracking at the same sizes, default strategy (median µs per pair):",
        "",
        f"| operation | {header} |",
        f"|---|{'---:|' * len(sizes)}",
    ]
    for operation in dict.fromkeys(t.operation for t in core.tracking):
        cells = [
            f"{next(t.us for t in core.tracking if (t.agents, t.operation) == (n, operation)):.1f}"
            for n in sizes
        ]
        lines.append(f"| {operation} | {' | '.join(cells)} |")
    return [
        *lines,
        "",
        "The fleet's agents have one completion each, and agents of one class (the same",
        "hardware and models: six classes here) read their class's figures as a prior",
        "(`lb_service.peers`), so every agent is trusted. Each pair ends one request, on",
        "one agent, which moves its class's figures; when the class's rounded prior moves,",
        "the index re-ranks the whole class (a tenth to a fifth of the fleet here). With",
        "every request on one agent, as here, that happens on about one end in five; with",
        "requests spread over a measured class, on about one in 200.",
        "",
    ]


def _rpc(rpc: RpcResults) -> list[str]:
    s = rpc.settings
    lines = [
        "## 2. RPC: SelectAgent against a bare grpc.aio echo",
        "",
        f"A server process (`bench/server.py`: `LoadBalancerServer` with {s.agents} agents, the",
        "stack `lb-service serve` runs, on the event loop it runs on by default: uvloop where",
        "installed) and a **bare echo** process (`bench/bare.py`: a grpc.aio server and one",
        "method on asyncio's own loop, with no interceptors, no wrapping, no logging and",
        "no other service; a SelectAgentRequest in, an empty SelectAgentResponse out), both",
        "pinned to the same core and loaded in turn; client processes with blocking stubs",
        "on the other core(s). Concurrency 1 is one process with one thread; concurrency",
        f"{s.concurrency} is {s.processes} processes × {s.threads} threads. Ratios are to the "
        "bare echo of the same run.",
        "The **floor** is the same echo served by lb-service's server (`/bench.Floor/Echo`,",
        "behind its stack: observation applies, the lb.v1-only steps do not), so",
        "floor against bare is what the stack costs every RPC, less what the faster loop",
        "saves (a floor above 1.00x: the loop saves more than the stack costs), and",
        "SelectAgent − floor is the servicer, the decision and answering with an agent.",
        "*acquire + end* alternates",
        "SelectAgent(acquire) and RecordRequestEnd of that lease; its RPC/s counts both.",
        f"Each row is the best of {s.rounds} interleaved {s.duration_s:g} s runs "
        f"(after {s.warmup_s:g} s of warm-up).",
        "Server CPU is the serving process's user + system time per RPC.",
        "",
        "| workload | concurrency | RPC/s | p50 µs | p99 µs | server CPU µs/RPC | "
        "RPC/s vs bare echo | p50 vs bare echo |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    names = {
        "bare": "bare echo (grpc.aio only)",
        "floor": "floor (echo behind the stack)",
        "select": "SelectAgent",
        "acquire": "acquire + end",
    }
    for concurrency in (1, s.concurrency):
        bare = rpc.find("bare", concurrency)
        for workload, name in names.items():
            m = rpc.find(workload, concurrency)
            lines.append(
                f"| {name} | {concurrency} | {m.rpcs_per_s:,.0f} | {m.p50_us:,.0f} | "
                f"{m.p99_us:,.0f} | {_cpu(m)} | {_ratio(m.rpcs_per_s, bare.rpcs_per_s):.2f}× | "
                f"{_ratio(m.p50_us, bare.p50_us):.2f}× |"
            )
    return [*lines, ""]


def rpc_section(rpc: RpcResults, load_average: str) -> str:
    """The RPC section and its targets on their own, for ``python -m bench --part rpc``."""
    lines = [f"load average at start (1/5/15 min): {load_average}", "", *_rpc(rpc)]
    lines += [f"{'met' if t.met else 'NOT MET'}: {t.target}: {t.figure}" for t in rpc_targets(rpc)]
    return "\n".join(lines)


def _batch(rpc: RpcResults) -> list[str]:
    unary = next(m for m in rpc.batch if m.workload == "select")
    lines = [
        "## 3. Batch: SelectAgents",
        "",
        f"The same server and clients at concurrency {rpc.settings.concurrency}; every entry",
        "is a pick without requirements or `acquire`. Decisions/s is RPC/s times the batch",
        "size; the ratio is to unary SelectAgent measured in the same interleaved rounds.",
        "",
        "| call | decisions per call | RPC/s | decisions/s | p50 µs | "
        "server CPU µs/decision | decisions/s vs unary |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for m in rpc.batch:
        name = "SelectAgent" if m.workload == "select" else "SelectAgents"
        cpu = (
            f"{m.server_cpu_us / m.decisions_per_rpc:,.1f}" if m.server_cpu_us is not None else "—"
        )
        lines.append(
            f"| {name} | {m.decisions_per_rpc:.0f} | {m.rpcs_per_s:,.0f} | "
            f"{m.decisions_per_s:,.0f} | {m.p50_us:,.0f} | {cpu} | "
            f"{_ratio(m.decisions_per_s, unary.decisions_per_s):.1f}× |"
        )
    return [*lines, ""]


def _streams(rpc: RpcResults) -> list[str]:
    quiet = rpc.streams[0]
    lines = [
        "## 4. Streams: SelectAgent with WatchLoads subscribers open",
        "",
        f"SelectAgent at concurrency {rpc.settings.concurrency} while another process holds",
        "WatchLoads streams open (every agent, the default 100 ms pace) and reads every",
        "update. Every pick changes the store's version, so each watcher wakes once per",
        "interval and reads the loads.",
        "",
        "| watchers | RPC/s | p50 µs | p99 µs | server CPU µs/RPC | RPC/s vs no watchers |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for watchers, m in sorted(rpc.streams.items()):
        lines.append(
            f"| {watchers} | {m.rpcs_per_s:,.0f} | {m.p50_us:,.0f} | {m.p99_us:,.0f} | "
            f"{_cpu(m)} | {_ratio(m.rpcs_per_s, quiet.rpcs_per_s):.2f}× |"
        )
    return [*lines, ""]


def _memory(memory: Sequence[Footprint]) -> list[str]:
    lines = [
        "## 5. Memory",
        "",
        "Growth of `tracemalloc`'s traced memory across the store operations that create",
        "the records, per record. Agents: `put_agent` of a mixed fleet (the Agent objects",
        "included) and one pick, which builds the index they are picked through. Sessions:",
        "`commit_pick` binding ids like `session-0000042` over 100 agents. Leases:",
        "`open_lease` over 100 agents.",
        "",
        "| record | count | bytes each | budget | vs budget |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in memory:
        lines.append(
            f"| {f.record} | {f.count:,} | {f.bytes_each:,.0f} | {f.budget:,} | "
            f"{f.bytes_each / f.budget:.2f}× |"
        )
    return [*lines, ""]


def _before_after(core: CoreResults) -> list[str]:
    if not BEFORE_FILE.exists():
        return []
    before = json.loads(BEFORE_FILE.read_text())
    sizes = [n for n in SIZES if str(n) in before["decisions_us"]]
    lines = [
        "## Before and after",
        "",
        f"{before['note']}",
        "",
        "| strategy | requirement | "
        + " | ".join(f"{n:,} agents before → now" for n in sizes)
        + " |",
        f"|---|---|{'---:|' * len(sizes)}",
    ]
    for strategy in StrategyName:
        for requirement in TASKS:
            cells = []
            for n in sizes:
                was = before["decisions_us"][str(n)][strategy.value][requirement]
                now = _maybe(core, n, strategy, requirement)
                cells.append(f"{was:,.0f} → {now}" if now else f"{was:,.0f} → —")
            lines.append(f"| {strategy.value} | {requirement} | {' | '.join(cells)} |")
    return [*lines, ""]


def _maybe(core: CoreResults, agents: int, strategy: StrategyName, requirement: str) -> str:
    try:
        return f"{core.us(agents, strategy, requirement):.1f}"
    except StopIteration:
        return ""


def _ratio(value: float, baseline: float) -> float:
    """``value / baseline``, or NaN when the baseline measured nothing (a smoke run)."""
    return value / baseline if baseline else math.nan


def _cpu(m: Measurement) -> str:
    return f"{m.server_cpu_us:,.0f}" if m.server_cpu_us is not None else "—"


def plot_decisions(core: CoreResults, path: Path) -> None:
    """Plot µs per decision against registered agents, one line per strategy and requirement."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(8, 5), dpi=100)
    sizes = sorted({d.agents for d in core.decisions})
    for strategy in StrategyName:
        for requirement, style in zip(TASKS, ("-", "--"), strict=True):
            axes.plot(
                sizes,
                [core.us(n, strategy, requirement) for n in sizes],
                style,
                marker="o",
                label=f"{strategy.value} ({requirement})",
            )
    scan = [statistics.median(d.scan_us for d in core.decisions if d.agents == n) for n in sizes]
    axes.plot(sizes, scan, ":", color="grey", marker="x", label="registry scan (median)")
    axes.axhline(20, color="red", linewidth=0.8, label="target at 1,000 agents: 20 µs")
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="registered agents",
        ylabel="µs per decision (median)",
        title="LoadBalancer.select: cost of one decision",
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _raw(run: Run) -> dict[str, object]:
    return {
        "command": run.command,
        "started": run.started.isoformat(),
        "machine": asdict(run.machine),
        "core": [asdict(d) for d in run.core.decisions],
        "tracking": [asdict(t) for t in run.core.tracking],
        "rpc": [asdict(m) for m in _all(run.rpc)],
        "memory": [asdict(f) for f in run.memory],
    }


def _all(rpc: RpcResults) -> Iterable[Measurement]:
    yield from rpc.unary
    yield from rpc.batch
    yield from rpc.streams.values()
