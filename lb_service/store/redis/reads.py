"""Reads of the Redis store: load records, leases, counters, and the overview of all."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from redis.asyncio import Redis

from lb_service.store.base import AgentStats, Counters, Lease, Overview
from lb_service.store.health import decode_health
from lb_service.store.redis.core import RedisCore
from lb_service.store.redis.records import (
    decode_counters,
    decode_lease,
    decode_report,
    pairs,
    records_in_order,
)


class Reads(RedisCore):
    """What GetLoads, GetStatistics and the housekeeping read (one round trip each)."""

    async def stats(self) -> Mapping[str, AgentStats]:
        """Load history of every agent id ever seen, in the order they were first seen."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.hgetall(self._key("stats"))
            pipe.hgetall(self._key("pending"))
            return await pipe.execute()

        return records_in_order(*await self._call(read))

    async def session_count(self) -> int:
        """Sticky-session bindings held."""
        return int(await self._call(lambda r: r.hlen(self._key("bindings"))))

    async def lease_count(self) -> int:
        """Leases open (what the max_leases limit counts): one HLEN, not the leases."""
        return int(await self._call(lambda r: r.hlen(self._key("leases"))))

    async def leases(self) -> Mapping[str, Lease]:
        """Every open lease by request_id, in the order they started."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.zrange(self._key("lease_order"), 0, -1)
            pipe.hgetall(self._key("leases"))
            return await pipe.execute()

        order, records = await self._call(read)
        leases: dict[str, Lease] = {}
        for request_id in order:
            record = records.get(request_id)
            if record is not None:
                leases[request_id] = decode_lease(request_id, record)
        return MappingProxyType(leases)

    async def counters(self) -> Counters:
        """Service-wide counters."""

        async def read(client: Redis) -> list[Any]:
            pipe = client.pipeline(transaction=True)
            pipe.hgetall(self._key("counters"))
            pipe.hgetall(self._key("selections"))
            return await pipe.execute()

        counters, selections = await self._call(read)
        return decode_counters(counters, selections)

    async def overview(self) -> Overview:
        """Strategy, registry, weights, every load record and the counters: one script.

        The cached configuration is re-validated in the same reply, as in ``pick_state``.
        """
        sent = self._config
        (
            config_version,
            payload,
            flat_stats,
            flat_counters,
            flat_selections,
            flat_health,
            flat_pending,
            flat_reports,
        ) = await self._eval(
            "overview",
            [sent.version if sent is not None else "", self._default_strategy.value],
            writes=False,
        )
        config = self._adopt(config_version, payload, sent)
        return Overview(
            strategy=config.strategy,
            agents=config.agents,
            weights=config.weights,
            stats=records_in_order(pairs(flat_stats), pairs(flat_pending)),
            counters=decode_counters(pairs(flat_counters), pairs(flat_selections)),
            health={k: decode_health(v) for k, v in pairs(flat_health).items()},
            reports={k: decode_report(v) for k, v in pairs(flat_reports).items()},
        )
