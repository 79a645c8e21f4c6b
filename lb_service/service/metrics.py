"""Prometheus metrics: gRPC server metrics, selections, per-agent counters, and the exporter.

The gRPC metrics are go-grpc-prometheus's names, labels and code spellings, so the
dashboards and alerts written for Go servers work unchanged. Counters are updated as
things happen; the per-agent load gauges are read when /metrics is scraped
(``lb_service.service.agent_gauges``).
"""

from __future__ import annotations

import asyncio
import contextlib
from importlib.metadata import PackageNotFoundError, version

import grpc
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from lb_service.balancer import LoadBalancer, Outcome
from lb_service.health.result import ProbeResult
from lb_service.model import AgentHealth, StrategyName
from lb_service.service.agent_gauges import AgentGauges, read_loads
from lb_service.service.health_metrics import HealthMetrics
from lb_service.service.observe import MethodRecorder, RpcType

#: Status codes as Go spells them (``codes.Code.String()``), which go-grpc-prometheus
#: puts in ``grpc_code``; note Go's ``Canceled`` with one l.
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

#: Handling-time buckets: this service answers in well under a millisecond, so the
#: Prometheus defaults (5 ms and up) would put every RPC in the first bucket.
RPC_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1, 10)
#: Request-duration buckets: LLM requests take from a fraction of a second to minutes.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def package_version() -> str:
    """The installed lb-service version, or ``unknown`` when run from an uninstalled tree."""
    try:
        return version("lb-service")
    except PackageNotFoundError:
        return "unknown"


class _MethodSeries:
    """One method's gRPC series, labelled once so each call costs only the increments."""

    __slots__ = (
        "_handled",
        "_handled_by_code",
        "_labels",
        "_received",
        "_seconds",
        "_sent",
        "_started",
    )

    def __init__(self, metrics: Metrics, service: str, method: str, kind: RpcType) -> None:
        labels = self._labels = (kind, service, method)
        self._started = metrics.rpc_started.labels(*labels)
        self._received = metrics.rpc_received.labels(*labels)
        self._sent = metrics.rpc_sent.labels(*labels)
        self._seconds = metrics.rpc_seconds.labels(*labels)
        self._handled = metrics.rpc_handled
        self._handled_by_code: dict[grpc.StatusCode, Counter] = {}
        # OK is the code nearly every call ends with: labelled now, so it shows as 0.
        self._handled_by_code[grpc.StatusCode.OK] = self._handled.labels(*labels, "OK")

    def started(self) -> None:
        """A call arrived."""
        self._started.inc()

    def received(self) -> None:
        """A request message was read."""
        self._received.inc()

    def sent(self) -> None:
        """A response message was written."""
        self._sent.inc()

    def handled(self, code: grpc.StatusCode, seconds: float) -> None:
        """A call finished with ``code`` after ``seconds``."""
        counter = self._handled_by_code.get(code)
        if counter is None:
            counter = self._handled.labels(*self._labels, GO_CODE_NAMES[code])
            self._handled_by_code[code] = counter
        counter.inc()
        self._seconds.observe(seconds)


