"""Capacity: the hardware guess, the learned figure, and how load is weighed by it."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from lb_service.capacity import (
    CAPACITY_WINDOW,
    OPTIMISM,
    TRUST_COMPLETIONS,
    UNTRUSTED_CREDIT,
    hardware_capacity,
    learned_capacity,
    parallel_slots,
    ranked_capacity,
    relative_load,
    resolve,
    scale_of,
    stamp_slots,
    within_bound,
)
from lb_service.store.base import AgentStats
from lb_service.store.feedback import close_lease, fold_end, fold_expiry, open_lease
from tests.factories import FEEDBACK, agent


def run(stats: AgentStats, start_ms: int, end_ms: int, failed: bool = False) -> AgentStats:
    """One request on an otherwise idle agent, from start to end, as a store books it."""
    stats = open_lease(stats, start_ms)
    stats = close_lease(stats, end_ms)
    return fold_end(stats, True, end_ms - start_ms, failed, end_ms, FEEDBACK, 0, 1)


def test_hardware_guess_weighs_slots_and_gpu_memory() -> None:
    """A 4-slot 80 GB GPU outweighs a 4-slot 24 GB GPU, which outweighs a 1-slot CPU host."""
    big = hardware_capacity(agent("h100", vram_gb=80, gpu="H100"))
    small = hardware_capacity(agent("rtx", vram_gb=24, gpu="4090"))
    cpu = hardware_capacity(agent("cpu"))
    assert big > small > cpu
    assert small == 4.0
    assert cpu == 0.1
    # max_connections caps the guessed slots, and raises nothing.
    assert hardware_capacity(agent("rtx", vram_gb=24, gpu="4090", max_connections=2)) == 2.0
    assert hardware_capacity(agent("rtx", vram_gb=24, gpu="4090", max_connections=100)) == 4.0


@pytest.mark.parametrize(
    ("declared", "limit", "vram_gb", "slots"),
    [
        (8, 0, 80.0, 8),  # declared, over the GPU guess of 4
        (2, 0, 0.0, 2),  # declared, over the CPU guess of 1
        (1, 0, 80.0, 1),  # declared, under the GPU guess
        (2, 16, 24.0, 2),  # declared, over max_connections
        (0, 16, 24.0, 4),  # not declared: the GPU guess, a limit of 16 raises nothing
        (0, 2, 24.0, 2),  # not declared: the GPU guess, capped by max_connections
        (0, 100, 0.0, 1),  # not declared: the CPU guess under a limit of 100
        (0, 0, 24.0, 4),  # neither: the GPU guess
        (0, 0, 0.0, 1),  # neither: the CPU guess
    ],
)
def test_declared_parallel_slots_win_over_max_connections_and_the_guess(
    declared: int, limit: int, vram_gb: float, slots: int
) -> None:
    """The slot count is parallel_slots when declared, else the guess capped by max_connections."""
    host = agent(
        "a", vram_gb=vram_gb, gpu="GPU" if vram_gb else "", max_connections=limit,
        parallel_slots=declared,
    )  # fmt: skip
    assert parallel_slots(host) == slots
    per_slot = hardware_capacity(replace(host, parallel_slots=1, max_connections=0))
    assert hardware_capacity(host) == pytest.approx(slots * per_slot)


def test_capacity_is_completions_per_busy_second_once_trusted() -> None:
    """Three 500 ms requests back to back teach 2 requests/s; two are not trusted yet."""
    stats = AgentStats()
    for n in range(TRUST_COMPLETIONS):
        assert learned_capacity(stats) is None
        stats = run(stats, 1000 * n, 1000 * n + 500)
    assert learned_capacity(stats) == 2.0


def test_parallel_requests_count_busy_time_once() -> None:
    """Four 1 s requests served side by side make 4 requests/s, not 1."""
    stats = AgentStats()
    for _ in range(4):
        stats = open_lease(stats, 0)
    for _ in range(4):
        stats = fold_end(close_lease(stats, 1000), True, 1000, False, 1000, FEEDBACK, 0, 1)
    # Equal to 4/s but for the per-completion decay of the earlier folds.
    assert learned_capacity(stats) == pytest.approx(4.0, rel=0.06)


def test_idle_time_is_not_busy_time() -> None:
    """Long gaps between requests leave the estimate as it was."""
    stats = AgentStats()
    for n in range(5):
        stats = run(stats, 60_000 * n, 60_000 * n + 250)
    assert learned_capacity(stats) == 4.0


def test_failures_and_expiries_are_not_completions() -> None:
    """A failure or an expiry adds no completion and drops the busy time it covered."""
    stats = AgentStats()
    for n in range(3):
        stats = run(stats, 1000 * n, 1000 * n + 500)
    before = learned_capacity(stats)
    stats = run(stats, 5000, 5010, failed=True)  # failing fast must not look fast
    assert learned_capacity(stats) == before
    stats = fold_expiry(close_lease(open_lease(stats, 6000), 600_000))
    assert learned_capacity(stats) == before
    assert stats.failed_requests == 2


def test_estimate_follows_the_recent_requests() -> None:
    """After a slowdown the estimate moves most of the way to the new rate within 1,000 requests."""
    stats = AgentStats()
    for n in range(500):
        stats = run(stats, 1000 * n, 1000 * n + 100)  # 10/s
    for n in range(500, 1500):
        stats = run(stats, 1000 * n, 1000 * n + 1000)  # 1/s
    capacity = learned_capacity(stats)
    assert capacity is not None
    assert 1.0 < capacity < 1.5


def overtaking(stats: AgentStats, older: int, at_ms: int) -> AgentStats:
    """``older + 1`` requests opened at once, the youngest ending first, then the rest."""
    for _ in range(older + 1):
        stats = open_lease(stats, at_ms)
    for overtook in [older] + [0] * older:
        stats = close_lease(stats, at_ms + 100)
        stats = fold_end(stats, True, 100, False, at_ms + 100, FEEDBACK, 0, 1, "", overtook)
    return stats


def test_slots_are_the_deepest_overtake_of_the_recent_completions() -> None:
    """An end passing three older open leases shows 4 slots, forgotten after a window without."""
    stats = AgentStats()
    assert stats.slots == 1
    stats = overtaking(stats, 1, 0)
    assert stats.slots == 2
    stats = overtaking(stats, 3, 1000)  # completions 3 to 6, the 3rd overtaking three
    assert (stats.slots, stats.overtaken_at) == (4, (3, 3, 3))
    stats = overtaking(stats, 1, 2000)  # completions 7 and 8, the 7th overtaking one
    assert (stats.slots, stats.overtaken_at) == (4, (7, 3, 3))

    def until(completions: int) -> AgentStats:
        later = stats
        while later.completions < completions:
            at_ms = 1000 * later.completions
            later = run(later, at_ms, at_ms + 100)
        return later

    assert until(CAPACITY_WINDOW + 2).slots == 4
    assert until(CAPACITY_WINDOW + 3).slots == 2  # the 3-deep overtake is a window old
    assert until(CAPACITY_WINDOW + 6).slots == 2
    assert until(CAPACITY_WINDOW + 7).slots == 1


def test_declared_slots_stand_and_a_withdrawal_gives_way_at_the_next_completion() -> None:
    """Declared slots ignore the evidence, which is kept for when the declaration goes."""
    stats = stamp_slots(AgentStats(), 8, 0)
    assert (stats.slots, stats.learn_slots) == (8, False)
    stats = overtaking(stats, 2, 0)
    assert (stats.slots, stats.overtaken_at) == (8, (1, 1))
    stats = stamp_slots(stats, 0, 1000)
    assert (stats.slots, stats.learn_slots) == (8, True)
    stats = run(stats, 2000, 2100)
    assert stats.slots == 3


def test_ranking_credits_an_estimate_with_its_uncertainty() -> None:
    """Four completions are credited 1 + 1/2, a few hundred a few per cent; untrusted stays None."""
    stats = AgentStats()
    for n in range(TRUST_COMPLETIONS - 1):
        stats = run(stats, 1000 * n, 1000 * n + 500)
    assert ranked_capacity(stats) is None
    for n in range(TRUST_COMPLETIONS - 1, 4):
        stats = run(stats, 1000 * n, 1000 * n + 500)
    learned = learned_capacity(stats)
    assert learned is not None
    assert ranked_capacity(stats) == pytest.approx(
        learned * (1 + OPTIMISM / math.sqrt(stats.cap_done))
    )
    assert ranked_capacity(stats) == pytest.approx(learned * 1.5, rel=0.01)
    for n in range(4, 1000):
        stats = run(stats, 1000 * n, 1000 * n + 500)
    well_measured = ranked_capacity(stats)
    assert well_measured is not None
    assert 1.0 < well_measured / (learned_capacity(stats) or 1.0) < 1.06


def test_untrusted_guesses_are_scaled_to_learned_units_and_credited() -> None:
    """A guess of half a trusted agent's guess gets half its learned capacity, credited 2x."""
    assert UNTRUSTED_CREDIT == 2.0
    assert resolve([4.0, 2.0], [16.0, None]) == [16.0, 8.0 * UNTRUSTED_CREDIT]
    # None trusted: the guesses are compared among themselves (all credited alike).
    assert resolve([4.0, 2.0], [None, None]) == [4.0 * UNTRUSTED_CREDIT, 2.0 * UNTRUSTED_CREDIT]


