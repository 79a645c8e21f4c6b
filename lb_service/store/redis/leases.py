"""Leases on the Redis store: request starts, ends and expiries.

An end or an expiry closes its lease in one script, so a lease is closed exactly
once however many replicas race; its estimates are computed in Python and written
back as ``estimates`` describes.
"""

from __future__ import annotations

import structlog

from lb_service.errors import StoreUnavailable
from lb_service.store.base import EndOutcome, EndResult, Lease, Limit, RequestEnd, UnknownAgent
from lb_service.store.feedback import Feedback, close_lease, end_result, fold_expiry
from lb_service.store.redis.core import RedisCore
from lb_service.store.redis.estimates import FOLD_ATTEMPTS, Fold, end_rule, expiries
from lb_service.store.redis.records import (
    decode_record,
    quote_lesson,
    quote_model,
    unquote_lesson,
    with_estimates,
)

log = structlog.get_logger(__name__)


class Leases(RedisCore):
    """Opening, ending and expiring leases, and writing back their estimates."""

    async def open_lease(
        self,
        agent_id: str,
        now_ms: int,
        max_leases: int = 0,
        *,
        only_known: bool = False,
        model: str = "",
    ) -> str | Limit | UnknownAgent:
        """Record a request start on the agent, for ``model``; returns the new lease's request_id.

        With ``only_known`` an id neither registered nor holding a load record returns
        ``UnknownAgent``; else with ``max_leases`` (0 = no limit) leases open it returns
        ``Limit.LEASES``; both checked in the same script that would open it.
        """
        reply = await self._eval(
            "open_lease",
            [
                self._epoch_candidate(),
                agent_id,
                now_ms,
                max_leases,
                int(only_known),
                quote_model(model),
            ],
        )
        if reply == "unknown-agent":
            return UnknownAgent(agent_id)
        if isinstance(reply, str):
            return Limit(reply)
        request_id, version, record, lesson = reply
        self._observed(version)
        self._opened.add(agent_id, request_id, unquote_lesson(lesson))
        self._remember(agent_id, record)
        return str(request_id)

    async def end_request(self, end: RequestEnd) -> EndResult:
        """Record a request end (see EndOutcome); changes nothing unless it succeeds.

        One step when this replica's copy of the agent's record is what the end finds
        (it made the last change to it): the estimates ``feedback.fold_end`` computes
        from that copy are sent along and written in the script that closes the lease,
        which checks every input of the fold still holds. Otherwise two steps (see the
        ``estimates`` module): the lease is closed and booked, then the estimates computed
        from the booked record are written.
        """
        guess = self._guess_end(end)
        reply = await self._eval(
            "end_request",
            [
                end.request_id,
                end.agent_id,
                repr(float(end.latency_ms)),
                end.now_ms,
                int(end.only_known),
                *(guess[1] if guess is not None else [""]),
            ],
        )
        outcome = EndOutcome(reply[0])
        self._observed(reply[2])
        if len(reply) <= 3:
            return EndResult(outcome, reply[1])
        agent_id, raw, ejected_now, population, written, closed, model, overtook = reply[3:11]
        self._opened.discard(agent_id, closed)
        if written is not None and guess is not None:
            # The guess held: its estimates are written, and the reply is the record now.
            self._remember(agent_id, raw)
            guessed = guess[0]
            if guessed.result.ejected_until_ms != guessed.record.ejected_until_ms:
                self._ejections[agent_id] = guessed.result.ejected_until_ms
            return end_result(outcome, agent_id, guessed.record, guessed.result, end.now_ms)
        # The estimate write below moves the record on: this copy would be stale.
        self._decoded.pop(agent_id, None)
        start = Fold(
            agent_id,
            end_rule(end, outcome is EndOutcome.CLOSED, unquote_lesson(model), int(overtook)),
            decode_record(raw),
            int(ejected_now),
            int(population),
        )
        if await self._write_estimates(end.now_ms, [start]):
            return EndResult(outcome, reply[1], agent_id=agent_id)  # estimates dropped
        return end_result(outcome, agent_id, start.record, start.result, end.now_ms)

    def _guess_end(self, end: RequestEnd) -> tuple[Fold, list[str | int]] | None:
        """The fold of ``end`` on this replica's copy of the agent's record, and its arguments.

        Only for a registered agent named in the end, whose record this replica holds:
        it assumes a lease closes when the end names a request or the agent has one
        open, with the model this replica opened that lease for (``OpenedHere``; none
        if another replica opened it), as many older leases open on the agent as this
        replica holds there, and the ejected count and population as this replica last
        saw them. The script writes the result only if all of that still holds.
        """
        config, known = self._config, self._decoded.get(end.agent_id)
        if known is None or config is None or end.agent_id not in config.agents:
            return None
        record = known[1]
        closes = bool(end.request_id) or record.stats.active > 0
        booked = close_lease(record.stats, end.now_ms) if closes else record.stats
        model = self._opened.model(end.agent_id, end.request_id) if closes else ""
        # Exact when this replica opened every lease open on the agent; checked anyway.
        older = self._opened.older(end.agent_id, end.request_id) if end.request_id else 0
        ejected_now = sum(until > end.now_ms for until in self._ejections.values())
        fold = Fold(
            end.agent_id,
            end_rule(end, closes, model, older),
            record._replace(stats=booked),
            ejected_now,
            len(config.agents),
        )
        _, estimate_version, fields, eject_until, _ = fold.arguments(end.now_ms)
        return fold, [
            estimate_version,
            repr(float(booked.busy_total_ms)),
            ejected_now,
            len(config.agents),
            int(closes),
            fields,
            eject_until,
            quote_lesson(model),
            older,
        ]

    async def expire_leases(
        self, started_before_ms: int, now_ms: int, feedback: Feedback
    ) -> list[Lease]:
        """Close leases started before the cutoff as failed requests; returns them.

        Pending picks whose hold has ended by ``now_ms`` end too, in the first step.

        Each counts as a failed request of its agent, but as lateness, not an agent
        failure: no latency sample, no outlier ejection (``feedback.fold_expiry``). Two
        steps (see the ``estimates`` module): the leases are closed and booked, then the
        estimates are written, one write for all of them.
        """
        reply = await self._eval("expire_leases", [started_before_ms, now_ms])
        self._observed(reply[0])
        expired: list[Lease] = []
        folds: dict[str, Fold] = {}
        counts: dict[str, int] = {}
        for i in range(1, len(reply), 5):
            request_id, agent_id, started, model, raw = reply[i : i + 5]
            expired.append(Lease(request_id, agent_id, int(started), unquote_lesson(model)))
            self._opened.discard(agent_id, request_id)
            booked = decode_record(raw)
            pending = folds.get(agent_id)
            counts[agent_id] = counts.get(agent_id, 0) + 1
            if pending is None:
                folds[agent_id] = Fold(agent_id, expiries(1), booked, 0, 0)
            else:
                # Folded in turn on the record as each close booked it, as the memory
                # store does (write_estimates keeps the bookkeeping of the last); after
                # a conflict, all of them again on the record as it is then.
                pending.result = fold_expiry(with_estimates(booked.stats, pending.result))
                pending.refold = expiries(counts[agent_id])
        if folds:
            await self._write_estimates(now_ms, list(folds.values()))
        return expired

    async def _write_estimates(self, now_ms: int, folds: list[Fold]) -> list[Fold]:
        """Write the folds' estimates (``write_estimates``), computing again on conflict.

        A fold that still conflicts after ``FOLD_ATTEMPTS`` writes, or one Redis failed
        to take, is dropped with a warning: estimates are soft state, and the lease it
        came from is already closed (the ``estimates`` module). Returns the dropped folds.
        """
        pending = folds
        try:
            for _ in range(FOLD_ATTEMPTS):
                args: list[str | int] = [now_ms]
                for fold in pending:
                    args += fold.arguments(now_ms)
                reply = await self._eval("write_estimates", args)
                self._observed(reply[0])
                conflicts = []
                for fold, i in zip(pending, range(1, len(reply), 4), strict=True):
                    if reply[i] == "conflict":
                        fold.again(
                            decode_record(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3])
                        )
                        conflicts.append(fold)
                pending = conflicts
                if not pending:
                    return []
            reason = f"{FOLD_ATTEMPTS} conflicting writes"
        except StoreUnavailable as error:
            reason = str(error)
        for fold in pending:
            log.warning("estimates_dropped", agent_id=fold.agent_id, reason=reason)
        return pending