class Metrics:
    """The service's Prometheus metrics, in their own registry.

    Creating one turns off prometheus_client's ``*_created`` series for the process
    (the library has no per-registry switch): they double the series count and no
    dashboard reads them.
    """

    def __init__(self) -> None:
        """Create the metrics; nothing is exported until ``serve_http``."""
        prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        rpc_labels = ["grpc_type", "grpc_service", "grpc_method"]
        self.rpc_started = Counter(
            "grpc_server_started_total",
            "RPCs started on the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.rpc_handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, whatever their status code.",
            [*rpc_labels, "grpc_code"],
            registry=self.registry,
        )
        self.rpc_received = Counter(
            "grpc_server_msg_received_total",
            "Request messages received on the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.rpc_sent = Counter(
            "grpc_server_msg_sent_total",
            "Response messages sent by the server.",
            rpc_labels,
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Time to handle an RPC (to the end of the stream for streams).",
            rpc_labels,
            buckets=RPC_BUCKETS,
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
        self._requests = Counter(
            "lb_agent_requests_total",
            "Requests ended per agent: reported ends and expired leases.",
            ["agent"],
            registry=self.registry,
        )
        self._failures = Counter(
            "lb_agent_failures_total",
            "Failed requests per agent: ends reported failed and expired leases.",
            ["agent"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "lb_agent_request_duration_seconds",
            "Request latency reported per agent, in seconds.",
            ["agent"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._ejections = Counter(
            "lb_agent_ejections_total",
            "Outlier ejections per agent.",
            ["agent"],
            registry=self.registry,
        )
        self.health = HealthMetrics(self.registry)
        build = Gauge(
            "lb_build_info",
            "Always 1; the version label says which lb-service runs.",
            ["version"],
            registry=self.registry,
        )
        build.labels(package_version()).set(1)
        self._agents = AgentGauges()
        self.registry.register(self._agents)

    def recorder(self, method: str, kind: RpcType) -> MethodRecorder:
        """The recorder of one method's calls (``/package.Service/Method``)."""
        service, _, name = method.lstrip("/").rpartition("/")
        return _MethodSeries(self, service, name, kind)

    # The balancer's Observer protocol.
    def selection(self, strategy: StrategyName, outcome: Outcome) -> None:
        """Count one selection."""
        self._selections.labels(strategy.value, outcome.value).inc()

    def request_ended(self, agent_id: str, latency_ms: float, failed: bool) -> None:
        """Count a reported request end and its latency."""
        self._requests.labels(agent_id).inc()
        if failed:
            self._failures.labels(agent_id).inc()
        self._durations.labels(agent_id).observe(latency_ms / 1000)

    def lease_expired(self, agent_id: str) -> None:
        """Count an expired lease: a failed request of its agent."""
        self._expired.inc()
        self._requests.labels(agent_id).inc()
        self._failures.labels(agent_id).inc()

    def agent_ejected(self, agent_id: str) -> None:
        """Count an outlier ejection."""
        self._ejections.labels(agent_id).inc()

    def agent_registered(self, agent_id: str) -> None:
        """Start the agent's counters at 0, so its first failure or ejection is a change.

        A labelled counter has no series until its first increment, and ``rate()`` or
        ``increase()`` cannot see the step from nothing to 1.
        """
        for family in (self._requests, self._failures, self._durations, self._ejections):
            family.labels(agent_id)

    def agent_deregistered(self, agent_id: str) -> None:
        """Drop the agent's series, so agents that come and go do not pile up series."""
        for family in (self._requests, self._failures, self._durations, self._ejections):
            with contextlib.suppress(KeyError):
                family.remove(agent_id)

    # The health monitor's HealthObserver protocol.
    def health_changed(self, agent_id: str, previous: AgentHealth, health: AgentHealth) -> None:
        """Count an agent's health transition."""
        self.health.health_changed(agent_id, previous, health)

    def probe_finished(self, agent_id: str, result: ProbeResult) -> None:
        """Time a probe and count its failure."""
        self.health.probe_finished(agent_id, result)

    def heartbeat_missed(self, agent_id: str) -> None:
        """Count a missed heartbeat."""
        self.health.heartbeat_missed(agent_id)

    def panic_changed(self, panicking: bool) -> None:
        """Count an entry into panic mode."""
        self.health.panic_changed(panicking)

    def attach(self, balancer: LoadBalancer, loop: asyncio.AbstractEventLoop) -> None:
        """Read ``balancer``'s per-agent gauges on ``loop`` at every scrape."""
        self._agents.attach(balancer, loop)

    def detach(self) -> None:
        """Stop reading the balancer at scrapes (the server stopped); serve the last loads."""
        self._agents.detach()

    async def refresh(self, balancer: LoadBalancer) -> None:
        """Take a new snapshot of per-agent loads: what a scrape serves if the loop is busy."""
        self._agents.snapshot = await read_loads(balancer)

    def serve_http(self, address: str) -> int:
        """Export /metrics over HTTP on ``address`` (HOST:PORT); return the bound port."""
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), host.strip("[]"), registry=self.registry)
        return int(server.server_port)