def test_the_scale_is_rounded_so_small_moves_of_learned_figures_keep_it() -> None:
    """The scale is within 2% of learned over guessed (credited) and stays put while they drift."""
    assert scale_of(12.0, 4.0) == pytest.approx(3.0 * UNTRUSTED_CREDIT, rel=0.022)
    assert scale_of(12.0, 4.0) == scale_of(12.06, 4.0) == scale_of(11.94, 4.0)
    assert scale_of(12.0, 4.0) < scale_of(12.0 * 1.05, 4.0)
    assert scale_of(0.0, 0.0) == UNTRUSTED_CREDIT


def test_relative_load_weighs_requests_by_capacity() -> None:
    """Three requests on a 4/s agent weigh less than one on a 0.25/s agent."""
    assert relative_load(3, 4.0) == 1.0
    assert relative_load(1, 0.25) == 8.0
    assert relative_load(0, 0.0) == math.inf


def test_bound_allows_at_least_one_request_and_scales_with_capacity() -> None:
    """An idle agent always takes one; a busy one only its factor x capacity share."""
    # An idle small agent among big ones: share rounds up to one request.
    assert within_bound(0, 1.0, total_active=0, total_capacity=100.0, factor=2.0)
    assert not within_bound(1, 1.0, total_active=1, total_capacity=100.0, factor=2.0)
    # A quarter of the capacity; with the new request 20 are open, a share of 5:
    # factor 2 allows 10 on the agent, factor 3 allows 15.
    assert within_bound(9, 25.0, total_active=19, total_capacity=100.0, factor=2.0)
    assert not within_bound(10, 25.0, total_active=19, total_capacity=100.0, factor=2.0)
    assert within_bound(14, 25.0, total_active=19, total_capacity=100.0, factor=3.0)


def test_bookkeeping_counts_busy_time_only_while_a_lease_is_open() -> None:
    """Open at 0, close at 100, open at 1000, close at 1300: 400 ms busy."""
    stats = replace(AgentStats())
    stats = close_lease(open_lease(stats, 0), 100)
    stats = close_lease(open_lease(stats, 1000), 1300)
    assert (stats.busy_total_ms, stats.active, stats.total_requests) == (400, 0, 2)
