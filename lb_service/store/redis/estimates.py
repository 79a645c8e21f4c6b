"""Request ends and expiries: the estimates Python folds, and how a replica guesses an end.

A request end is one step when the replica guessed it right. The replica keeps the
last text of each agent's record it read or wrote; from it, Python folds the end's
estimates before the call (``feedback.fold_end`` on ``close_lease`` of that copy) and
sends them with the end. The script closes the lease and writes them in the same
step only if every input of that fold still holds: the estimate version, the booked
busy time (the only bookkeeping the fold reads), the ejected count, the population,
whether a lease closes, the model of the lease it closes (its figures are learned per
model, ``lb_service.model_cost``), how many older leases of its agent are still open
(evidence of its slot count, ``capacity.completed``), and the last request time. So the
figures written are exactly those the two steps below would write. A guess holds when this replica
made the last change to the record (a pick or start through it, and no end on that
agent through another replica since) and opened the lease it closes, or that lease
names no model (the replica keeps the models of the leases it opened); otherwise the
script books the end and answers as below, and it takes two steps.

Request ends (unless guessed) and expiries take two steps. First a script checks the
end, closes the lease and books it (``end_request``; ``expire_leases`` closes every
overdue lease), atomically, so a lease is closed exactly once however many replicas
race; it returns the agent's record as booked, with the ejected count, population and
lease's model an end's fold needs. Then Python computes the estimates
(``feedback.fold_end``, ``fold_expiry``: latency averages, failures, ejection, learned
capacity, model cost) and writes them back with ``write_estimates``, a compare-and-set
on the record's *estimate version*, which only that write moves: bookkeeping meanwhile
(other leases opening or closing) is kept as it is, while another estimate written
meanwhile is a conflict, answered in the same reply with the record as it is now, from
which Python computes again (at most ``FOLD_ATTEMPTS`` times, then the sample is dropped
with a warning). A write that ejects an agent also checks that the ejected count it was
computed with still holds, so replicas folding at once never eject more than
``max_share``; it records the ejection in the ejections hash in the same step.

Estimates are soft state. If a replica dies (or Redis fails) between the two steps,
the lease is still closed exactly once, its bookkeeping and the latency counters are
exact, and only that one end's estimate is lost: no latency sample, failure or
completion is folded in for it (the busy time it took then counts towards the next
completion, a learned capacity briefly a little low). Later ends correct the figures;
the end itself is reported as done, never retried, so no lease is closed twice. (A
call cancelled between the steps, its client gone, loses its estimate the same way.)
"""

from __future__ import annotations

from collections.abc import Callable

from lb_service.store.base import AgentStats, RequestEnd
from lb_service.store.feedback import fold_end, fold_expiry, is_ejected
from lb_service.store.redis.records import Record, estimate_fields

#: Estimate writes tried for one end or expiry before its sample is dropped (conflicts).
FOLD_ATTEMPTS = 16

#: A fold's rule: the estimates from a record, the ejected count and the population.
Rule = Callable[[AgentStats, int, int], AgentStats]


def end_rule(end: RequestEnd, closed: bool, model: str | None, overtook: int = 0) -> Rule:
    """``feedback.fold_end`` of this end, as a fold's rule.

    ``closed``: it closed a lease, whose lesson is ``model`` (``model_cost.lesson``), and
    which ``overtook`` older leases of its agent still open.
    """

    def fold(stats: AgentStats, ejected_now: int, population: int) -> AgentStats:
        return fold_end(
            stats,
            closed,
            end.latency_ms,
            end.failed,
            end.now_ms,
            end.feedback,
            ejected_now,
            population,
            model,
            overtook,
        )

    return fold


def expiries(count: int) -> Rule:
    """``feedback.fold_expiry`` applied ``count`` times: one agent's leases of one sweep."""

    def fold(stats: AgentStats, ejected_now: int, population: int) -> AgentStats:
        for _ in range(count):
            stats = fold_expiry(stats)
        return stats

    return fold


class Fold:
    """One agent's estimates to write, and how to compute them again on a conflict."""

    __slots__ = (
        "agent_id",
        "ejected_now",
        "estimate_version",
        "population",
        "record",
        "refold",
        "result",
    )

    def __init__(
        self, agent_id: str, refold: Rule, record: Record, ejected_now: int, population: int
    ) -> None:
        self.agent_id = agent_id
        self.refold = refold
        self.record = record.stats
        self.estimate_version = record.estimate_version
        self.ejected_now = ejected_now
        self.population = population
        self.result: AgentStats = refold(record.stats, ejected_now, population)

    def again(self, record: Record, ejected_now: int, population: int) -> None:
        """Compute the estimates again from the record as it is now (after a conflict)."""
        self.record, self.estimate_version = record.stats, record.estimate_version
        self.ejected_now, self.population = ejected_now, population
        self.result = self.refold(record.stats, ejected_now, population)

    def arguments(self, now_ms: int) -> list[str | int]:
        """The five ``write_estimates`` arguments of this fold."""
        result = self.result
        ejects = result.ejected_until_ms != self.record.ejected_until_ms and is_ejected(
            result, now_ms
        )
        return [
            self.agent_id,
            self.estimate_version,
            " ".join([*estimate_fields(result), str(self.record.last_request_at_ms)]),
            result.ejected_until_ms if ejects else "",
            self.ejected_now if ejects else "",
        ]


class OpenedHere:
    """The models of the leases this replica opened, per agent in the order opened.

    What an end guesses the model of the lease it closes from (``Leases._guess_end``): the
    request's own lease, or for an end naming none the agent's oldest. Only a guess,
    checked by the script: a lease opened through another replica is not here (its
    model guessed as none), and one ended or expired through another stays until this
    replica sees its agent idle, or until ``LIMIT`` are held and all are dropped. A wrong
    guess costs the end its second step, nothing more.
    """

    LIMIT = 16_384

    def __init__(self) -> None:
        """Hold none."""
        self._by_agent: dict[str, dict[str, str | None]] = {}
        self._held = 0

    def add(self, agent_id: str, request_id: str, model: str | None) -> None:
        """Note a lease this replica opened, with its lesson (``model_cost.lesson``)."""
        if self._held >= self.LIMIT:
            self._by_agent.clear()
            self._held = 0
        self._by_agent.setdefault(agent_id, {})[request_id] = model
        self._held += 1

    def discard(self, agent_id: str, request_id: str) -> None:
        """Forget a lease that closed (nothing if it is not held)."""
        leases = self._by_agent.get(agent_id)
        if leases is not None and leases.pop(request_id, None) is not None:
            self._held -= 1
            if not leases:
                del self._by_agent[agent_id]

    def idle(self, agent_id: str) -> None:
        """Forget the agent's leases: it holds none open."""
        self._held -= len(self._by_agent.pop(agent_id, {}))

    def older(self, agent_id: str, request_id: str) -> int:
        """How many leases opened here before ``request_id`` on the agent are held (0: none)."""
        leases = self._by_agent.get(agent_id, {})
        for position, held in enumerate(leases):
            if held == request_id:
                return position
        return 0

    def model(self, agent_id: str, request_id: str) -> str | None:
        """The lesson of the lease ``request_id`` ("": the agent's oldest) as opened here."""
        leases = self._by_agent.get(agent_id, {})
        if request_id:
            return leases.get(request_id, "")
        return next(iter(leases.values()), "")
