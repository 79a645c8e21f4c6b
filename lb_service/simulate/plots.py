"""PNG plots of a run: response-time CDF per policy, and per-agent load over time.

matplotlib is an optional dependency (``pip install 'lb-service[simulate]'``) imported only
here and only when plots are asked for, so the simulator runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lb_service.simulate.engine import PolicyRun
from lb_service.simulate.metrics import latencies
from lb_service.simulate.scenario import Scenario
from lb_service.simulate.workload import Requests

#: Printed when --plots is given but matplotlib is not installed.
MISSING = (
    "--plots needs matplotlib, which is not installed; install it with "
    "pip install 'lb-service[simulate]'"
)
#: Most points drawn per CDF line: enough for a smooth curve, small files.
_CDF_POINTS = 600
CDF_FILE = "latency-cdf.png"
LOAD_FILE = "agent-load.png"


class PlotsUnavailable(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(MISSING) from None
    matplotlib.use("Agg")  # files only: no display on a server or in CI
    from matplotlib import pyplot

    return pyplot


def check() -> None:
    """Raise PlotsUnavailable now, before a long run, if plots cannot be drawn."""
    _pyplot()


def write(
    directory: Path, scenario: Scenario, requests: Requests, runs: Sequence[PolicyRun]
) -> list[Path]:
    """Write both plots into ``directory`` (created if needed); return their paths."""
    pyplot = _pyplot()
    directory.mkdir(parents=True, exist_ok=True)
    cdf, load = directory / CDF_FILE, directory / LOAD_FILE
    _latency_cdf(pyplot, cdf, scenario, requests, runs)
    _agent_load(pyplot, load, scenario, runs)
    return [cdf, load]


def _latency_cdf(
    pyplot: Any, path: Path, scenario: Scenario, requests: Requests, runs: Sequence[PolicyRun]
) -> None:
    figure, axes = pyplot.subplots(figsize=(9, 5.5), dpi=100)
    for run in runs:
        ordered = latencies(run, requests.arrival_ms, scenario.warmup_s)
        if not ordered:
            continue
        step = max(1, len(ordered) // _CDF_POINTS)
        xs = [v / 1000 for v in ordered[::step]] + [ordered[-1] / 1000]
        ys = [(k * step + 1) / len(ordered) for k in range(len(xs) - 1)] + [1.0]
        reference = run.policy.reference is not None
        axes.plot(
            xs,
            ys,
            "--" if reference else "-",
            linewidth=2.0 if reference else 1.3,
            color="black" if run.policy.reference == "oracle" else None,
            label=run.policy.name,
        )
    for q in (0.5, 0.95, 0.99):
        axes.axhline(q, color="grey", linewidth=0.6, linestyle=":")
    axes.set(
        xscale="log",
        xlabel="response time (s, log scale): queue wait + service",
        ylabel="share of requests answered within",
        title=f"{scenario.name}: response-time CDF per policy",
        ylim=(0, 1.01),
    )
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _agent_load(pyplot: Any, path: Path, scenario: Scenario, runs: Sequence[PolicyRun]) -> None:
    columns = min(3, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure, grid = pyplot.subplots(
        rows,
        columns,
        figsize=(5 * columns, 3 * rows + 0.6),
        dpi=90,
        sharex=True,
        squeeze=False,
    )
    agents = len(runs[0].agent_ids) if runs else 0
    # The default cycle repeats after 10 colours; larger fleets get 20 distinct ones.
    colours = pyplot.get_cmap("tab20") if agents > 10 else None
    for n, run in enumerate(runs):
        axes = grid[n // columns][n % columns]
        for k, agent_id in enumerate(run.agent_ids):
            axes.plot(
                run.sample_s,
                [sample[k] for sample in run.samples],
                linewidth=0.9,
                label=agent_id,
                color=colours(k % colours.N) if colours is not None else None,
            )
        for fault in scenario.faults:
            axes.axvline(fault.at_s, color="red", linewidth=0.8, linestyle="--")
        axes.set_title(run.policy.name, fontsize=9)
        # Each panel has its own scale: one policy's runaway queue would flatten the rest.
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
        if n % columns == 0:
            axes.set_ylabel("requests in agent")
        if n // columns == rows - 1:
            axes.set_xlabel("simulated time (s)")
    for n in range(len(runs), rows * columns):
        grid[n // columns][n % columns].axis("off")
    handles, labels = grid[0][0].get_legend_handles_labels()
    # One legend for every panel (same agents, same colours); long fleets get a small font.
    legend_rows = math.ceil(len(labels) / 8)
    figure.legend(
        handles,
        labels,
        loc="lower center",
        ncol=min(8, len(labels)),
        fontsize=7 if len(labels) > 8 else 8,
    )
    figure.suptitle(
        f"{scenario.name}: requests queued or in service per agent "
        "(own scale per panel; red: faults)",
        fontsize=10,
    )
    bottom = min(0.3, 0.035 * legend_rows * 3 / rows)
    figure.tight_layout(rect=(0, bottom, 1, 0.97))
    figure.savefig(path)
    pyplot.close(figure)
