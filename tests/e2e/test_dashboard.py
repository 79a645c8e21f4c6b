"""The Grafana dashboard only queries series a real server exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from lb.v1 import load_balancer_pb2 as pb
from lb.v1 import load_balancer_pb2_grpc as pb_grpc
from prometheus_client.parser import text_string_to_metric_families

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.service.metrics import Metrics
from lb_service.service.options import ServerOptions
from lb_service.service.server import LoadBalancerServer
from lb_service.store.memory import MemoryStore
from tests.e2e.test_metrics import scrape_text

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "lb-service.json"
#: A series name this service exports: every one starts so, and no label or function does.
METRIC_NAME = re.compile(r"\b(?:grpc_server|lb)_[a-z0-9_]+")


def _queries(node: Any) -> Iterator[str]:
    """Every PromQL text in the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in {"expr", "definition"} and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, dict) and "query" in value:
                yield str(value["query"])
            else:
                yield from _queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from _queries(item)


def queried_names() -> set[str]:
    """The series names the dashboard's queries read."""
    dashboard = json.loads(DASHBOARD.read_text())
    return {name for query in _queries(dashboard) for name in METRIC_NAME.findall(query)}


async def _drive(port: int) -> None:
    """Register agents, acquire, end (one failure), and one refused selection."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.LoadBalancerStub(channel)
        for name, vram in (("gpu-1", 24), ("cpu-1", 0)):
            await stub.RegisterAgent(
                pb.RegisterAgentRequest(
                    agent=pb.Agent(
                        id=name,
                        host="10.0.0.1",
                        port=11434,
                        models=["m"],
                        hardware=pb.Hardware(vram_gb=vram),
                    )
                )
            )
        for n in range(4):
            pick = await stub.SelectAgent(pb.SelectAgentRequest(acquire=True, session_id=f"s{n}"))
            await stub.RecordRequestEnd(
                pb.RecordRequestEndRequest(
                    request_id=pick.request_id, latency_ms=300, failed=n == 0
                )
            )
        await stub.SelectAgent(pb.SelectAgentRequest(acquire=True))  # left open: active 1
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.SelectAgent(pb.SelectAgentRequest(task=pb.TaskRequirements(model="none")))


async def test_every_series_the_dashboard_queries_is_in_a_real_scrape() -> None:
    """After real traffic, each metric name in the dashboard's PromQL is in /metrics."""
    metrics = Metrics()
    balancer = LoadBalancer(MemoryStore(), BalancerConfig(), observer=metrics)
    server = LoadBalancerServer(
        balancer, ServerOptions(listen="127.0.0.1:0", metrics_listen="127.0.0.1:0"), metrics
    )
    await server.start()
    try:
        await _drive(server.port)
        text = await scrape_text(server.metrics_port)
    finally:
        await server.stop(0)
    exported = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    wanted = queried_names()
    # Not vacuous: the RPC, selection and per-agent panels are all there.
    assert {
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "lb_selections_total",
        "lb_agent_active_connections",
        "lb_agent_request_duration_seconds_bucket",
        "lb_agent_failures_total",
        "lb_agent_ejections_total",
        "lb_agent_health",
    } <= wanted
    assert sorted(wanted - exported) == []


def test_the_dashboard_is_grafana_json_with_placed_panels() -> None:
    """Every panel has an id, a grid position and, unless it is a row, a Prometheus query."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "lb-service"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert all(target["expr"] for target in panel["targets"])
