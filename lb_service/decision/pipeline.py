"""The decision as a pipeline of named steps, each a function of the one before.

    requirements -> health -> availability -> room -> reported load -> exploration ->
    stickiness -> residency and saturation -> strategy (sampling, ranking) -> slow start
    -> pick

1. **requirements** (``lb_service.requirements``): the agents that meet the task
   (model, VRAM, CPU or GPU); none is a refusal naming the requirement.
2. **health** (``health``): draining agents never take a pick (all draining is a
   refusal); unhealthy ones only when every other one is unhealthy too (panic mode).
   A session bound to an agent that is out binds anew.
   **candidates** (``candidates``): each with its load figures and its capacity.
3. **availability** (``availability``): agents out by outlier ejection, unless all are.
4. **room** (``room``): agents at ``max_connections`` are skipped; none left is a
   refusal ("all busy"). Then, when agents sent fresh load reports, their unseen
   requests count (``reported.with_unseen``). Then **exploration**: untrusted agents
   take one request at a time while trusted ones have room.
5. **stickiness** (``stickiness``): a session's agent answers if it is among those left,
   within the load and time bounds and not saturated by its report; otherwise it spills
   over and the binding stays, unless the agent can no longer serve the task, when the
   session binds anew.
6. **residency and saturation** (``reported.narrow``): with fresh reports, the agents
   holding the task's model within the load bound, the unsaturated ones among them
   first; with none, the unsaturated agents (all saturated: the least saturated, or a
   refusal when asked).
   **strategy** (``lb_service.strategies``): samples and ranks; none chosen (every
   weight 0) is a refusal.
7. **slow start** (``slow_start``): a warming agent may pass the pick on.

Every step returns values; a refusal is a ``Refusal`` the balancer raises at the edge.

When the store keeps an index (``PickState.pool``) and steps 3 and 4 would leave every
agent meeting the task in, the decision reads the task's pool instead of building a
candidate per agent (``indexed``), with the very same result and random draws.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from lb_service.decision import (
    availability,
    candidates,
    health,
    indexed,
    reported,
    room,
    slow_start,
    stickiness,
)
from lb_service.decision.outcome import Decision, Refusal, RefusalKind, conclude
from lb_service.errors import NoEligibleAgent
from lb_service.model import Agent, AgentHealth, StrategyName, Task
from lb_service.reports import ReceivedReport, Saturation
from lb_service.requirements import eligible, meets
from lb_service.store.base import AgentStats, Binding
from lb_service.strategies import STRATEGIES, Candidate, PickContext, Strategy
from lb_service.strategies.base import expected_time
from lb_service.strategies.sampling import capacity_trees

if TYPE_CHECKING:
    from lb_service.store.index import PoolLookup


class DecisionInputs(NamedTuple):
    """Everything one decision reads: the store's snapshot and the balancer's options.

    A NamedTuple: one is built per selection, in C.
    """

    agents: Collection[Agent]
    stats: Mapping[str, AgentStats]
    weights: Mapping[str, float]
    ejections: Mapping[str, int]
    strategy: StrategyName
    sequence: int
    now_ms: int
    rng: random.Random
    #: None: the strategy's own (``Strategy.default_choice_count``).
    choice_count: int | None
    peak_ewma: bool
    balance_factor: float
    #: The session's live binding (already checked against the session TTL), if any.
    binding: Binding | None = None
    slow_start_window_ms: float = 0.0
    slow_start_min_share: float = 1.0
    #: The store's index, when the decision may read it: ``agents`` are the registered
    #: ones (no candidates passed) and no other replica moves loads before the commit.
    pool: PoolLookup | None = None
    #: Time constant of the peak-EWMA estimate's decay (latency-based).
    decay_ms: float = 10_000.0
    #: Agents out by health (``PickState.out``): UNHEALTHY or DRAINING, by id.
    out: Mapping[str, AgentHealth] = {}
    #: Agents' fresh load reports, by id (``reports.fresh``; ``reported``).
    reports: Mapping[str, ReceivedReport] = {}
    #: When a fresh report makes an agent saturated, and what then if all are.
    saturation: Saturation = Saturation()
    refuse_saturated: bool = False
    #: Prefer agents that report the task's model loaded (``reported.narrow``).
    prefer_resident: bool = True

    def choice_count_for(self, strategy: Strategy) -> int:
        """The candidates ``strategy`` compares: as configured, else its own default."""
        count = self.choice_count
        return strategy.default_choice_count if count is None else count


def decide(inputs: DecisionInputs, task: Task, session_id: str) -> Decision | Refusal:
    """Run the pipeline (see the module docstring), from the task's pool when it may."""
    # Reports move loads the index does not hold: a decision that reads some scans.
    if inputs.pool is not None and inputs.slow_start_window_ms <= 0 and not inputs.reports:
        members = inputs.pool(task)
        if indexed.every_member_counts(members, inputs.ejections, inputs.now_ms, inputs.out):
            return indexed.decide(members, inputs, task, session_id)
    if not inputs.agents:
        return Refusal(RefusalKind.NO_AGENTS, "")
    try:
        meeting = eligible(inputs.agents, task)
    except NoEligibleAgent as error:
        return Refusal(RefusalKind.NO_ELIGIBLE_AGENT, str(error))
    fit = health.healthy(meeting, inputs.out)
    if isinstance(fit, Refusal):
        return fit
    matching, panic = fit
    strategy = STRATEGIES[inputs.strategy]
    peak_ewma = inputs.peak_ewma and inputs.strategy is StrategyName.LATENCY_BASED
    built, scale = candidates.build(matching, inputs.stats, inputs.weights, peak_ewma, task.model)
    pool = availability.available(built, inputs.ejections, inputs.now_ms)
    free = room.with_room(pool)
    if not free:
        return Refusal(
            RefusalKind.ALL_BUSY,
            f"all {len(pool)} eligible agent(s) are at max_connections; retry later",
        )
    reports = inputs.reports
    if reports:
        pool = reported.with_unseen(pool, reports)
        free = reported.with_unseen(free, reports)
    options = room.explore_bounded(free, inputs.balance_factor)
    bound = _bound(inputs.binding, options, task)
    total_active = sum(c.active for c in pool)
    total_capacity = capacity_trees(pool, scale).total
    if (
        bound is not None
        and stickiness.keeps(
            bound,
            total_active,
            total_capacity,
            inputs.balance_factor,
            lambda: min(map(expected_time, options)),
        )
        and not (
            reports
            and (
                reported.is_saturated(bound, reports, inputs.saturation)
                or (inputs.prefer_resident and reported.lost_model(bound, task.model, reports))
            )
        )
    ):
        return Decision(bound, sticky=True, bind=False, panic=panic)
    if reports:
        narrowed = reported.narrow(
            options,
            task.model if inputs.prefer_resident else "",
            reports,
            inputs.saturation,
            inputs.refuse_saturated,
            total_active,
            total_capacity,
            inputs.balance_factor,
        )
        if isinstance(narrowed, Refusal):
            return narrowed
        options = narrowed
    ctx = PickContext(
        inputs.sequence,
        inputs.rng,
        inputs.choice_count_for(strategy),
        peak_ewma,
        inputs.balance_factor,
        scale,
        inputs.now_ms,
        inputs.decay_ms,
    )
    choice, compared = strategy.choose(options, task, ctx)
    if choice is not None and inputs.slow_start_window_ms > 0:
        others = slow_start.ramp(
            choice,
            options,
            inputs.stats,
            inputs.now_ms,
            inputs.slow_start_window_ms,
            inputs.slow_start_min_share,
            inputs.rng,
        )
        if others:
            again, compared_again = strategy.choose(others, task, ctx)
            if again is not None:
                choice, compared = again, compared_again
    # A session whose agent is over its bound, full or ejected spills over and keeps its
    # binding; one with no binding, or whose agent left, cannot serve the task or is out
    # by health (unhealthy or draining), binds anew.
    bind = bool(session_id) and (
        inputs.binding is None or not _serves(inputs.binding.agent_id, matching)
    )
    return conclude(strategy, choice, compared, bind, panic)


def _bound(binding: Binding | None, options: Sequence[Candidate], task: Task) -> Candidate | None:
    """The session's agent as a candidate, if it is among the options left."""
    if binding is None:
        return None
    for candidate in options:
        if candidate.agent.id == binding.agent_id:
            return candidate if meets(candidate.agent, task) else None
    return None


def _serves(agent_id: str, matching: Sequence[Agent]) -> bool:
    return any(agent.id == agent_id for agent in matching)
