"""``python -m bench`` (``make bench``): run every part and write BENCHMARKS.md and the plot."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import core, machine, memory, report, rpc
from bench.timing import Budget


@dataclass(frozen=True, slots=True)
class Plan:
    """How big and how long each part runs."""

    core_sizes: tuple[int, ...] = core.SIZES
    budget: Budget = field(default_factory=Budget)
    rpc: rpc.Settings = field(default_factory=rpc.Settings)
    memory_agents: int = 10_000
    memory_records: int = 100_000


#: What ``make bench`` runs: the issue's sizes, about three minutes on two cores.
FULL = Plan()
#: The same code with tiny sizes and no meaningful timing, for tests/bench/test_smoke.py.
SMOKE = Plan(
    core_sizes=(10, 100),
    budget=Budget(repeats=1, repeat_s=0.001, min_calls=1, passes=1),
    rpc=rpc.Settings(
        duration_s=0.1,
        warmup_s=0.02,
        rounds=1,
        processes=2,
        threads=2,
        agents=10,
        batches=(1, 3),
        watchers=3,
        start_delay_s=0.1,
    ),
    memory_agents=50,
    memory_records=200,
)


def measure(plan: Plan, command: str, progress: bool = False) -> report.Run:
    """Run every part of the suite under ``plan``."""
    started = datetime.datetime.now(datetime.UTC)
    clock = time.monotonic()
    described = machine.describe()

    def say(text: str) -> None:
        if progress:
            print(f"[{time.monotonic() - clock:5.0f} s] {text}", file=sys.stderr, flush=True)

    say("1/5 core: every strategy at every size")
    core_results = core.run(plan.core_sizes, plan.budget)
    say("2-4/5 rpc, batch and streams against a server process")
    rpc_results = rpc.run(plan.rpc)
    say("5/5 memory")
    footprints = memory.run(plan.memory_agents, plan.memory_records, plan.memory_records)
    return report.Run(
        command=command,
        started=started,
        seconds=time.monotonic() - clock,
        machine=described,
        core=core_results,
        rpc=rpc_results,
        memory=footprints,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--plot", type=Path, default=Path("bench/decision-cost.png"))
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks the harness, measures nothing"
    )
    parser.add_argument(
        "--part",
        choices=["all", "rpc"],
        default="all",
        help="rpc: only parts 2-4, printed with the RPC targets; no file is written (~1½ min)",
    )
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.part == "rpc":
        load = machine.describe().load_average
        print(report.rpc_section(rpc.run(plan.rpc), load))
        return 0
    run = measure(plan, "make bench", progress=True)
    report.write(run, args.output, args.plot)
    print(f"wrote {args.output} and {args.plot} in {run.seconds:.0f} s", file=sys.stderr)
    for target in report.targets(run):
        print(f"  {'met' if target.met else 'NOT MET'}: {target.target}: {target.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
