"""The run's report: a terminal table, a JSON document, and the progress bar shown meanwhile.

The JSON holds only what the simulation computed (no wall time, no paths), with floats
rounded and NaN/infinity written as null, so identical inputs and seed give identical
bytes; the wall time goes to the table only.

Several runs (``--seeds``, ``--utilisation``) give a JSON list of the per-run documents,
each with its ``seed`` and ``utilisation`` first, and a table block per run followed by
each target summed up over the seeds (``targets.over_runs``), per utilisation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from lb_service.simulate.metrics import PolicyResult
from lb_service.simulate.policies import ORACLE, PolicySpec
from lb_service.simulate.scenario import Scenario
from lb_service.simulate.targets import TargetResult, over_runs
from lb_service.simulate.workload import Requests


@dataclass(frozen=True, slots=True)
class Report:
    """Everything a run reports."""

    scenario: Scenario
    seed: int
    requests: Requests
    results: tuple[PolicyResult, ...]
    targets: tuple[TargetResult, ...]

    @property
    def missed(self) -> list[TargetResult]:
        """The targets judged and not met (skipped ones are not missed)."""
        return [t for t in self.targets if t.met is False]

    @property
    def utilisation(self) -> float:
        """The workload's utilisation (for a rate_per_s workload, rate over capacity)."""
        given = self.scenario.workload.utilisation
        if given is not None:
            return given
        return self.requests.rate_per_s / self.requests.capacity_per_s

    @property
    def label(self) -> str:
        """The run's utilisation and seed, as in plot folder names: ``u0.8-s1``."""
        return f"u{round(self.utilisation, 4):g}-s{self.seed}"


# --- JSON ----------------------------------------------------------------------------


def to_json(report: Report) -> str:
    """The report as one JSON document (identical for identical inputs and seed)."""
    return _dump(_document(report))


def to_json_runs(reports: Sequence[Report]) -> str:
    """Several runs as a JSON list of their documents, each with its seed and utilisation."""
    return _dump([{"seed": r.seed, "utilisation": r.utilisation, **_document(r)} for r in reports])


def _dump(document: Any) -> str:
    return json.dumps(_clean(document), indent=2, ensure_ascii=False) + "\n"


def _document(report: Report) -> dict[str, Any]:
    scenario, requests = report.scenario, report.requests
    oracle = _oracle_p99(report.results)
    return {
        "scenario": {
            "name": scenario.name,
            "description": scenario.description,
            "seed": report.seed,
            "duration_s": scenario.duration_s,
            "warmup_s": scenario.warmup_s,
            "agents": len(scenario.agents),
            "requests": len(requests),
            "rate_per_s": requests.rate_per_s,
            "capacity_per_s": requests.capacity_per_s,
            "utilisation": requests.rate_per_s / requests.capacity_per_s,
        },
        "policies": [
            {
                "name": r.name,
                "description": r.description,
                "reference": r.reference,
                "requests": r.requests,
                "completed": r.completed,
                "failed": r.failed,
                "refused": r.refused,
                "refused_by_reason": r.refused_by_reason,
                "throughput_per_s": r.throughput_per_s,
                "latency_ms": r.latency_ms,
                "p99_vs_oracle": r.p99_ms / oracle if oracle else None,
                "imbalance": r.imbalance,
                "leases_expired": r.leases_expired,
                "ejections": r.ejection_count,
                "affinity_kept": r.affinity_kept,
                "affinity_requests": r.affinity_requests,
                "unstable": r.unstable,
                "backlog_growth": r.backlog_growth,
                "agents": [
                    {
                        "id": a.agent_id,
                        "requests": a.requests,
                        "failed": a.failed,
                        "share": a.share,
                        "utilisation": a.utilisation,
                    }
                    for a in r.agents
                ],
                "slowdowns": [
                    {
                        "agent": s.agent_id,
                        "at_s": s.at_s,
                        "factor": s.factor,
                        "share_before": s.before_share,
                        "share_after": s.after_share,
                        "shift_s": s.shift_s,
                    }
                    for s in r.shifts
                ],
                "failures": [
                    {
                        "agent": e.agent_id,
                        "at_s": e.at_s,
                        "ejection_threshold": e.threshold,
                        "failures_before_ejection": e.failures_before_ejection,
                        "sent_before_ejection": e.sent_before_ejection,
                        "ejected_after_s": e.ejected_after_s,
                    }
                    for e in r.ejections
                ],
            }
            for r in report.results
        ],
        "targets": [
            {
                "kind": t.kind,
                "target": t.target,
                "measured": t.measured,
                "threshold": t.threshold,
                "met": t.met,
                "detail": t.detail,
            }
            for t in report.targets
        ],
    }


