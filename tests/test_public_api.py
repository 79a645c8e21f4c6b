"""The package's public surface is explicit and pinned, and the core imports no grpc."""

from __future__ import annotations

import ast
from pathlib import Path

import lb_service

PACKAGE = Path(lb_service.__file__).parent
#: The edges that speak gRPC: the service layer, the client library, the command line, and
#: the probes of agents (grpc.health.v1 is how a gRPC agent is checked).
EDGES = {"service", "client", "cli.py", "client.py", "client_commands", "probes.py"}
#: The core: every other module.
CORE = [
    p for p in PACKAGE.rglob("*.py") if not EDGES & {p.name, *p.relative_to(PACKAGE).parts[:-1]}
]


def test_public_names_are_pinned() -> None:
    """`lb_service.__all__` is exactly this list, and every name in it resolves."""
    assert sorted(lb_service.__all__) == [
        "Agent",
        "AgentHealth",
        "AgentLoad",
        "AgentNotFound",
        "AllAgentsBusy",
        "AllAgentsDraining",
        "AllAgentsSaturated",
        "BalancerConfig",
        "Compute",
        "Engine",
        "Hardware",
        "HealthMonitor",
        "InvalidArgument",
        "LeaseNotFound",
        "LimitExceeded",
        "LoadBalancer",
        "LoadBalancerError",
        "LoadReport",
        "LoadSnapshot",
        "MemoryStore",
        "NoAgentAvailable",
        "NoAgentsRegistered",
        "NoEligibleAgent",
        "NotFound",
        "ProbeResult",
        "ProbeScheduler",
        "Selection",
        "SelectionRequest",
        "Statistics",
        "Store",
        "StoreUnavailable",
        "StrategyName",
        "Task",
    ]
    assert all(hasattr(lb_service, name) for name in lb_service.__all__)


def test_core_imports_neither_grpc_nor_protobuf() -> None:
    """No core module imports grpc, protobuf or the generated stubs; only service/ may."""
    offenders = []
    for path in CORE:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            offenders += [
                f"{path.name}: {n}" for n in names if n.split(".")[0] in {"grpc", "google", "lb"}
            ]
    assert CORE
    assert offenders == []
