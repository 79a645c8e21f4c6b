"""Capacity: how much work an agent can take, guessed from its hardware, then learned.

Load is weighed, not counted: one request on a one-slot CPU host is a full load, one on
a four-slot 80 GB GPU is a quarter of one. The load-ranked strategies rank by a new
request's **expected time** (``strategies.base.expected_time_rank``): with a slot free
the request is served at once, in its service time on the agent (the agent's mean,
``slots / capacity``, times its model's cost there, ``lb_service.model_cost``); with its
slots full it also waits ``(active + 1 - slots) / capacity`` for the queue ahead to
drain. That is shortest-expected-delay routing; with one slot and one model it is
Envoy's weighted least request (weight / (active + 1)) with the weight measured instead
of configured. The stickiness bound weighs open requests by capacity too (``within_bound``).

**Learned capacity** is completions per unit of *slot-busy time*: the service sees every
lease, so it knows for each agent how many of its parallel slots were in use and for
how long, and how many requests it finished meanwhile. A second with ``k`` of ``slots``
in use counts ``min(k, slots) / slots``. The ratio is the rate the agent completes
requests with all its slots working, in requests per second, whatever the load it was
given. (Counting plain busy time, "at least one request open", measures a multi-slot
agent's offered load instead of its capacity when it is not saturated: the estimate
then follows the traffic sent, so an agent that drew little traffic looks slow and
draws less; in the simulator one 24 GB host of four was starved that way and the p99
doubled.) Unlike an estimate from latency and concurrency (Little's law), it does not
lag a growing queue. Both sums decay per completion (weight ``1 - 1/CAPACITY_WINDOW``
for the older ones), so the estimate follows the last few hundred requests, and an idle
agent keeps its estimate. The window is long because LLM service times are
heavy-tailed: a mean over 32 requests whose p99 is 20x their median is off by a third
either way, and the ranking then mistakes which of two hosts is faster. A slowed agent
is still left soon: its queue grows at once, and the expected-time rank counts it. A
lease that expired tells nothing about the agent (its dispatcher may have crashed), so
the busy time gathered since the last completion is dropped rather than charged to it.

**The slot count** is the agent's declared ``parallel_slots`` (Ollama's
``OLLAMA_NUM_PARALLEL``, vLLM's ``max_num_seqs``), else learned from the order requests
end in. An agent serves its queue first in, first out: a request in service has every
request that came before it in service too, so when a request ends while ``k`` leases
opened before it on the same agent are still open, the agent has at least ``k + 1``
slots. With heavy-tailed service times a short request passes long ones all the time,
so a busy agent shows its slots soon; one that never serves two requests at once never
passes one, and counts one slot. The learned figure is ``1 +`` the deepest overtake
within the last ``CAPACITY_WINDOW`` completions (``learned_slots``): an agent that is
seldom busy may show fewer slots than it has, which only makes its queue look longer
than it is until traffic shows more. A lease a dispatcher lost stays open until it
expires and makes every later end look like an overtake, one slot too many, which
the phantom request it adds to the active count offsets. Until an agent is trusted,
the ranking counts the guess (4 on a GPU, 1 on a CPU-only host, at most
``max_connections``), as the hardware guess of its capacity does. Two things this
does not do: learn slots from completions per concurrency level (a fit of
``min(k, slots) x rate`` was tried; heavy-tailed service times bias it, as the last
request left at level 1 is usually a long one, so throughput seems to climb past the
true slot count), and take ``max_connections`` as the slot count (it is a hard cap:
requests past it are refused, not queued). On the uneven fleets the simulator was run
on, learned slots did as well as declared ones or better (see the README).

**Ranking is optimistic about what it knows least** (``ranked_capacity``): it credits
an estimate resting on ``n`` decayed completions with ``1 + OPTIMISM / sqrt(n)`` times
its value, the width of its uncertainty (an upper confidence bound). Without it, an
agent whose first requests happened to be long looked slow, drew no traffic, and kept
the estimate: in the simulator a 2-slot L4 sat at 0.24x its true capacity for the last
1,000 s of a run. With it, such an agent still draws a request now and then, and its
estimate recovers; a well-measured agent is credited a few per cent. On seven uneven
fleets at 60% and 85% (12 pairs, seeds 1-3, 36 runs) the default's p99 over the
oracle's fell from a mean of 1.23 to 1.20 (25 runs better, 11 worse); neither the long
window nor the optimism alone gained anything.

**Before it is trusted** (fewer than ``TRUST_COMPLETIONS`` completions: one huge first
request must not freeze an agent out), an agent's capacity comes from its hardware:
parallel slots (as above: declared, else 4 on a GPU and 1 on a CPU-only host, Ollama's
defaults, at most ``max_connections``) times a per-slot speed (a GPU counts sqrt(VRAM / 24 GB), at
least 0.5; a CPU-only host 0.1). The guess is scaled to the learned figures of the
trusted agents it is compared with, so the two kinds mix in one ranking; with none
trusted, the hardware figures are compared among themselves. Like a learned figure,
it is ranked optimistically: credited ``UNTRUSTED_CREDIT`` (2) times, as an estimate
resting on one completion would be. A guess that undersells an agent otherwise keeps
it from ever being measured: on a fleet of one A100, two A10s and sixteen CPU hosts at
85% load the CPU hosts' guess was half their true speed, none of them drew three
requests in 1,200 s, and the A100 queued 80 deep (the default's p99 3.3x the oracle's,
seeds 1-10; with the credit, 2.2x, against 2.1x for a policy that knows every agent's
true speed). Where the slow hosts are not needed the credit costs a few measured
requests each (on the shipped three-tier fleet at 60% load the mean p99 over the
oracle's went from 1.13x to 1.19x).

**Decisions read these figures with the agent's peers' added** (``lb_service.peers``):
agents of one class pool what they learned as a prior worth at most 16 completions, so
an agent whose class has completed three requests is trusted at once, and one measured
on a few requests ranks near its class. The functions here see one agent's figures;
``learned_rate`` and ``ranked_rate`` take them with the prior added.

**Exploration is bounded**: an untrusted agent takes at most ``EXPLORE_LIMIT`` request
in flight while a trusted agent with room can take the request instead, so a cold
agent is measured without absorbing the traffic; when the trusted agents would make
the request take over ``balance_factor`` times longer than its uncredited guess, up to
its guessed slots (``decision.room.explore_bounded``).

Slot-busy bookkeeping (``accrue``) runs whenever an agent's active count changes; the
fold into the estimate (``completed``, ``expired``) when a lease closes. Every store
applies both through these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from lb_service.model import Agent
from lb_service.sumtree import tree_sum

if TYPE_CHECKING:  # the stores import this module: no import of theirs at run time
    from lb_service.store.base import AgentStats

#: Completions before the learned figure replaces the hardware guess.
TRUST_COMPLETIONS = 3
#: Completions the decayed sums mostly remember (older ones weigh 1 - 1/window each).
CAPACITY_WINDOW = 512
#: How many standard errors the ranking credits an estimate with (see the module docstring).
OPTIMISM = 1.0
#: What an untrusted agent's scaled guess is credited with: ``ranked_capacity``'s
#: optimism for an estimate resting on one completion.
UNTRUSTED_CREDIT = 1.0 + OPTIMISM
#: Requests an untrusted agent holds at once while a trusted one has room.
EXPLORE_LIMIT = 1
#: The most slots learned from overtakes (declared slots may go up to validation's limit).
MAX_LEARNED_SLOTS = 64
#: Values the scale of hardware guesses takes per doubling (``scale_of``).
SCALE_STEPS = 16
#: Per-slot speed guesses: a CPU-only host, and the least a GPU counts.
_CPU_SPEED = 0.1
_MIN_GPU_SPEED = 0.5
#: A completion counts at least this much busy time (a start and end in the same ms).
_MIN_BUSY_MS = 1.0
_KEEP = 1.0 - 1.0 / CAPACITY_WINDOW


def release_limit(slots: int) -> int:
    """Requests an untrusted agent may hold while exploration releases it: its slots.

    At least ``EXPLORE_LIMIT``; ``slots`` is the count the rank uses for it (declared,
    else guessed), so a released agent never queues a request on a guess.
    """
    return max(EXPLORE_LIMIT, slots)


def releases(kept_shortest: float, released_shortest: float, factor: float) -> bool:
    """Whether exploration releases the held-back agents (``decision.room.explore_bounded``).

    ``kept_shortest`` is the shortest expected time without them, ``released_shortest``
    with those of them below ``release_limit``: released while the first is over
    ``factor`` x the second uncredited (``UNTRUSTED_CREDIT``). With ``factor`` >= 1 the
    second is then a held-back agent's.
    """
    return kept_shortest > factor * UNTRUSTED_CREDIT * released_shortest


def parallel_slots(agent: Agent) -> int:
    """Requests the agent serves at once: as declared, else guessed, at most ``max_connections``.

    The guess is Ollama's default: 4 on a GPU, 1 on a CPU-only host. ``max_connections``
    only caps it: a limit of 100 says nothing of how many requests run at full speed,
    and taken as the slot count it made every agent look idle at any realistic load,
    so the ranking fell to the service-time estimates alone and an agent whose estimate
    was once pessimistic drew no traffic again while the others had "free slots".
    """
    if agent.parallel_slots:
        return agent.parallel_slots
    guess = 4 if agent.hardware.has_gpu else 1
    return min(guess, agent.max_connections) if agent.max_connections else guess


def stamp_slots(stats: AgentStats, declared: int, now_ms: int) -> AgentStats:
    """The record as its agent registers with ``declared`` slots (0: learn them).

    Declared slots replace the figure at once; without a declaration the figure is
    learned, and a declaration withdrawn stands until the next completion replaces it
    by what the agent has shown (the evidence is kept while declared too).
    """
    learn = declared == 0
    slots = declared or stats.slots
    if slots == stats.slots and learn == stats.learn_slots:
        return stats
    # Busy time so far counts against the old slot count.
    return replace(accrue(stats, now_ms), slots=slots, learn_slots=learn)


def hardware_capacity(agent: Agent) -> float:
    """The hardware guess: parallel slots x per-slot speed (relative units, see above)."""
    hardware = agent.hardware
    if hardware.has_gpu:
        speed = max(_MIN_GPU_SPEED, math.sqrt(hardware.vram_gb / 24))
    else:
        speed = _CPU_SPEED
    return parallel_slots(agent) * speed


def ranked_slots(agent: Agent, stats: AgentStats, trusted: bool) -> int:
    """The slot count decisions rank the agent by: learned once trusted, else the guess.

    Declared slots are stamped into the record at registration, so for an agent that
    declares them both are the declaration.
    """
    return slots_ranked(parallel_slots(agent), stats, trusted)


def slots_ranked(guess: int, stats: AgentStats, trusted: bool) -> int:
    """``ranked_slots`` given the agent's ``parallel_slots`` (an index keeps it per member)."""
    return stats.slots if trusted else guess