def _clean(value: Any) -> Any:
    """Round floats (so the bytes do not depend on the last bit) and make NaN/inf null."""
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def _oracle_p99(results: Sequence[PolicyResult]) -> float | None:
    oracle = next((r for r in results if r.reference and r.name == ORACLE), None)
    if oracle is None or not math.isfinite(oracle.p99_ms) or oracle.p99_ms <= 0:
        return None
    return oracle.p99_ms


# --- the table -----------------------------------------------------------------------


def render(report: Report, wall_s: float) -> str:
    """The report as aligned text for a terminal."""
    scenario, requests, results = report.scenario, report.requests, report.results
    oracle = _oracle_p99(results)
    lines = [
        f"Scenario {scenario.name}: {len(scenario.agents)} agents, {len(requests):,} requests "
        f"over {scenario.duration_s:g} s (warm-up {scenario.warmup_s:g} s), seed {report.seed}",
        f"arrivals {requests.rate_per_s:,.1f}/s = "
        f"{requests.rate_per_s / requests.capacity_per_s:.0%} of the cluster's capacity for "
        f"the mix ({requests.capacity_per_s:,.1f}/s)",
    ]
    if scenario.description:
        lines.append(scenario.description.strip().splitlines()[0])
    lines.append("")
    header = (
        "#",
        "policy",
        "strategy (options)",
        "done/s",
        "p50",
        "p95",
        "p99",
        "p99/oracle",
        "imbalance",
        "refused",
        "failed",
        "expired",
        "ejected",
        "affinity",
        "unstable",
    )
    rows = [
        (
            str(n + 1),
            r.name,
            r.description,
            f"{r.throughput_per_s:,.2f}",
            _duration(r.latency_ms["p50"]),
            _duration(r.latency_ms["p95"]),
            _duration(r.latency_ms["p99"]),
            _ratio(r.p99_ms, oracle),
            f"{r.imbalance:.2f}" if math.isfinite(r.imbalance) else "—",
            f"{r.refused:,}",
            f"{r.failed:,}",
            f"{r.leases_expired:,}",
            f"{r.ejection_count:,}",
            f"{r.affinity_kept:.1%}" if math.isfinite(r.affinity_kept) else "—",
            "yes" if r.unstable else "no",
        )
        for n, r in enumerate(results)
    ]
    lines += _table(header, rows, right=set(range(3, 14)))
    lines += [
        "",
        "done/s: requests that succeeded within the measured window, per second. p50/p95/p99:",
        "response time (queue wait + service) of the measured requests that succeeded or were",
        "refused, a refusal counting as infinitely slow (inf: more than 1% refused for p99);",
        "failed requests are left out and counted under failed.",
        "imbalance: the busiest agent's utilisation over the mean (1.00 = even).",
        "expired: leases the balancer's sweep expired. ejected: outlier ejections.",
        "affinity: session requests placed on their session's previous agent.",
        "unstable: the waiting backlog kept growing (its figures depend on the run's length;",
        "targets judged on it are missed).",
    ]
    lines += ["", "Utilisation per agent (busy slot time; policies numbered as above):", ""]
    agent_ids = [a.agent_id for a in results[0].agents] if results else []
    util_rows = [
        (agent_id, *(f"{r.agents[k].utilisation:.0%}" for r in results))
        for k, agent_id in enumerate(agent_ids)
    ]
    lines += _table(
        ("agent", *(str(n + 1) for n in range(len(results)))),
        util_rows,
        right=set(range(1, len(results) + 1)),
    )
    fault_lines = _faults(results)
    if fault_lines:
        lines += ["", "Faults:", *fault_lines]
    if report.targets:
        lines += ["", "Targets:"]
        lines += [_target_line(t) for t in report.targets]
    lines += [
        "",
        f"{len(results)} policies x {len(requests):,} requests simulated in {wall_s:.1f} s "
        "wall time",
    ]
    return "\n".join(lines) + "\n"


