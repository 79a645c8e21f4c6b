"""Agent health: probes by engine, heartbeats and drain, and the states they move agents through."""

from __future__ import annotations

from lb_service.health.result import ProbeResult

__all__ = ["ProbeResult"]
