"""The per-agent gauges of /metrics: loads, health and load reports, read at scrape time.

The HTTP exporter runs in its own thread, so a scrape asks the server's event loop for
the loads (the one thread that may touch the balancer) and waits a moment for the
answer; if the loop does not answer in time it serves the last loads read, which the
server's sweep also refreshes every second. The gauges include what agents' load
reports say (``lb_service.reports``): each report's age, and the queue, running count
and KV cache it states.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lb_service.balancer import LoadBalancer
from lb_service.errors import StoreUnavailable
from lb_service.model import AgentHealth, AgentLoad

#: How long a scrape waits for the event loop to read the loads before it serves the
#: last ones read: a busy loop must not hang the scraper.
SCRAPE_READ_TIMEOUT_S = 0.5


@dataclass(frozen=True, slots=True)
class LoadsRead:
    """What the per-agent gauges show: every agent's load and the sessions held."""

    loads: tuple[AgentLoad, ...] = ()
    sessions: int = 0


async def read_loads(balancer: LoadBalancer) -> LoadsRead:
    """The agents' loads and the session count, as one scrape shows them."""
    return LoadsRead(tuple(await balancer.loads()), await balancer.session_count())


class AgentGauges(Collector):
    """Yields the per-agent gauges, read from the balancer at scrape time; any thread may call."""

    def __init__(self) -> None:
        self.snapshot = LoadsRead()
        self._source: tuple[LoadBalancer, asyncio.AbstractEventLoop] | None = None

    def attach(self, balancer: LoadBalancer, loop: asyncio.AbstractEventLoop) -> None:
        """Read ``balancer`` on ``loop`` (the one thread that may touch it) at every scrape."""
        self._source = balancer, loop

    def detach(self) -> None:
        """Stop reading the balancer; scrapes serve the last snapshot."""
        self._source = None

    def _current(self) -> LoadsRead:
        source = self._source
        if source is None:
            return self.snapshot
        balancer, loop = source
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                # Called on the loop itself (a test reading the registry): waiting for
                # the loop here would wait for ourselves.
                return self.snapshot
        try:
            future = asyncio.run_coroutine_threadsafe(read_loads(balancer), loop)
        except RuntimeError:  # the loop is closed
            return self.snapshot
        try:
            self.snapshot = future.result(SCRAPE_READ_TIMEOUT_S)
        except (FutureTimeout, StoreUnavailable, asyncio.CancelledError):
            future.cancel()
        return self.snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """The gauges of every agent's load, health and report, and the session count."""
        snapshot = self._current()
        gauges = {
            "active": GaugeMetricFamily(
                "lb_agent_active_connections", "Open leases per agent.", labels=["agent"]
            ),
            "latency": GaugeMetricFamily(
                "lb_agent_avg_latency_ms",
                "Moving-average latency per agent in ms (0 before the first sample).",
                labels=["agent"],
            ),
            "weight": GaugeMetricFamily(
                "lb_agent_weight", "Effective weight per agent.", labels=["agent"]
            ),
            "healthy": GaugeMetricFamily(
                "lb_agent_healthy",
                "1 while the agent takes picks: healthy (probes, heartbeats), not "
                "draining, not ejected.",
                labels=["agent"],
            ),
            "health": GaugeMetricFamily(
                "lb_agent_health",
                "1 for the agent's current health state (healthy, unhealthy, draining).",
                labels=["agent", "state"],
            ),
            "ejected": GaugeMetricFamily(
                "lb_agent_ejected",
                "1 while outlier ejection keeps the agent out of picks.",
                labels=["agent"],
            ),
            "report_age": GaugeMetricFamily(
                "lb_agent_report_age_seconds",
                "Age of the agent's freshest load report (agents that sent one).",
                labels=["agent"],
            ),
            "queued": GaugeMetricFamily(
                "lb_agent_reported_queued_requests",
                "Requests waiting on the agent, as its freshest report says (when it says).",
                labels=["agent"],
            ),
            "running": GaugeMetricFamily(
                "lb_agent_reported_running_requests",
                "Requests running on the agent, as its freshest report says (when it says).",
                labels=["agent"],
            ),
            "kv_cache": GaugeMetricFamily(
                "lb_agent_kv_cache_usage",
                "Share of the agent's KV cache in use, as its freshest report says.",
                labels=["agent"],
            ),
        }
        for load in snapshot.loads:
            labels = [load.agent_id]
            gauges["active"].add_metric(labels, load.active_connections)
            gauges["latency"].add_metric(labels, load.avg_latency_ms)
            gauges["weight"].add_metric(labels, load.weight)
            healthy = load.health is AgentHealth.HEALTHY and not load.ejected
            gauges["healthy"].add_metric(labels, 1 if healthy else 0)
            for state in AgentHealth:
                gauges["health"].add_metric(
                    [load.agent_id, state.value], 1 if load.health is state else 0
                )
            gauges["ejected"].add_metric(labels, 1 if load.ejected else 0)
            _add_report(gauges, labels, load)
        yield from gauges.values()
        sessions = GaugeMetricFamily("lb_sticky_sessions", "Sticky-session bindings held.")
        sessions.add_metric([], snapshot.sessions)
        yield sessions


def _add_report(gauges: dict[str, GaugeMetricFamily], labels: list[str], load: AgentLoad) -> None:
    """The report gauges of one agent: its report's age, and each figure the report states."""
    report = load.report
    if report is None:
        return
    gauges["report_age"].add_metric(labels, load.report_age_ms / 1000)
    figures = (
        ("queued", report.queued_requests),
        ("running", report.running_requests),
        ("kv_cache", report.kv_cache_usage),
    )
    for name, figure in figures:
        if figure is not None:
            gauges[name].add_metric(labels, figure)
