"""Timing helpers: median cost per call over repeats, with the iteration count calibrated."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Budget:
    """How long to measure: ``repeats`` runs of about ``repeat_s`` seconds each.

    The smoke test passes a tiny budget; ``make bench`` uses the default.
    """

    repeats: int = 7
    repeat_s: float = 0.03
    #: Fewest calls in one repeat, however slow a call is.
    min_calls: int = 3
    #: Times the core part measures each cell (keeping the best median).
    passes: int = 3


async def per_call_s(call: Callable[[], Awaitable[object]], budget: Budget) -> float:
    """Median seconds per ``await call()`` over ``budget.repeats`` timed runs.

    A first untimed run warms caches and sizes the runs; the median of several runs
    shrugs off a burst of noise from a neighbour on a shared machine.
    """
    calls = budget.min_calls
    while True:
        elapsed = await _run(call, calls)
        if elapsed >= budget.repeat_s / 4 or calls >= 1_000_000:
            break
        calls *= 4
    calls = max(budget.min_calls, round(calls * budget.repeat_s / max(elapsed, 1e-9)))
    return statistics.median([await _run(call, calls) / calls for _ in range(budget.repeats)])


async def _run(call: Callable[[], Awaitable[object]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return time.perf_counter() - started
