"""The decision from the store's index, when every agent meeting the task is a candidate.

When no member of the task's pool (``store.pool.Pool``) is ejected, none is at
``max_connections`` and none is out by health, the availability and room steps leave
every member in, in registration order: the candidates a scan would build are exactly
the pool's members, less those bounded exploration holds back, which the pool keeps
apart as its ``options`` (a subset pool, in the same order and scale, rebuilt only when
the members held back change). The remaining steps then read the pools instead of the
candidates: the session's agent by its position, the stickiness bound from the whole
pool's sums, and the strategy through ``choose_from_pool`` over the options, which
builds candidates only for the members it compares (two drawn by capacity, or for a
full scan by expected time the one the pool's ``MinTree`` holds lowest). So a decision
costs O(log n) instead of O(n) for every strategy but capability-match on a GPU
task, whose load bound compares every member, and latency-based set to rank them all
(``choice_count`` 0: its ranks fade with time, so none can be kept).

The answer, the candidates compared and the random numbers drawn are the scan's, bit
for bit: the pool keeps its capacities in the sum trees a scan builds
(``strategies.sampling``), so a seeded run is the same with or without the index
(tests/core/test_indexed_picks.py). Both stores keep an index (the Redis store's over
its replica's copy of the records, ``store.redis.mirror``). Anything else takes the
scan: candidates passed by the caller, slow start (it re-draws among the others), a
pool with a member out (ejected, unhealthy or draining), fresh load reports, and an
empty pool (the scan names the requirement no agent meets).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from lb_service.decision import stickiness
from lb_service.decision.outcome import Decision, Refusal, conclude
from lb_service.model import AgentHealth, StrategyName, Task
from lb_service.strategies import STRATEGIES, PickContext

if TYPE_CHECKING:
    from lb_service.decision.pipeline import DecisionInputs
    from lb_service.store.pool import Pool


def every_member_counts(
    pool: Pool, ejections: Mapping[str, int], now_ms: int, out: Mapping[str, AgentHealth]
) -> bool:
    """Whether health, availability and room leave every member of a non-empty ``pool`` in.

    Bounded exploration may still hold members back: ``decide`` reads the ones it
    leaves in from ``Pool.options``.
    """
    return (
        len(pool) > 0
        and not pool.full
        and not (ejections and pool.holds_ejected(ejections, now_ms))
        and not (out and pool.holds_any(out))
    )


def decide(pool: Pool, inputs: DecisionInputs, task: Task, session_id: str) -> Decision | Refusal:
    """The pipeline's stickiness and strategy steps over every member of ``pool``."""
    strategy = STRATEGIES[inputs.strategy]
    peak_ewma = inputs.peak_ewma and inputs.strategy is StrategyName.LATENCY_BASED
    trees = pool.capacities()
    options = pool.options(inputs.balance_factor)
    binding = inputs.binding
    # Every member meets the task: the session's agent binds anew if it is not one.
    # A member bounded exploration holds back spills the request over, keeping the
    # binding. The load bound is over every member, as the scan's.
    position = option = None
    if binding is not None:
        position = pool.position(binding.agent_id)
        option = options.position(binding.agent_id)
    if option is not None:
        bound = options.candidate(option, peak_ewma)
        if stickiness.keeps(
            bound, pool.active, trees.total, inputs.balance_factor, options.shortest_expected_time
        ):
            return Decision(bound, sticky=True, bind=False)
    # tuple.__new__: the NamedTuple without its generated __new__ (a Python call).
    ctx = tuple.__new__(
        PickContext,
        (
            inputs.sequence,
            inputs.rng,
            inputs.choice_count_for(strategy),
            peak_ewma,
            inputs.balance_factor,
            trees.scale,
            inputs.now_ms,
            inputs.decay_ms,
        ),
    )
    choice, compared = strategy.choose_from_pool(options, task, ctx)
    return conclude(strategy, choice, compared, bool(session_id) and position is None)
