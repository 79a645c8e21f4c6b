"""Latency-based: the agent with the lowest latency cost."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from lb_service.model import StrategyName, Task
from lb_service.strategies.base import (
    Candidate,
    IndexedPool,
    LoadRank,
    PickContext,
    Ranked,
    lowest_by_load,
)
from lb_service.strategies.sampling import sample_by_capacity, sample_pool


def _average(candidate: Candidate) -> LoadRank:
    # The plain moving average; an agent with no sample ranks before all others.
    if candidate.avg_latency_ms is None:
        return LoadRank(0.0, 0.0)
    return LoadRank(1.0, 0.0, candidate.avg_latency_ms)


def _peak_ewma(candidate: Candidate, ctx: PickContext) -> LoadRank:
    # The expected time a new request takes: at least the agent's latency (the
    # peak-EWMA estimate, faded as below), and once requests queue, the time to drain
    # them plus this one, (active + 1) / capacity. Finagle's estimate x (active + 1)
    # treats every agent as one server, so a 4-slot GPU would look four times as loaded
    # as it is. An agent with no sample ranks first, by its open requests (offset -1:
    # (active + 1) - 1); the room step keeps such agents to one request in flight while
    # measured agents can take the request, so measuring a new agent never sends it all
    # the traffic.
    latency = candidate.avg_latency_ms
    if latency is None:
        return LoadRank(0.0, 1.0, -1.0)
    if not candidate.trusted:
        # Capacity still guessed: it has no unit to compare with a latency in.
        return LoadRank(1.0, latency)
    capacity = candidate.capacity
    # The agent's latency is of its usual mix; the task's model may take longer or
    # shorter there (lb_service.model_cost).
    floor = candidate.service_factor * _faded(latency, candidate, capacity, ctx)
    return LoadRank(1.0, 1000.0 / capacity, floor=floor)


def _faded(latency: float, candidate: Candidate, capacity: float, ctx: PickContext) -> float:
    # The estimate fades with time, not only with new samples, towards the agent's
    # service time by its capacity (slots / capacity), over the peak-EWMA time constant.
    # LLM service times are heavy-tailed: one long request peaks the estimate of an
    # agent that is as fast as ever, and an estimate that waited for a faster sample
    # would keep that agent out of every comparison, so it would never get one (on eight
    # equal hosts one of them drew no traffic for minutes). Fading towards what the
    # capacity says, not towards zero, keeps a slow host looking slow meanwhile.
    service = 1000.0 * candidate.slot_count / capacity
    age = ctx.now_ms - candidate.latency_at_ms
    if age <= 0 or ctx.decay_ms <= 0:
        return latency
    return service + (latency - service) * math.exp(-age / ctx.decay_ms)


def _ranking(ctx: PickContext) -> Callable[[Candidate], LoadRank]:
    if ctx.peak_ewma:
        return lambda candidate: _peak_ewma(candidate, ctx)
    return _average


class LatencyBased:
    """Lowest latency cost among ``choice_count`` drawn by capacity (all when 0); ties rotate.

    The cost is the expected time of a new request, the larger of the peak-EWMA
    estimate and the time to drain the agent's requests plus one at its capacity, when
    ``ctx.peak_ewma`` is set (the default; see ``lb_service.store.feedback``), else the
    plain moving average.
    """

    name = StrategyName.LATENCY_BASED
    #: Two drawn by capacity: latency estimates lag, and two choices do not herd on them.
    default_choice_count = 2

    def choose(
        self, candidates: Sequence[Candidate], task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """Return the cheapest of the drawn candidates, and the drawn ones."""
        drawn = sample_by_capacity(candidates, ctx)
        return lowest_by_load(drawn, _ranking(ctx), ctx.sequence)

    def choose_from_pool(
        self, pool: IndexedPool, task: Task, ctx: PickContext
    ) -> tuple[Candidate | None, Ranked]:
        """``choose`` over the pool's members, drawing from its trees (O(log n) a draw)."""
        drawn = sample_pool(pool, ctx)
        return lowest_by_load(drawn, _ranking(ctx), ctx.sequence)

    def load_rank(self, candidate: Candidate, task: Task, ctx: PickContext) -> LoadRank:
        """The peak-EWMA cost, or the moving average."""
        return _ranking(ctx)(candidate)
