"""Health records on the Redis store, and the claim that lets one replica probe an agent."""

from __future__ import annotations

from collections.abc import Mapping

from lb_service.health.state import HealthRecord
from lb_service.store.base import HealthWrite
from lb_service.store.health import decode_health, encode_health, out_value
from lb_service.store.redis.core import RedisCore


class HealthRecords(RedisCore):
    """Agents' health records (compare-and-set) and probe claims."""

    async def health(self) -> Mapping[str, HealthRecord]:
        """Health records of the registered agents that have one (one HGETALL)."""
        raw = await self._call(lambda r: r.hgetall(self._key("health")))
        return {agent_id: decode_health(text) for agent_id, text in raw.items()}

    async def health_of(self, agent_id: str) -> HealthRecord | None:
        """One agent's health record, or None (one HGET)."""
        text = await self._call(lambda r: r.hget(self._key("health"), agent_id))
        return decode_health(text) if text is not None else None

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        """Replace the agent's record if it is still ``expected``: one script, atomic."""
        reply = await self._eval(
            "put_health",
            [
                agent_id,
                encode_health(record),
                encode_health(expected) if expected is not None else "",
                out_value(record),
            ],
        )
        if isinstance(reply, str):
            return HealthWrite(reply)
        self._observed(reply[1])
        return HealthWrite.APPLIED

    async def claim_probe(self, agent_id: str, now_ms: int, hold_ms: int) -> bool:
        """Claim the agent's next probe: ``SET NX PX hold_ms``, so it lapses by itself."""
        key = self._key(f"probe_claim:{agent_id}")
        claimed = await self._call(
            lambda r: r.set(key, now_ms, nx=True, px=max(int(hold_ms), 1)), writes=True
        )
        return bool(claimed)
