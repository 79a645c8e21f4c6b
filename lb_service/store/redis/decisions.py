"""Selections on the Redis store: what a pick reads, and committing it atomically.

Pending picks (``lb_service.store.pending``) are bookkeeping kept beside the load
records, in keys of their own: per agent the sequence numbers of its pending picks,
oldest first, one sorted set of them all by the end of their hold, and their count per
agent (``AgentStats.pending``), which ``pick_state``, ``stats`` and ``overview`` read
with the records. ``commit_pick`` without acquire adds one and ``open_lease`` confirms
the agent's oldest, after ending those whose hold is over, as ``expire_leases`` does
too: each in the script it already runs, so no round trip is added. The commit's
re-rank counts them with the open leases, as the decision did.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import MappingProxyType

from lb_service.model import AgentHealth
from lb_service.store.base import AgentStats, Binding, Committed, Limit, Pick, PickState
from lb_service.store.redis.core import RedisCore
from lb_service.store.redis.records import (
    Record,
    count_pending,
    decode_record,
    decode_report,
    pairs,
    quote_model,
    unquote_lesson,
)


class Decisions(RedisCore):
    """Reading what a selection needs and committing it (two round trips a pick)."""

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs in one round trip (one script).

        ``stats`` holds every registered agent and every candidate with a record.
        """
        sent = self._config
        reply = await self._eval(
            "pick_state",
            [
                sent.version if sent is not None else "",
                self._default_strategy.value,
                session_id,
                *candidate_ids,
            ],
            writes=False,
        )
        (
            config_version,
            payload,
            version,
            sequence,
            session_count,
            lease_count,
            bound,
            used,
            ejections,
            registered,
            candidates,
            out,
            pending,
            reports,
            reports_newest,
        ) = reply
        config = self._adopt(config_version, payload, sent)
        self._observed(version)
        stats = self._registered_stats(config.ids, registered)
        if candidate_ids:
            for agent_id, raw in zip(candidate_ids, candidates.split("\n"), strict=True):
                if raw:
                    stats[agent_id] = decode_record(raw).stats
        count_pending(stats, pairs(pending))
        binding = None
        if session_id and bound is not None and used is not None:
            binding = Binding(bound, int(float(used)))
        self._ejections = {ejections[i]: int(ejections[i + 1]) for i in range(0, len(ejections), 2)}
        return PickState(
            strategy=config.strategy,
            agents=config.agents,
            stats=stats,
            weights=config.weights,
            binding=binding,
            sequence=int(sequence),
            session_count=int(session_count),
            lease_count=int(lease_count),
            ejections=MappingProxyType(dict(self._ejections)),
            shared=True,
            out={out[i]: AgentHealth(out[i + 1]) for i in range(0, len(out), 2)} if out else {},
            reports={k: decode_report(v) for k, v in pairs(reports).items()} if reports else {},
            reports_newest_ms=int(reports_newest) if reports_newest else 0,
        )

    def _registered_stats(self, ids: tuple[str, ...], joined: str) -> dict[str, AgentStats]:
        """The registered agents' records from a pick_state reply (one per line, in order).

        Most agents' records do not change between two picks (only the picked one's
        and those whose requests ended did), so each id's last decoded record is kept
        and re-used while its text is the same.
        """
        if not ids:
            return {}
        previous = self._decoded
        decoded: dict[str, tuple[str, Record]] = {}
        stats: dict[str, AgentStats] = {}
        for agent_id, raw in zip(ids, joined.split("\n"), strict=True):
            if not raw:
                continue
            known = previous.get(agent_id)
            record = known[1] if known is not None and known[0] == raw else None
            if record is None:
                record = decode_record(raw)
            decoded[agent_id] = (raw, record)
            stats[agent_id] = record.stats
        # Replaced, not updated: ids that left the registry are not kept.
        self._decoded = decoded
        return stats

    async def commit_pick(self, pick: Pick) -> Committed | Limit | None:
        """Record a selection atomically, re-ranking ``pick.contenders`` on current loads.

        Each contender ranks ``(tier, max(floor, per_request x (active + 1) + offset))``
        on its requests in flight at commit (``Contender``), lowest first, ties in turn
        by the sequence. Returns None (recording no selection, counting a failed one in
        the same script) when every contender is at max_connections, and a ``Limit``
        (recording nothing) when the pick would open a lease past ``pick.max_leases`` or
        bind a new session past ``pick.max_sessions``.
        A binding of the session made by a concurrent pick (one this replica's snapshot
        did not show) and used since ``pick.fresh_since_ms`` wins over ``pick.bind``: its
        agent is committed and returned with ``sticky=True``.
        Without ``pick.acquire`` the pick is pending on its agent until
        ``pick.hold_until_ms`` (``lb_service.store.pending``).
        """
        seen = pick.seen
        args: list[str | int] = [
            self._epoch_candidate(),
            pick.agent_id,
            pick.now_ms,
            int(pick.acquire),
            pick.session_id,
            int(pick.bind),
            pick.fresh_since_ms,
            seen.agent_id if seen is not None else "",
            seen.last_used_ms if seen is not None else "",
            pick.max_leases,
            pick.max_sessions,
            quote_model(pick.model) if pick.acquire else "",
            pick.hold_until_ms,
        ]
        for contender in pick.contenders:
            args += [
                contender.agent_id,
                contender.max_connections,
                repr(float(contender.tier)),
                repr(float(contender.per_request)),
                repr(float(contender.offset)),
                repr(float(contender.floor)),
            ]
        reply = await self._eval("commit_pick", args)
        if reply is None:  # the script counted the failed selection
            return None
        if isinstance(reply, str):
            return Limit(reply)
        agent_id, request_id, sticky, version, record, lesson = reply
        self._observed(version)
        if request_id:
            self._opened.add(agent_id, request_id, unquote_lesson(lesson))
        self._remember(agent_id, record)
        return Committed(agent_id, request_id, sticky=bool(sticky))

    async def record_failed_selection(self) -> None:
        """Count a selection that found no agent."""
        await self._call(lambda r: r.hincrby(self._key("counters"), "failed", 1), writes=True)