def _faults(results: Sequence[PolicyResult]) -> list[str]:
    lines = []
    for r in results:
        for s in r.shifts:
            moved = "never" if s.shift_s is None else f"{s.shift_s:.1f} s"
            lines.append(
                f"  {r.name}: {s.agent_id} slowed x{s.factor:g} at {s.at_s:g} s; share of picks "
                f"{s.before_share:.1%} → {s.after_share:.1%}, halved after {moved}"
            )
        for e in r.ejections:
            if e.threshold == 0:
                continue
            when = (
                "never ejected"
                if e.ejected_after_s is None
                else f"ejected {e.ejected_after_s:.2f} s later"
            )
            lines.append(
                f"  {r.name}: {e.agent_id} failing from {e.at_s:g} s; {when} after "
                f"{e.failures_before_ejection} failed request(s) (threshold {e.threshold}, "
                f"{e.sent_before_ejection} failing request(s) sent to it)"
            )
    return lines


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if n in right else c.ljust(w)
            for n, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _duration(ms: float) -> str:
    if ms == math.inf:
        return "inf"
    if not math.isfinite(ms):
        return "—"
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"


def _ratio(p99_ms: float, oracle: float | None) -> str:
    if not oracle or math.isnan(p99_ms):
        return "—"
    return "inf" if p99_ms == math.inf else f"{p99_ms / oracle:.2f}x"


def _target_line(t: TargetResult) -> str:
    mark = {True: "met", False: "MISSED", None: "skipped"}[t.met]
    measured = "—" if t.measured is None else f"{t.measured:.2f}"
    return f"  [{mark}] {t.target}: measured {measured}, threshold {t.threshold:g} ({t.detail})"


def render_runs(reports: Sequence[Report], walls_s: Sequence[float]) -> str:
    """Several runs: a block per run, then each target over the seeds, per utilisation."""
    blocks = []
    for report, wall_s in zip(reports, walls_s, strict=True):
        title = f"=== utilisation {round(report.utilisation, 4):g}, seed {report.seed} ==="
        blocks.append(f"{title}\n{render(report, wall_s)}")
    lines: list[str] = []
    for utilisation, group in _by_utilisation(reports):
        if not group[0].targets:
            continue
        seeds = ", ".join(str(r.seed) for r in group)
        lines += ["", f"Targets at utilisation {utilisation:g} over seeds {seeds}:"]
        summed = over_runs([r.targets for r in group], [f"seed {r.seed}" for r in group])
        lines += [_target_line(t) for t in summed]
    return "\n".join(blocks) + ("\n".join(lines) + "\n" if lines else "")


def missed_over_runs(reports: Sequence[Report]) -> list[tuple[float, TargetResult]]:
    """Each target missed over the seeds, with its utilisation (``render_runs``' verdicts)."""
    missed = []
    for utilisation, group in _by_utilisation(reports):
        summed = over_runs([r.targets for r in group], [f"seed {r.seed}" for r in group])
        missed += [(utilisation, t) for t in summed if t.met is False]
    return missed


def _by_utilisation(reports: Sequence[Report]) -> list[tuple[float, list[Report]]]:
    groups: dict[float, list[Report]] = {}
    for report in reports:
        groups.setdefault(round(report.utilisation, 4), []).append(report)
    return list(groups.items())


# --- progress ------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress bar on a terminal (redrawn in place); a line per policy otherwise."""

    WIDTH = 30

    def __init__(self, stream: TextIO, policies: Sequence[PolicySpec], prefix: str = "") -> None:
        """Draw on ``stream`` for a run of these policies; ``prefix`` names the run."""
        self._stream = stream
        self._prefix = prefix
        self._total = len(policies)
        self._tty = stream.isatty()
        self._shown: tuple[int, int] | None = None

    def __call__(self, n: int, policy: PolicySpec, done: float) -> None:
        """Show that policy number ``n`` is ``done`` (0 to 1) through its run."""
        percent = int(done * 100)
        if self._shown == (n, percent):
            return
        self._shown = (n, percent)
        label = f"{self._prefix}[{n + 1}/{self._total}] {policy.name}"
        if self._tty:
            filled = int(done * self.WIDTH)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            self._stream.write(f"\r{label:<36} [{bar}] {percent:3d}%")
            if done >= 1 and n + 1 == self._total:
                self._stream.write("\r" + " " * (36 + self.WIDTH + 8) + "\r")
        elif done >= 1:
            self._stream.write(f"{label} done\n")
        self._stream.flush()
