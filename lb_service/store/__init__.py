"""State storage: the Store interface and its in-memory implementation."""

from __future__ import annotations

from lb_service.store.base import (
    AgentStats,
    Binding,
    Counters,
    EndOutcome,
    EndResult,
    Lease,
    Pick,
    PickState,
    RequestEnd,
    Store,
)
from lb_service.store.memory import MemoryStore

__all__ = [
    "AgentStats",
    "Binding",
    "Counters",
    "EndOutcome",
    "EndResult",
    "Lease",
    "MemoryStore",
    "Pick",
    "PickState",
    "RequestEnd",
    "Store",
]
