"""``lb-service simulate``: argument wiring and the run from scenario file to report.

``--seeds`` and ``--utilisation`` run the scenario once per seed and per utilisation (all
of them: every utilisation with every seed, utilisation first). Given either, the output
is that of several runs even when it names one value: a JSON list, a table block per run
then each target over the seeds, plots in ``DIR/u<utilisation>-s<seed>/``. Without them,
a run is a single one, reported as always.

Exit status: 0 after a run (a missed target is reported, not an error); 1 when a target
is missed under ``--check-targets`` (in any run), or when the JSON or plots cannot be
written (matplotlib missing, a path not writable); 2 for a bad scenario file or arguments.
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
from lb_service.simulate.report import (
    ProgressBar,
    Report,
    missed_over_runs,
    render,
    render_runs,
    to_json,
    to_json_runs,
)
from lb_service.simulate.scenario import (
    MAX_UTILISATION,
    Scenario,
    ScenarioError,
    load,
    with_utilisation,
)
from lb_service.simulate.targets import judge
from lb_service.simulate.workload import Requests, generate

PROG = "lb-service simulate"
#: Most seeds one --seeds may name.
MAX_SEEDS = 1000


class UsageError(Exception):
    """The arguments do not fit the scenario; exit status 2."""


def add_command(commands: Any) -> None:
    """Add the ``simulate`` subcommand to the ``lb-service`` subparsers."""
    parser = commands.add_parser(
        "simulate",
        help="compare strategies in a discrete-event simulation of a cluster",
        description=(
            "Replay a scenario's workload on a virtual clock against the real balancer, once "
            "per policy (what lb-service serve runs by default, strategies with options, plus "
            "the random, oracle and size-blind informed references), and report throughput, "
            "response times, balance, refusals, session affinity, stability and the "
            "scenario's targets. "
            "Deterministic for a seed."
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
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seed", type=_whole, metavar="N", help="random seed (default: the scenario's)"
    )
    seeds.add_argument(
        "--seeds",
        type=_seed_list,
        metavar="LIST",
        help="run once per seed, e.g. 1-5 or 1,2,3, and judge the targets on each (a target "
        "is met only if met on every seed)",
    )
    parser.add_argument(
        "--utilisation",
        action="append",
        type=_utilisation,
        default=[],
        metavar="U",
        help="replace the scenario's workload.utilisation (repeat to run once per value)",
    )
    parser.add_argument(
        "--json", metavar="PATH|-", help="also write the results as JSON to PATH, or stdout for -"
    )
    parser.add_argument(
        "--plots",
        type=Path,
        metavar="DIR",
        help=f"write {plots.CDF_FILE} and {plots.LOAD_FILE} into DIR, or with several runs "
        "into DIR/u<utilisation>-s<seed>/ (needs matplotlib)",
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


def _seed_list(text: str) -> list[int]:
    """Seeds from ``1-5``, ``1,2,3`` or both (``1-3,7``), in order and without repeats."""
    found: dict[int, None] = {}
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be seeds like 1-5 or 1,2,3 (whole numbers >= 0), got {text!r}"
            ) from None
        if first < 0 or last < first:
            raise argparse.ArgumentTypeError(f"{part.strip()!r} is not a range of seeds >= 0")
        if last - first + len(found) >= MAX_SEEDS:
            raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS} seeds, got {text!r}")
        found.update(dict.fromkeys(range(first, last + 1)))
    return list(found)


def _utilisation(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_UTILISATION:
        raise argparse.ArgumentTypeError(
            f"must be a number > 0 and <= {MAX_UTILISATION:g}, got {text!r}"
        )
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
    utilisations: list[float] = list(dict.fromkeys(args.get("utilisation") or []))
    try:
        scenario = load(path)
        scenario = _with_duration(scenario, args.get("duration"))
        policies = select_policies(scenario, args.get("policy") or [])
        scenarios = [with_utilisation(scenario, u) for u in utilisations] or [scenario]
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
    if args.get("seeds") or utilisations:
        return _run_several(args, scenarios, policies, args.get("seeds") or [seed])
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


def _run_several(
    args: dict[str, Any],
    scenarios: Sequence[Scenario],
    policies: Sequence[PolicySpec],
    seeds: Sequence[int],
) -> int:
    """Run every scenario (one per utilisation) with every seed; report as several runs."""
    quiet = bool(args.get("quiet"))
    json_to = args.get("json")
    plot_dir: Path | None = args.get("plots")
    reports: list[Report] = []
    walls_s: list[float] = []
    written: list[Path] = []
    failure: OSError | None = None
    for scenario in scenarios:
        for seed in seeds:
            began = time.perf_counter()
            progress = None
            if not quiet:
                utilisation = scenario.workload.utilisation
                named = "" if utilisation is None else f"u{utilisation:g} "
                progress = ProgressBar(sys.stderr, policies, f"{named}s{seed} ")
            report, runs = simulate(scenario, policies, seed, progress)
            walls_s.append(time.perf_counter() - began)
            reports.append(report)
            # Each run's plots as soon as it is done, so its per-request output need not
            # be kept; after a failed write the runs go on without plots.
            if plot_dir is not None and failure is None:
                try:
                    written += plots.write(plot_dir / report.label, scenario, report.requests, runs)
                except OSError as error:
                    failure = error
    if json_to == "-":
        sys.stdout.write(to_json_runs(reports))
    if not quiet:
        table_to = sys.stderr if json_to == "-" else sys.stdout
        table_to.write(render_runs(reports, walls_s))
        if written:
            print(f"plots: {', '.join(str(p) for p in written)}", file=sys.stderr)
    if json_to and json_to != "-" and failure is None:
        try:
            Path(json_to).write_text(to_json_runs(reports))
        except OSError as error:
            failure = error
    if failure is not None:
        print(
            f"{PROG}: error: cannot write {failure.filename}: {failure.strerror}", file=sys.stderr
        )
        return 1
    missed = missed_over_runs(reports)
    if args.get("check_targets") and missed:
        if quiet:
            for utilisation, target in missed:
                print(
                    f"{PROG}: target missed: {target.target} (utilisation {utilisation:g}; "
                    f"{target.detail})",
                    file=sys.stderr,
                )
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
    results = tuple(summarise(scenario, run, requests.arrival_ms, requests.session) for run in runs)
    report = Report(
        scenario, seed, requests, results, tuple(judge(scenario.targets, results, scenario.faults))
    )
    return report, runs
