"""Model cost: how much longer one model's requests take than the agent's usual, per agent.

An agent's capacity (``lb_service.capacity``) is learned in completions per second of
slot-busy time, whatever it was asked to serve. On a fleet where agents serve different
model mixes that figure means different things: a CPU host that mostly answers
80 ms embedding requests completes many of them a second and looks fast, yet a 3B
chat request takes it seconds. Ranked by the capacity alone, that host draws chat
requests as soon as the big GPU holds a short queue, and those requests make the tail.

So each agent also keeps, per model, the typical latency of that model's successful
requests and the model's share of the agent's recent successes. A request's expected
time on an agent (``strategies.base.expected_time_rank``) is its own service time plus,
when every slot is busy, the wait for one, ``(active + 1 - slots) / capacity``. Its own
service time is the agent's mean service time ``slots / capacity`` times the model's
**service factor**: the model's typical latency over the agent's mean one, the mean of
its models' typical latencies weighed by their shares.

A model's typical latency is the mean of the logarithm of its latencies (a geometric
mean): LLM request lengths are heavy-tailed (p99 tens of times the median) and one
huge request must not swing it. Where every model's latencies have the same shape on
the agent, each arithmetic mean is its geometric mean times one constant, so the
ratio of arithmetic means that the factor stands for is the ratio above.

**Only requests that found a slot free teach it** (``lesson``). A latency includes the
wait for a slot, which adds the same time to every model's requests, whatever their
size: on a busy agent it swamps the service times and pulls every factor towards 1.
In the simulator an H100 queueing a few seconds learned an 80 ms embedding as 1.9-5.4 s,
so embeddings went to small hosts, and an L4 serving embeddings and 8B chat learned
the chat at a fifth of its cost. A request opened while fewer leases than the agent's
slots were open started at once (agents serve first in, first out), so its latency is
its service time; one opened behind a full set of slots teaches nothing here (it still
counts for the capacity estimate, which is what waits are measured against). The slot
count is the record's (declared, else learned: ``capacity``), so while an agent has
shown fewer slots than it has, some requests that did not wait are passed over.
On three uneven fleets from outside the repository at 85% load (seeds 1-10) this took
the default's mean p99 over the oracle's from 1.79x to 1.40x on one with embeddings on
every tier and from 1.81x to 1.76x on one of consumer GPUs; the shipped fleets moved
within seed noise. Each typical
latency is a running mean over the first samples, then a moving average over about
``WINDOW``; shares decay as the capacity estimate does (``capacity.CAPACITY_WINDOW``).
A model is trusted after ``TRUST_SAMPLES`` successes on the agent; before, and for a
request that names no model, the factor is 1 (the agent's average), so a model new to
an agent is explored like any request and then learned. Decisions read the entries with
the agent's peers' added (``lb_service.peers``: up to 16 samples of each model at its
class's typical latency, ``factor_of``), so a model its twins serve often is priced on an
agent that rarely gets it. At most ``MAX_MODELS`` models
are kept per agent; a new one replaces the one sampled least recently. Requests that
name no model are kept as the model ``""``: they are part of the agent's mix.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from lb_service.capacity import CAPACITY_WINDOW

if TYPE_CHECKING:  # the stores import this module: no import of theirs at run time
    from lb_service.store.base import AgentStats

#: Successes of a model on an agent before its factor is used.
TRUST_SAMPLES = 3
#: Samples a model's moving average mostly remembers.
WINDOW = 32
#: Models remembered per agent.
MAX_MODELS = 32
#: Latencies under this are taken as this (a log of 0 is not a number).
_FLOOR_MS = 1.0
#: Older successes' weight in the shares after each new one (as the capacity window).
_KEEP = 1.0 - 1.0 / CAPACITY_WINDOW


def lesson(stats: AgentStats, model: str) -> str | None:
    """What a lease opening now on the agent will teach: ``model``, or None if it must wait.

    ``stats`` is the agent's record before the lease opens: with every slot taken the
    request waits, and its latency is no measure of its model (see the module docstring).
    """
    return model if stats.active < stats.slots else None


def observe(stats: AgentStats, model: str, latency_ms: float) -> AgentStats:
    """Fold one successful request's latency into its model's typical latency and the shares."""
    sample = math.log(max(latency_ms, _FLOOR_MS))
    kept: list[tuple[str, float, int, float]] = []
    entry = (model, sample, 1, 1.0)
    for name, mean, samples, share in stats.model_latency:
        if name == model:
            step = 1.0 / min(samples + 1, WINDOW)
            entry = (model, mean + (sample - mean) * step, samples + 1, share * _KEEP + 1.0)
        else:
            kept.append((name, mean, samples, share * _KEEP))
    if len(kept) >= MAX_MODELS:
        kept = kept[1:]
    # Most recently sampled last: the first is the one a new model replaces.
    return replace(stats, model_latency=(*kept, entry))


def service_factor(stats: AgentStats, model: str) -> float:
    """How many of the agent's average requests one request of ``model`` is worth (see above)."""
    return factor_of(stats.model_latency, model)


def factor_of(entries: tuple[tuple[str, float, int, float], ...], model: str) -> float:
    """``service_factor`` from the record's model entries (``lb_service.peers`` adds to them)."""
    if not model:
        return 1.0
    # The model's own entry first: most candidates of most picks stop here, before any exp.
    mine = next((entry for entry in entries if entry[0] == model), None)
    if mine is None or mine[2] < TRUST_SAMPLES:
        return 1.0
    weighed = sum(share * math.exp(mean) for _, mean, _, share in entries)
    if weighed <= 0.0:
        return 1.0
    total = sum(share for *_, share in entries)
    return math.exp(mine[1]) * total / weighed
