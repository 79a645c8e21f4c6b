"""Prometheus metrics of agent health: transitions, probes, missed heartbeats, panics.

The per-agent state gauge (``lb_agent_health{agent,state}``) is read with the other
per-agent gauges at scrape time (``metrics``); these are the counters and the probe
duration histogram, updated as things happen.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram

from lb_service.health.result import ProbeResult
from lb_service.model import AgentHealth

#: Probe-duration buckets: a probe answers in milliseconds or times out (1 s default).
PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: Longest failure reason used as a label value.
_MAX_REASON = 48


def reason_label(reason: str) -> str:
    """A probe failure's reason as a label with few values: no prefix, no figures.

    ``probe: timeout after 1.0 s`` is ``timeout``, ``probe: HTTP 503`` stays ``HTTP 503``
    (status codes are few), ``probe: read 12345 bytes`` becomes ``read bytes``.
    """
    text = reason.removeprefix("probe: ").split(" after ")[0]
    if not text.startswith("HTTP "):
        text = re.sub(r"\s*[\d.]+\s*", " ", text).strip()
    return text[:_MAX_REASON] or "unknown"


class HealthMetrics:
    """The health counters and histogram, in the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the series in ``registry``."""
        self.transitions = Counter(
            "lb_agent_health_transitions_total",
            "Changes of agents' health, by the state entered.",
            ["state"],
            registry=registry,
        )
        self.probe_seconds = Histogram(
            "lb_probe_duration_seconds",
            "Time a health probe of an agent took, answered or not.",
            buckets=PROBE_BUCKETS,
            registry=registry,
        )
        self.probe_failures = Counter(
            "lb_probe_failures_total",
            "Failed health probes, by reason (connection refused, timeout, HTTP 503, ...).",
            ["reason"],
            registry=registry,
        )
        self.heartbeats_missed = Counter(
            "lb_heartbeats_missed_total",
            "Times a heartbeat agent went silent past its heartbeat TTL.",
            registry=registry,
        )
        self.panics = Counter(
            "lb_health_panics_total",
            "Times selections for a task went into panic mode: every eligible agent "
            "unhealthy, picked among all the same.",
            registry=registry,
        )
        for state in AgentHealth:
            self.transitions.labels(state.value)

    def health_changed(self, agent_id: str, previous: AgentHealth, health: AgentHealth) -> None:
        """Count one transition."""
        self.transitions.labels(health.value).inc()

    def probe_finished(self, agent_id: str, result: ProbeResult) -> None:
        """Time one probe; count it by reason if it failed."""
        self.probe_seconds.observe(result.duration_s)
        if not result.ok:
            self.probe_failures.labels(reason_label(result.reason)).inc()

    def heartbeat_missed(self, agent_id: str) -> None:
        """Count one missed heartbeat."""
        self.heartbeats_missed.inc()

    def panic_changed(self, panicking: bool) -> None:
        """Count an entry into panic mode."""
        if panicking:
            self.panics.inc()
