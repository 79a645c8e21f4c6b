"""Model cost: how much longer one model's requests take than the agent's usual, per agent.

An agent's capacity (``lb_service.capacity``) is learned in completions per second of
slot-busy time, whatever it was asked to serve. On a fleet where agents serve different
model mixes that figure means different things: a CPU host that mostly answers
80 ms embedding requests completes many of them a second and looks fast, yet a 3B
chat request takes it seconds. Ranked by the capacity alone, that host draws chat
requests as soon as the big GPU holds a short queue, and those requests make the tail.

So each agent also keeps, per model, the typical latency of that model's successful
requests, and the typical latency of all of its successful requests. Their ratio is
the **service factor** of the model on the agent: how many of the agent's average
requests one request of this model is worth. A request's expected time on an agent
(``strategies.least_connections``) is then its own service time, the factor times the
agent's mean service time ``slots / capacity``, plus the wait for a slot when all are
busy, ``(active + 1 - slots) / capacity``.

Both figures are means of the logarithm of the latency (geometric means): LLM request
lengths are heavy-tailed (p99 tens of times the median), and one huge request must not
swing the ratio; queueing inside the agent inflates both alike, so it cancels. Each is
a running mean over the first samples, then a moving average over about
``WINDOW`` samples. A model is trusted after ``TRUST_SAMPLES`` successes on the agent;
before, and for a request with no model, the factor is 1 (the agent's average), so a
model new to an agent is explored like any request and then learned. At most
``MAX_MODELS`` models are kept per agent; a new one replaces the one sampled least
recently.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the stores import this module: no import of theirs at run time
    from lb_service.store.base import AgentStats

#: Successes of a model on an agent before its factor is used.
TRUST_SAMPLES = 3
#: Samples the moving averages mostly remember.
WINDOW = 32
#: Models remembered per agent.
MAX_MODELS = 32
#: Latencies under this are taken as this (a log of 0 is not a number).
_FLOOR_MS = 1.0


def _mean(current: float | None, samples: int, value: float) -> float:
    """A running mean for the first ``WINDOW`` samples, then a moving average."""
    if current is None:
        return value
    return current + (value - current) / min(samples + 1, WINDOW)


def observe(stats: AgentStats, model: str, latency_ms: float) -> AgentStats:
    """Fold one successful request's latency into the agent's and the model's means."""
    sample = math.log(max(latency_ms, _FLOOR_MS))
    overall = _mean(stats.log_latency, stats.log_samples, sample)
    models = stats.model_latency
    if model:
        kept = [entry for entry in models if entry[0] != model]
        previous = next((entry for entry in models if entry[0] == model), None)
        if previous is None:
            entry = (model, sample, 1)
            if len(kept) >= MAX_MODELS:
                kept = kept[1:]
        else:
            entry = (model, _mean(previous[1], previous[2], sample), previous[2] + 1)
        # Most recently sampled last: the first is the one a new model replaces.
        models = (*kept, entry)
    return replace(
        stats, log_latency=overall, log_samples=stats.log_samples + 1, model_latency=models
    )


def service_factor(stats: AgentStats, model: str) -> float:
    """How many of the agent's average requests one request of ``model`` is worth (see above)."""
    if not model or stats.log_latency is None:
        return 1.0
    for name, mean, samples in stats.model_latency:
        if name == model:
            if samples < TRUST_SAMPLES:
                return 1.0
            return math.exp(mean - stats.log_latency)
    return 1.0
