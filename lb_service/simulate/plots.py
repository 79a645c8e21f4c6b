"""PNG plots of a run: response-time CCDF per policy, and per-agent load over time.

The CCDF (``latency-ccdf.png``) shows, for each response time x, the share of measured
requests slower than x, P(response > x), both axes logarithmic down to 1e-4, so the p99
region and the tail beyond it are as legible as the median. It counts the requests
``metrics`` ranks for percentiles: the successful ones and the refused ones as infinitely
slow, so a policy that refuses a share r of its requests levels off at r (marked with a
dotted line to the right edge) instead of looking fast; the share is in its legend.

The load plot has a panel per policy, all on one y scale so they compare at a glance,
and each agent drawn in its own colour and line style, named in a shared legend (above
40 agents the 10 with the highest peak are picked out and the rest drawn in grey).

matplotlib is an optional dependency (``pip install '.[simulate]'`` in a checkout) imported only
here and only when plots are asked for, so the simulator runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lb_service.simulate.engine import PolicyRun
from lb_service.simulate.metrics import latencies, refusals
from lb_service.simulate.scenario import Scenario
from lb_service.simulate.workload import Requests

#: Printed when --plots is given but matplotlib is not installed.
MISSING = (
    "--plots needs matplotlib, which is not installed; install it with "
    "pip install '.[simulate]' in a checkout of lb-service"
)
#: Most points drawn per CCDF line: enough for a smooth curve, small files.
_CDF_POINTS = 600
#: The lowest probability the CCDF shows (1 request in 10,000).
CCDF_FLOOR = 1e-4
CDF_FILE = "latency-ccdf.png"
LOAD_FILE = "agent-load.png"
#: Line styles combined with the 10 colours of the default cycle: 40 distinct agents.
_STYLES = ("-", "--", ":", "-.")
_DISTINCT = 10 * len(_STYLES)
#: Agents picked out by name on the load plot of a fleet larger than _DISTINCT.
_PICKED = 10


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
    ccdf, load = directory / CDF_FILE, directory / LOAD_FILE
    _latency_ccdf(pyplot, ccdf, scenario, requests, runs)
    _agent_load(pyplot, load, scenario, runs)
    return [ccdf, load]


def ccdf_points(
    ordered: Sequence[float], refused: int, points: int = _CDF_POINTS
) -> tuple[list[float], list[float]]:
    """Points (response time, P(response > it)) of the empirical CCDF, in time order.

    ``ordered`` are the sorted finite response times; ``refused`` more requests count as
    slower than all of them. The points are spaced evenly in log P, from the fastest
    response down to the last whose P is above zero, so a log axis gets as many points
    in the tail as near the median.
    """
    total = len(ordered) + refused
    if not ordered:
        return [], []
    # P(response > the k-th fastest) = (total - k) / total: the "tail" count after it.
    highest, lowest = total - 1, max(refused, 1)
    if highest < lowest:
        return [], []
    tails: set[int] = set()
    ratio = math.log(highest / lowest)
    for n in range(points + 1):
        tails.add(round(highest * math.exp(-ratio * n / points)))
    ranks = sorted(total - tail for tail in tails if lowest <= tail <= highest)
    return [ordered[k - 1] for k in ranks], [(total - k) / total for k in ranks]


def _latency_ccdf(
    pyplot: Any, path: Path, scenario: Scenario, requests: Requests, runs: Sequence[PolicyRun]
) -> None:
    figure, axes = pyplot.subplots(figsize=(9, 5.5), dpi=100)
    curves = []
    for run in runs:
        ordered = latencies(run, requests.arrival_ms, scenario.warmup_s)
        refused = refusals(run, requests.arrival_ms, scenario.warmup_s)
        xs, ys = ccdf_points(ordered, refused)
        if xs:
            curves.append((run, [x / 1000 for x in xs], ys, refused / (len(ordered) + refused)))
    right = max((max(xs) for _, xs, _, _ in curves), default=1.0) * 1.5
    for run, xs, ys, refused_share in curves:
        reference = run.policy.reference is not None
        label = run.policy.name + (f" (refused {refused_share:.2%})" if refused_share else "")
        (line,) = axes.plot(
            xs,
            ys,
            "--" if reference else "-",
            drawstyle="steps-post",
            linewidth=2.0 if reference else 1.3,
            color="black" if run.policy.reference == "oracle" else None,
            label=label,
        )
        if refused_share:
            # Refused requests are slower than any response: the curve never falls below.
            axes.plot(
                [xs[-1], right], [refused_share] * 2, ":", color=line.get_color(), linewidth=1.3
            )
    for q, name in ((0.5, "p50"), (0.05, "p95"), (0.01, "p99"), (0.001, "p99.9")):
        axes.axhline(q, color="grey", linewidth=0.6, linestyle=":")
        axes.annotate(
            name,
            (0, q),
            xycoords=("axes fraction", "data"),
            xytext=(2, 2),
            textcoords="offset points",
            fontsize=7,
            color="grey",
        )
    axes.set(
        xscale="log",
        yscale="log",
        xlabel="response time x (s, log scale): queue wait + service",
        ylabel="P(response > x), log scale",
        title=f"{scenario.name}: response-time CCDF per policy (refused = slower than any)",
        ylim=(CCDF_FLOOR, 1.05),
    )
    if curves:
        axes.set_xlim(right=right)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    figure.savefig(path)
    pyplot.close(figure)


def _agent_styles(runs: Sequence[PolicyRun]) -> list[dict[str, Any]]:
    """Per agent, the plot keywords that tell it apart (module docstring)."""
    agents = len(runs[0].agent_ids) if runs else 0
    if agents <= _DISTINCT:
        return [
            {"color": f"C{k % 10}", "linestyle": _STYLES[k // 10], "linewidth": 1.0}
            for k in range(agents)
        ]
    peaks = [max((s[k] for run in runs for s in run.samples), default=0) for k in range(agents)]
    picked = sorted(range(agents), key=lambda k: -peaks[k])[:_PICKED]
    styles: list[dict[str, Any]] = [
        {"color": "0.75", "linestyle": "-", "linewidth": 0.5} for _ in range(agents)
    ]
    for n, k in enumerate(picked):
        styles[k] = {"color": f"C{n}", "linestyle": "-", "linewidth": 1.2, "zorder": 3}
    return styles


def _agent_load(pyplot: Any, path: Path, scenario: Scenario, runs: Sequence[PolicyRun]) -> None:
    columns = min(3, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure, grid = pyplot.subplots(
        rows,
        columns,
        figsize=(5 * columns, 3 * rows + 0.6),
        dpi=90,
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    styles = _agent_styles(runs)
    picked_out = len(styles) > _DISTINCT
    for n, run in enumerate(runs):
        axes = grid[n // columns][n % columns]
        for k, agent_id in enumerate(run.agent_ids):
            named = not picked_out or styles[k]["color"] != "0.75"
            axes.plot(
                run.sample_s,
                [sample[k] for sample in run.samples],
                label=agent_id if named else "_other",
                **styles[k],
            )
        for fault in scenario.faults:
            axes.axvline(fault.at_s, color="red", linewidth=0.8, linestyle="--")
        axes.set_title(run.policy.name, fontsize=9)
        axes.grid(True, alpha=0.3)
        if n % columns == 0:
            axes.set_ylabel("requests in agent")
        if n // columns == rows - 1:
            axes.set_xlabel("simulated time (s)")
    for n in range(len(runs), rows * columns):
        grid[n // columns][n % columns].axis("off")
    # One scale for every panel (sharey), so their loads compare at a glance: set once,
    # from the highest load any of them reached.
    top = max((max(s, default=0) for run in runs for s in run.samples), default=0)
    grid[0][0].set_ylim(0, max(1, top) * 1.05)
    handles, labels = grid[0][0].get_legend_handles_labels()
    if picked_out:
        grey = pyplot.Line2D([], [], color="0.75", linewidth=0.5)
        handles, labels = [*handles, grey], [*labels, f"the other {len(styles) - _PICKED}"]
    # One legend for every panel (same agents, same styles); long fleets get a small font.
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
        "(one scale for all panels; red: faults)",
        fontsize=10,
    )
    bottom = min(0.3, 0.035 * legend_rows * 3 / rows)
    figure.tight_layout(rect=(0, bottom, 1, 0.97))
    figure.savefig(path)
    pyplot.close(figure)