def learned_slots(overtaken_at: tuple[int, ...], completions: int) -> int:
    """1 + the deepest overtake seen within the last ``CAPACITY_WINDOW`` completions."""
    return 1 + sum(completions - at < CAPACITY_WINDOW for at in overtaken_at)


def learned_capacity(stats: AgentStats) -> float | None:
    """Requests per second the agent completes while busy; None until it is trusted."""
    return learned_rate(stats.completions, stats.cap_done, stats.cap_busy_ms)


def learned_rate(completions: int, cap_done: float, cap_busy_ms: float) -> float | None:
    """``learned_capacity`` from the record's three figures (``lb_service.peers`` adds to them)."""
    if completions < TRUST_COMPLETIONS or cap_done <= 0:
        return None
    return 1000.0 * cap_done / max(cap_busy_ms, cap_done * _MIN_BUSY_MS)


def ranked_capacity(stats: AgentStats) -> float | None:
    """The capacity decisions rank by: learned, credited with its uncertainty; None untrusted.

    ``learned x (1 + OPTIMISM / sqrt(n))`` with ``n`` the decayed completions it rests
    on, so an agent measured on a few requests is not frozen out by them (see above).
    """
    return ranked_rate(stats.completions, stats.cap_done, stats.cap_busy_ms)


def ranked_rate(completions: int, cap_done: float, cap_busy_ms: float) -> float | None:
    """``ranked_capacity`` from the record's three figures (``lb_service.peers`` adds to them)."""
    learned = learned_rate(completions, cap_done, cap_busy_ms)
    if learned is None:
        return None
    return learned * (1.0 + OPTIMISM / math.sqrt(cap_done))


