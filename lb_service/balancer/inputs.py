"""What one decision reads, and what its commit lets a shared store re-rank.

``decision_inputs`` joins the store's snapshot with the balancer's options (and the
fresh load reports that can change the decision); ``contenders`` turns a decision into
what a shared store re-ranks at commit.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from lb_service.balancer.options import BalancerConfig
from lb_service.decision import Decision, DecisionInputs
from lb_service.model import Agent
from lb_service.reports import ReceivedReport, Saturation, fresh
from lb_service.store.base import Contender, PickState
from lb_service.strategies.base import leaders

_NO_REPORTS: Mapping[str, ReceivedReport] = {}

#: The most contenders a commit re-ranks: the choice and the seven others ranked lowest.
#: The re-rank exists for the picks other replicas commit between this replica's read
#: and its commit (one round trip), which can fill only a few of the lowest; eight
#: covers eight replicas picking at once, and keeps a commit's cost from growing with
#: the fleet (every contender is a record the script reads).
RERANK_LIMIT = 8


def decision_inputs(
    state: PickState,
    candidates: Sequence[Agent],
    now: int,
    config: BalancerConfig,
    rng: random.Random,
    saturation: Saturation,
) -> DecisionInputs:
    """What the decision reads: the snapshot (or the caller's candidates) and the options.

    The store's index is passed on for registered agents only (a shared store's index
    is its replica's copy; other replicas may move the loads before the commit, which
    re-ranks the contenders on the live ones). ``saturation`` is ``config``'s, built
    once by the balancer.
    """
    binding = state.binding
    if binding is not None and now - binding.last_used_ms >= config.session_ttl_s * 1000:
        binding = None  # idle past the TTL: the session binds anew
    # Every field, in order, through tuple.__new__: the NamedTuple's generated __new__
    # is a Python call, as costly as a tree descent, on every selection.
    return tuple.__new__(
        DecisionInputs,
        (
            candidates or state.agents.values(),
            state.stats,
            state.weights,
            state.ejections,
            state.strategy,
            state.sequence,
            now,
            rng,
            config.choice_count,
            config.peak_ewma,
            config.balance_factor,
            binding,
            config.slow_start_window_s * 1000,
            config.slow_start_min_share,
            None if candidates else state.pool,
            config.ewma_decay_s * 1000,
            state.out,
            _reports(state, now, config, saturation),
            saturation,
            config.refuse_when_saturated,
            config.prefer_resident,
        ),
    )


def contenders(decision: Decision, reports: Mapping[str, ReceivedReport]) -> tuple[Contender, ...]:
    """What a shared store may re-rank at commit: the compared agents with their load ranks.

    A rule that does not rank by load commits its choice as made; the store still
    checks its room. One that compared more than ``RERANK_LIMIT`` (a full scan) has its
    choice and the others it ranked lowest re-ranked (``strategies.base.leaders``). The
    store re-ranks on its live lease counts, which do not hold what an agent reported
    beyond them (``reports.ReceivedReport.unseen``): that load travels in the rank's
    offset, ``per_request`` for each request.
    """
    if not decision.compared:
        agent = decision.choice.agent
        return (Contender(agent.id, agent.max_connections),)
    found = []
    for candidate, rank in leaders(decision.compared, decision.choice, RERANK_LIMIT):
        agent = candidate.agent
        received = reports.get(agent.id)
        if received is not None and received.unseen:
            rank = rank._replace(offset=rank.offset + rank.per_request * received.unseen)
        found.append(Contender(agent.id, agent.max_connections, *rank))
    return tuple(found)


def _reports(
    state: PickState, now: int, config: BalancerConfig, saturation: Saturation
) -> Mapping[str, ReceivedReport]:
    """The fresh reports that can change the decision (``reports.fresh``).

    None is walked when the newest report is already stale (``reports_newest_ms``).
    """
    staleness_ms = config.report_staleness_s * 1000
    newest = state.reports_newest_ms
    if not state.reports or (newest and now - newest >= staleness_ms):
        return _NO_REPORTS
    return fresh(state.reports, now, staleness_ms, saturation, config.prefer_resident)
