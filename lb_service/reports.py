"""Load reports: what an agent says about its own load, checked, aged and read by decisions.

A lease count is the service's own guess at an agent's load. The agent knows better:
it sees requests that bypassed the balancer, its own queue, how full its KV cache is
and which models sit in memory. A ``LoadReport`` carries those figures, pushed with a
heartbeat (``HeartbeatRequest.report``) or read by a probe of the agent's engine
(``lb_service.health.probes``: Ollama's ``/api/ps``, vLLM's and SGLang's ``/metrics``).

The rules, each written here once:

- **Fresh or ignored.** A report is read only while it is younger than the
  report-staleness option (``fresh``); older, the decision goes by lease counts and
  latency alone, as with no report at all. The endpoint picker of the Gateway API
  inference extension treats metrics older than 2 s as stale; so does the default.
- **Never over a lease the service granted.** When a report arrives the store notes
  how many leases were open on the agent (``ReceivedReport.leases_at``). What the
  agent reported beyond them is load the service cannot see (``unseen``), and a
  decision counts the agent's open leases now plus that: between two reports, the
  service's own grants and ends move the figure, and a report never lowers it below
  the leases open.
- **Saturation** (``saturation``): an agent whose fresh report shows ``queue`` or more
  requests waiting, or a KV cache at least ``kv_cache`` full, is skipped while another
  has room; the figures are the endpoint picker's (5 queued, 80% KV cache).
- **Residency**: a fresh report's ``loaded_models`` says which agents would not have
  to load the task's model first (``resident``).

Bad input is refused whole (``check_report``): a NaN, a negative or out-of-range
figure, an absurd count, or more names than a report may carry raises
``InvalidArgument`` naming the field, and nothing is recorded. ``LoadReport`` itself
is a domain type (``lb_service.model``): clients read it in ``AgentLoad.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from lb_service.errors import InvalidArgument
from lb_service.model import LoadReport
from lb_service.validation import MAX_MODEL_LENGTH

__all__ = [
    "MAX_LOADED_MODELS",
    "MAX_METRIC_NAME",
    "MAX_NAMED_METRICS",
    "MAX_REPORTED_REQUESTS",
    "ReceivedReport",
    "Saturation",
    "check_report",
    "fresh",
    "resident",
    "saturation",
]

#: Most queued or running requests a report may state: more is a broken sidecar.
MAX_REPORTED_REQUESTS = 1_000_000
#: Most loaded models a report may list (Ollama keeps a handful; 64 is generous).
MAX_LOADED_MODELS = 64
#: Most named metrics a report may carry, and the longest name.
MAX_NAMED_METRICS = 64
MAX_METRIC_NAME = 128


@dataclass(frozen=True, slots=True)
class ReceivedReport:
    """A report as a store keeps it: when it arrived and the leases open on the agent then."""

    report: LoadReport
    #: Unix ms the report arrived (its age is measured from here).
    at_ms: int
    #: Leases open on the agent when it arrived.
    leases_at: int = 0

    @property
    def unseen(self) -> int:
        """Requests the agent reported beyond the service's leases when it arrived (>= 0)."""
        requests = self.report.requests
        return 0 if requests is None else max(0, requests - self.leases_at)

    def age_ms(self, now_ms: int) -> int:
        """How old the report is at ``now_ms`` (never negative)."""
        return max(0, now_ms - self.at_ms)


@dataclass(frozen=True, slots=True)
class Saturation:
    """When a fresh report makes an agent full: ``queue`` waiting, or the KV cache this full."""

    queue: int = 5
    kv_cache: float = 0.8

    def __post_init__(self) -> None:
        """Reject thresholds that would make every agent saturated, or none comparable."""
        if self.queue < 1:
            raise ValueError(f"the saturation queue must be >= 1, got {self.queue}")
        if not 0.0 < self.kv_cache <= 1.0:
            raise ValueError(
                f"the saturation KV-cache share must be in (0, 1], got {self.kv_cache}"
            )


def fresh(
    reports: Mapping[str, ReceivedReport],
    now_ms: int,
    staleness_ms: float,
    limits: Saturation | None = None,
    residency: bool = True,
) -> dict[str, ReceivedReport]:
    """The reports younger than ``staleness_ms`` at ``now_ms`` (0 or less: none is read).

    With ``limits``, only those that can change a decision: some unseen load, a
    saturated agent, or (with ``residency``) models listed. The others say "as the
    leases show, with room": a decision reads the same without them, and one that
    reads no report at all can use the store's index instead of scanning every agent.
    """
    if staleness_ms <= 0:
        return {}
    oldest = now_ms - staleness_ms
    if limits is None:
        return {i: r for i, r in reports.items() if r.at_ms > oldest}
    return {
        i: r
        for i, r in reports.items()
        if r.at_ms > oldest
        and (
            r.unseen > 0
            or saturation(r.report, limits) >= 1.0
            or (residency and bool(r.report.loaded_models))
        )
    }


def saturation(report: LoadReport, limits: Saturation) -> float:
    """How full the report says the agent is: 1 or more is saturated; 0 when it cannot tell.

    The larger of queued requests over ``limits.queue`` and KV-cache use over
    ``limits.kv_cache``, so agents that are all saturated can still be ordered.
    """
    level = 0.0
    if report.queued_requests is not None:
        level = report.queued_requests / limits.queue
    if report.kv_cache_usage is not None:
        level = max(level, report.kv_cache_usage / limits.kv_cache)
    return level


def resident(report: LoadReport, model: str) -> bool:
    """Whether the report lists ``model`` among those the agent holds in memory now."""
    return bool(model) and model in report.loaded_models


def check_report(report: LoadReport, where: str = "report") -> LoadReport:
    """Return ``report`` if every figure is in range, else raise InvalidArgument naming it."""
    for name in ("queued_requests", "running_requests"):
        count = getattr(report, name)
        if count is not None and not 0 <= count <= MAX_REPORTED_REQUESTS:
            raise InvalidArgument(
                f"{where}.{name} must be between 0 and {MAX_REPORTED_REQUESTS:,}, got {count}",
                f"{where}.{name}",
            )
    for name in ("kv_cache_usage", "cpu_utilization", "gpu_utilization"):
        share = getattr(report, name)
        if share is not None and not 0.0 <= share <= 1.0:  # NaN fails both comparisons
            raise InvalidArgument(
                f"{where}.{name} must be a fraction in [0, 1], got {share!r}", f"{where}.{name}"
            )
    _check_names(
        report.loaded_models, MAX_LOADED_MODELS, MAX_MODEL_LENGTH, f"{where}.loaded_models"
    )
    _check_names(report.named_metrics, MAX_NAMED_METRICS, MAX_METRIC_NAME, f"{where}.named_metrics")
    for name, value in report.named_metrics.items():
        if not math.isfinite(value):
            raise InvalidArgument(
                f"{where}.named_metrics[{name!r}] must be a finite number, got {value!r}",
                f"{where}.named_metrics",
            )
    return report


def _check_names(
    names: tuple[str, ...] | Mapping[str, float], most: int, longest: int, path: str
) -> None:
    if len(names) > most:
        raise InvalidArgument(f"{path} may hold at most {most} entries, got {len(names)}", path)
    for name in names:
        if not name or len(name) > longest:
            raise InvalidArgument(
                f"{path} entries must be names of 1 to {longest} characters, got {name[:40]!r}"
                + ("..." if len(name) > 40 else ""),
                path,
            )