def accrue(stats: AgentStats, now_ms: int) -> AgentStats:
    """Bookkeeping before the active count changes: add the slot-busy time since the last change.

    Time counts in proportion to the share of the agent's slots in use, so a 4-slot
    agent holding one request is a quarter busy (see the module docstring).
    """
    busy = stats.busy_total_ms
    if stats.active > 0 and now_ms > stats.activity_at_ms:
        busy += (now_ms - stats.activity_at_ms) * min(stats.active, stats.slots) / stats.slots
    return replace(stats, busy_total_ms=busy, activity_at_ms=now_ms)


def completed(stats: AgentStats, overtook: int = 0) -> AgentStats:
    """Fold one completion and the busy time since the last fold into the estimate.

    ``overtook`` is how many leases opened before this one on the agent were still open
    when it ended: evidence of at least ``overtook + 1`` slots (see the module docstring).
    """
    gathered = max(0.0, stats.busy_total_ms - stats.cap_mark_ms)
    count = stats.completions + 1
    overtaken_at = stats.overtaken_at
    depth = min(overtook, MAX_LEARNED_SLOTS - 1)
    if depth:
        overtaken_at = (count,) * depth + overtaken_at[depth:]
    slots = learned_slots(overtaken_at, count) if stats.learn_slots else stats.slots
    return replace(
        stats,
        slots=slots,
        overtaken_at=overtaken_at,
        completions=count,
        cap_done=stats.cap_done * _KEEP + 1.0,
        cap_busy_ms=stats.cap_busy_ms * _KEEP + gathered,
        cap_mark_ms=stats.busy_total_ms,
    )


