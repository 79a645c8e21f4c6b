"""``lb-service simulate``: argument wiring and the run from scenario file to report.

Exit status: 0 after a run (a missed target is reported, not an error); 1 when a target
is missed under ``--check-targets``, or when the JSON or plots cannot be written
(matplotlib missing, a path not writable); 2 for a bad scenario file or arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lb_service.simulate import plots
from lb_service.simulate.engine import PolicyRun, run_all
from lb_service.simulate.metrics import summarise
from lb_service.simulate.policies import DEFAULT_POLICIES, PolicySpec
from lb_service.simulate.report import ProgressBar, Report, render, to_json
from lb_service.simulate.scenario import Scenario, ScenarioError, load
from lb_service.simulate.targets import judge
from lb_service.simulate.workload import Requests, generate

PROG = "lb-service simulate"


class UsageError(Exception):
    """The arguments do not fit the scenario; exit status 2."""


def add_command(commands: Any) -> None:
    """Add the ``simulate`` subcommand to the ``lb-service`` subparsers."""
    parser = commands.add_parser(
        "simulate",
        help="compare strategies in a discrete-event simulation of a cluster",
        description=(
            "Replay a scenario's workload on a virtual clock against the real balancer, once "
            "per policy (strategies with options, plus the random and oracle references), "
            "and report throughput, response times, balance, refusals and the scenario's "
            "targets. Deterministic for a seed."
        ),
    )
    parser.add_argument("scenario", type=Path, metavar="SCENARIO.yaml", help="the scenario file")
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this policy (repeat for several; default: the scenario's list, or all "
        f"built-in: {', '.join(p.name for p in DEFAULT_POLICIES)})",
    )
    parser.add_argument(
        "--seed", type=_whole, metavar="N", help="random seed (default: the scenario's)"
    )
    parser.add_argument(
        "--json", metavar="PATH|-", help="also write the results as JSON to PATH, or stdout for -"
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help=f"write {plots.CDF_FILE} and {plots.LOAD_FILE} into DIR (needs matplotlib)",
    )
    parser.add_argument(
        "--duration",
        type=_seconds,
        metavar="S",
        help="simulated seconds of arrivals (default: the scenario's duration_s)",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar and no table (errors only)"
    )
    parser.add_argument(
        "--check-targets",
        action="store_true",
        help="exit with status 1 when a target is missed",
    )


def _whole(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def run(args: dict[str, Any]) -> int:
    """Run the command from parsed arguments; return the exit status."""
    path: Path = args["scenario"]
    try:
        scenario = load(path)
        scenario = _with_duration(scenario, args.get("duration"))
        policies = select_policies(scenario, args.get("policy") or [])
    except ScenarioError as error:
        print(f"{PROG}: error: {path}: {error}", file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    plot_dir: Path | None = args.get("plots")
    if plot_dir is not None:
        try:
            plots.check()
        except plots.PlotsUnavailable as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            return 1
    seed = scenario.seed if args.get("seed") is None else int(args["seed"])
    quiet = bool(args.get("quiet"))
    json_to = args.get("json")
    began = time.perf_counter()
    progress = None if quiet else ProgressBar(sys.stderr, policies)
    report, runs = simulate(scenario, policies, seed, progress)
    wall_s = time.perf_counter() - began
    if json_to == "-":
        sys.stdout.write(to_json(report))
    if not quiet:
        # With the JSON on stdout the table moves to stderr, so stdout stays parseable.
        table_to = sys.stderr if json_to == "-" else sys.stdout
        table_to.write(render(report, wall_s))
    try:
        # Plots first: they create their directory, so the JSON may be written into it.
        if plot_dir is not None:
            written = plots.write(plot_dir, scenario, report.requests, runs)
            if not quiet:
                print(f"plots: {', '.join(str(p) for p in written)}", file=sys.stderr)
        if json_to and json_to != "-":
            Path(json_to).write_text(to_json(report))
    except OSError as error:
        # The results are on the terminal already; only the files are missing.
        print(f"{PROG}: error: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 1
    if args.get("check_targets") and report.missed:
        if quiet:
            for target in report.missed:
                print(f"{PROG}: target missed: {target.target}", file=sys.stderr)
        return 1
    return 0


def _with_duration(scenario: Scenario, duration: float | None) -> Scenario:
    if duration is None:
        return scenario
    if duration <= scenario.warmup_s:
        raise UsageError(
            f"--duration {duration:g} must be more than the scenario's warmup_s "
            f"({scenario.warmup_s:g})"
        )
    return dataclasses.replace(scenario, duration_s=duration)


def select_policies(scenario: Scenario, names: Sequence[str]) -> tuple[PolicySpec, ...]:
    """The policies to run: the scenario's (or the built-in) ones, narrowed to ``names``."""
    listed = scenario.policies if scenario.policies is not None else DEFAULT_POLICIES
    if not names:
        return listed
    known = {p.name: p for p in (*DEFAULT_POLICIES, *listed)}
    chosen = []
    for name in dict.fromkeys(names):
        if name not in known:
            raise UsageError(f"--policy: unknown policy {name!r}; known: {', '.join(known)}")
        chosen.append(known[name])
    return tuple(chosen)


def simulate(
    scenario: Scenario,
    policies: Sequence[PolicySpec],
    seed: int,
    progress: ProgressBar | None = None,
) -> tuple[Report, list[PolicyRun]]:
    """Generate the workload, run every policy over it and judge the targets."""
    requests: Requests = generate(scenario, seed, scenario.duration_s)
    # One event loop for the whole simulation: the balancer's coroutines never suspend
    # over a memory store, so the loop only carries the awaits.
    runs = asyncio.run(run_all(scenario, requests, policies, seed, progress))
    results = tuple(summarise(scenario, run, requests.arrival_ms) for run in runs)
    report = Report(
        scenario, seed, requests, results, tuple(judge(scenario.targets, results, scenario.faults))
    )
    return report, runs
