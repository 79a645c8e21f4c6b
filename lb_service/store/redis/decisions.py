"""Selections on the Redis store: what a pick reads, and committing it atomically.

Pending picks (``lb_service.store.pending``) are bookkeeping kept beside the load
records, in keys of their own: per agent the sequence numbers of its pending picks,
oldest first, one sorted set of them all by the end of their hold, and their count per
agent (``AgentStats.pending``), which ``pick_state``, ``stats`` and ``overview`` read
with the records (a change to a count is numbered as a record's is, so a pick reads the
counts that moved: ``mirror``). ``commit_pick`` without acquire adds one and
``open_lease`` confirms the agent's oldest, after ending those whose hold is over, as
``expire_leases`` does too: each in the script it already runs, so no round trip is
added. The commit's re-rank counts them with the open leases, as the decision did.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from lb_service.errors import StoreUnavailable
from lb_service.model import AgentHealth
from lb_service.store.base import AgentStats, Binding, Committed, Limit, Pick, PickState
from lb_service.store.redis.core import Config, RedisCore
from lb_service.store.redis.mirror import Mirror
from lb_service.store.redis.records import (
    Record,
    decode_record,
    decode_report,
    pairs,
    quote_model,
    unquote_lesson,
    with_pending,
)


class Decisions(RedisCore):
    """Reading what a selection needs and committing it (two round trips a pick)."""

    async def pick_state(self, session_id: str, candidate_ids: Sequence[str] = ()) -> PickState:
        """Snapshot what a selection needs in one round trip (one script).

        ``stats`` holds every registered agent and every candidate with a record; the
        registered agents' come from this replica's copy (``mirror``), brought up to date
        with the records changed since its last read, and ``pool`` is the index over it.
        """
        sent, mirror = self._config, self._mirror
        current = mirror is not None and sent is not None and mirror.config.version == sent.version
        reply = await self._eval(
            "pick_state",
            [
                sent.version if sent is not None else "",
                self._default_strategy.value,
                session_id,
                mirror.since if current and mirror is not None else "",
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
            changed,
            records,
            numbers,
            pending,
            counter,
            candidates,
            candidates_pending,
            out,
            reports,
            reports_newest,
        ) = reply
        config = self._adopt(config_version, payload, sent)
        self._observed(version)
        mirror = self._mirror_for(config, every=changed is None)
        if mirror.config.version == config.version:
            ids = config.ids if changed is None else changed
            taken = mirror.fold(ids, self._records(ids, records), numbers, pending, counter)
            self._decoded.update(taken)
        stats: Mapping[str, AgentStats] = MappingProxyType(mirror.stats)
        if candidate_ids:
            found = {
                agent_id: with_pending(record[1].stats, count)
                for agent_id, record, count in zip(
                    candidate_ids,
                    self._records(candidate_ids, candidates),
                    candidates_pending,
                    strict=True,
                )
                if record is not None
            }
            stats = ChainMap(found, mirror.stats)
        binding = None
        if session_id and bound is not None and used is not None:
            binding = Binding(bound, int(float(used)))
        self._ejections = {ejections[i]: int(ejections[i + 1]) for i in range(0, len(ejections), 2)}
        config = mirror.config
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
            pool=mirror.index.pool,
            out={out[i]: AgentHealth(out[i + 1]) for i in range(0, len(out), 2)} if out else {},
            reports={k: decode_report(v) for k, v in pairs(reports).items()} if reports else {},
            reports_newest_ms=int(reports_newest) if reports_newest else 0,
        )

    def _mirror_for(self, config: Config, *, every: bool) -> Mirror:
        """The copy a reply made under ``config`` folds into (``mirror``).

        A reply carrying every registered agent's record under a newer configuration
        than the copy's starts a new copy; one made under an older configuration leaves
        the copy as it is (the copy is newer) and is not folded in.
        """
        mirror = self._mirror
        if mirror is None or int(config.version) > int(mirror.config.version):
            if not every:  # never: a new configuration comes with every record
                raise StoreUnavailable(f"Redis store at {self.where} answered out of order")
            mirror = self._mirror = Mirror(config)
            # Copies of agents no longer registered go with the configuration.
            self._decoded = {i: known for i, known in self._decoded.items() if i in config.agents}
        return mirror

    def _records(self, ids: Sequence[str], joined: str) -> list[tuple[str, Record] | None]:
        """The records of a reply as texts and decoded (one per line, in the order of ``ids``).

        None where an id has none.

        A record this replica wrote itself comes back as it wrote it (the commit's and
        the end's replies carry it), so each id's last decoded record is re-used while
        its text is the same.
        """
        if not ids:
            return []
        known = self._decoded
        found: list[tuple[str, Record] | None] = []
        for agent_id, raw in zip(ids, joined.split("\n"), strict=True):
            if not raw:
                found.append(None)
                continue
            seen = known.get(agent_id)
            found.append(seen if seen is not None and seen[0] == raw else (raw, decode_record(raw)))
        return found

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