def expired(stats: AgentStats) -> AgentStats:
    """An expired lease: drop the busy time gathered since the last fold (see above)."""
    return replace(stats, cap_mark_ms=stats.busy_total_ms)


def resolve(priors: Sequence[float], learned: Sequence[float | None]) -> list[float]:
    """Capacities for a set of agents: learned where trusted, else the scaled hardware guess.

    The guess of an untrusted agent is multiplied by ``scale``, so it is in the same
    units as the learned figures.
    """
    factor = scale(priors, learned)
    return [
        figure if figure is not None else prior * factor
        for prior, figure in zip(priors, learned, strict=True)
    ]


def scale(priors: Sequence[float], learned: Sequence[float | None]) -> float:
    """What untrusted guesses are multiplied by: learned over guessed totals of the trusted.

    Times ``UNTRUSTED_CREDIT`` (the learned over guessed ratio is 1 when none is trusted).

    Both totals are ``sumtree`` sums over the agents in order, so the store's index,
    which keeps them as sum trees, reaches the very same figure without a scan.
    """
    return scale_of(
        tree_sum(0.0 if figure is None else figure for figure in learned),
        tree_sum(
            0.0 if figure is None else prior for prior, figure in zip(priors, learned, strict=True)
        ),
    )


def scale_of(learned_total: float, guessed_total: float) -> float:
    """``scale`` from its two totals: their ratio to the nearest of ``SCALE_STEPS`` per doubling.

    Rounded because every untrusted agent's capacity is its guess times the scale: a
    scale that followed each completion of a trusted agent would move every untrusted
    agent's rank with it, and the store's index would re-rank the whole pool (O(n)) on
    every completion while any agent is untrusted. Rounded, it moves a few times as the
    learned figures settle. The guess it scales is far coarser than the rounding
    (within ``2 ** (1 / (2 x SCALE_STEPS))``, 2%).
    """
    if guessed_total <= 0 or learned_total <= 0:
        return UNTRUSTED_CREDIT
    return UNTRUSTED_CREDIT * rounded(learned_total / guessed_total, SCALE_STEPS)


def rounded(value: float, steps: int) -> float:
    """``value`` (> 0) to the nearest of ``steps`` values per doubling (a ratio's rounding).

    ``scale_of`` and the peers' prior (``lb_service.peers``) round this way, so a figure
    that drifts a little moves what depends on it only when it crosses a step.
    """
    return math.exp2(round(math.log2(value) * steps) / steps)


def relative_load(active: int, capacity: float) -> float:
    """The time to drain the agent's requests plus one more, in units of 1 / capacity."""
    return (active + 1) / capacity if capacity > 0 else math.inf


def within_bound(
    active: int, capacity: float, total_active: int, total_capacity: float, factor: float
) -> bool:
    """Whether one more request keeps the agent within ``factor`` x its fair share of the load.

    Consistent hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, 2016;
    HAProxy's ``hash-balance-factor``), weighted by capacity: with the new request the
    pool holds ``total_active + 1``; the agent's fair share of them is in proportion to
    its capacity, and it may hold ``ceil(factor x share)`` of them, so at least one.
    The bound is on the pooled load (all requests over all capacity), not on an average
    of per-agent loads, which a few slow hosts would dominate.
    """
    if total_capacity <= 0:
        return True
    share = (total_active + 1) * capacity / total_capacity
    return active + 1 <= math.ceil(factor * share - 1e-9)
