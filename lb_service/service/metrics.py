"""Prometheus metrics: gRPC server metrics, selections, and per-agent load gauges.

RPC and selection counters are updated as things happen. Per-agent gauges are read
from a snapshot that the server refreshes on its event loop (each sweep), because the
HTTP exporter runs in its own thread and must not touch the balancer's state directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from lb_service.balancer import LoadBalancer, Outcome
from lb_service.model import AgentLoad, StrategyName
from lb_service.service.observe import ObservingInterceptor


@dataclass(frozen=True, slots=True)
class _Snapshot:
    loads: tuple[AgentLoad, ...] = ()
    sessions: int = 0


class _AgentCollector(Collector):
    """Yields the per-agent gauges from the last snapshot; safe to call from any thread."""

    def __init__(self) -> None:
        self.snapshot = _Snapshot()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        snapshot = self.snapshot  # one read: the refresher swaps the whole object
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
                "1 while the agent is registered and not ejected.",
                labels=["agent"],
            ),
            "ejected": GaugeMetricFamily(
                "lb_agent_ejected",
                "1 while outlier ejection keeps the agent out of picks.",
                labels=["agent"],
            ),
        }
        for load in snapshot.loads:
            labels = [load.agent_id]
            gauges["active"].add_metric(labels, load.active_connections)
            gauges["latency"].add_metric(labels, load.avg_latency_ms)
            gauges["weight"].add_metric(labels, load.weight)
            gauges["healthy"].add_metric(labels, 0 if load.ejected else 1)
            gauges["ejected"].add_metric(labels, 1 if load.ejected else 0)
        yield from gauges.values()
        sessions = GaugeMetricFamily("lb_sticky_sessions", "Sticky-session bindings held.")
        sessions.add_metric([], snapshot.sessions)
        yield sessions


class Metrics:
    """The service's Prometheus metrics, in their own registry."""

    def __init__(self) -> None:
        """Create the metrics; nothing is exported until ``serve_http``."""
        self.registry = CollectorRegistry()
        self._handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by method and status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )
        self._handling = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC (to the end of the stream for streams).",
            ["grpc_service", "grpc_method"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10),
            registry=self.registry,
        )
        self._selections = Counter(
            "lb_selections_total",
            "SelectAgent decisions by strategy and outcome.",
            ["strategy", "outcome"],
            registry=self.registry,
        )
        self._expired = Counter(
            "lb_leases_expired_total",
            "Leases never ended by their dispatcher, expired after the request timeout.",
            registry=self.registry,
        )
        self._agents = _AgentCollector()
        self.registry.register(self._agents)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        """An interceptor that feeds the gRPC server metrics."""
        return ObservingInterceptor(self.record_rpc)

    def record_rpc(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        """Count one finished RPC."""
        service, _, name = method.lstrip("/").rpartition("/")
        self._handled.labels(service, name, code.name).inc()
        self._handling.labels(service, name).observe(seconds)

    # The balancer's Observer protocol.
    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """Count one selection."""
        self._selections.labels(strategy.value, outcome.value).inc()

    def leases_expired(self, count: int) -> None:
        """Count expired leases."""
        self._expired.inc(count)

    async def refresh(self, balancer: LoadBalancer) -> None:
        """Take a new snapshot of per-agent loads for the exporter thread."""
        self._agents.snapshot = _Snapshot(
            tuple(await balancer.loads()), await balancer.session_count()
        )

    def serve_http(self, address: str) -> int:
        """Export /metrics over HTTP on ``address`` (HOST:PORT); return the bound port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        return int(server.server_port)
