"""Health records as the stores keep them: the memory store's table and the Redis text form.

Both stores write a record compare-and-set (``Store.put_health``) and keep beside the
records the map of agents that are out (UNHEALTHY or DRAINING), which every pick
reads: usually empty, so a healthy fleet costs a pick nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType

from lb_service.health.state import HealthRecord
from lb_service.model import AgentHealth
from lb_service.store.base import HealthWrite


class HealthTable:
    """The memory store's health records, out map and probe claims (it says what is registered)."""

    def __init__(self) -> None:
        """Start with no records and no claims."""
        self._records: dict[str, HealthRecord] = {}
        self._out: dict[str, AgentHealth] = {}
        self.out = MappingProxyType(self._out)
        self._claims: dict[str, int] = {}

    def records(self) -> Mapping[str, HealthRecord]:
        """Every record, by agent id (a live read-only view)."""
        return MappingProxyType(self._records)

    def get(self, agent_id: str) -> HealthRecord | None:
        """One agent's record, or None."""
        return self._records.get(agent_id)

    def put(
        self,
        agent_id: str,
        record: HealthRecord,
        expected: HealthRecord | None,
        registered: bool,
    ) -> tuple[HealthWrite, bool]:
        """Compare-and-set one record; also whether the agent's health changed."""
        if not registered:
            return HealthWrite.UNKNOWN_AGENT, False
        current = self._records.get(agent_id)
        if current != expected:
            return HealthWrite.CONFLICT, False
        self._records[agent_id] = record
        health = record.health
        before = self._out.get(agent_id, AgentHealth.HEALTHY)
        if health is AgentHealth.HEALTHY:
            self._out.pop(agent_id, None)
        else:
            self._out[agent_id] = health
        return HealthWrite.APPLIED, before is not health or current is None or (
            current.reason != record.reason
        )

    def forget(self, agent_id: str) -> None:
        """Drop the agent's record, out entry and claim (it was deregistered)."""
        self._records.pop(agent_id, None)
        self._out.pop(agent_id, None)
        self._claims.pop(agent_id, None)

    def claim(self, agent_id: str, now_ms: int, hold_ms: int) -> bool:
        """Claim the agent's probe until ``now_ms + hold_ms`` unless a claim holds now."""
        if self._claims.get(agent_id, 0) > now_ms:
            return False
        self._claims[agent_id] = now_ms + hold_ms
        return True

    def restore(self, records: Mapping[str, HealthRecord]) -> None:
        """Replace every record (a state file restored), rebuilding the out map."""
        self._records.clear()
        self._out.clear()
        for agent_id, record in records.items():
            self.put(agent_id, record, None, registered=True)


#: HealthRecord's fields in the order its text form lists them.
_FIELDS = (
    "probe_ok",
    "probe_reason",
    "successes",
    "failures",
    "started",
    "heartbeat_at_ms",
    "heartbeat_missed",
    "drained",
)


def encode_health(record: HealthRecord) -> str:
    """A record as compact JSON (positional); the same record always gives the same text."""
    return json.dumps([getattr(record, name) for name in _FIELDS], separators=(",", ":"))


def decode_health(text: str) -> HealthRecord:
    """A record from ``encode_health``'s text; fields a newer text adds are ignored."""
    values = json.loads(text)
    return HealthRecord(**dict(zip(_FIELDS, values, strict=False)))


def out_value(record: HealthRecord) -> str:
    """What the Redis out hash holds for the record's agent ("" = healthy: no entry)."""
    health = record.health
    return "" if health is AgentHealth.HEALTHY else health.value
