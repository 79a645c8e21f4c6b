"""The health metrics: what each event counts, and failure reasons as few label values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from lb_service.health import ProbeResult
from lb_service.model import AgentHealth
from lb_service.service.health_metrics import HealthMetrics, reason_label


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("probe: timeout after 1.0 s", "timeout"),
        ("probe: HTTP 503", "HTTP 503"),
        ("probe: connection refused", "connection refused"),
        ("probe: read 12345 bytes, more than 1.5 MB", "read bytes, more than MB"),
        ("", "unknown"),
    ],
)
def test_reason_labels_drop_figures(reason: str, label: str) -> None:
    """A failure reason becomes a label without figures (but keeping HTTP status codes)."""
    assert reason_label(reason) == label


def test_each_event_counts_once() -> None:
    """Transitions, probes, missed heartbeats and panic entries each move their own series."""
    registry = CollectorRegistry()
    metrics = HealthMetrics(registry)

    metrics.health_changed("a", AgentHealth.HEALTHY, AgentHealth.UNHEALTHY)
    metrics.probe_finished("a", ProbeResult(False, "probe: HTTP 502", 0.02))
    metrics.probe_finished("a", ProbeResult(True, "", 0.01))
    metrics.heartbeat_missed("a")
    metrics.panic_changed(True)
    metrics.panic_changed(False)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    assert sample("lb_agent_health_transitions_total", state="unhealthy") == 1
    assert sample("lb_agent_health_transitions_total", state="draining") == 0
    assert sample("lb_probe_failures_total", reason="HTTP 502") == 1
    assert sample("lb_probe_duration_seconds_count") == 2
    assert sample("lb_heartbeats_missed_total") == 1
    assert sample("lb_health_panics_total") == 1
