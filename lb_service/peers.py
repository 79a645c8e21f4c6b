"""Peers: what agents of the same class have learned, as a prior for each one's estimates.

An agent's capacity (``lb_service.capacity``) and its model costs (``lb_service.model_cost``)
are learned from its own completions, and LLM service times are heavy-tailed: a p99
twenty times the median makes a mean over a few dozen requests wrong by a third either
way. A slow host draws few requests, so its figures stay wrong for a whole run: in the
simulator sixteen identical CPU hosts ended a 1,200 s run at 0.54x to 1.76x their true
speed, and an A10 priced a 3B model at 3.3x its cost from five samples while its twin
priced it right. The agents misranked that way are the ones decisions get wrong.

Agents of one **class** (the same hardware, engine, declared slots, connection limit
and models) are the same machine serving the same work, so what one has learned is
evidence about the others. Each agent's figures are read with its class's pooled
figures added as a prior (a Bayesian estimate with a pseudo-count): its decayed
completions and slot-busy time gain ``k`` completions at the class's rate, and each of
its models' typical latencies gains ``k`` samples at the class's typical latency for
that model, with ``k`` at most ``PEER_WEIGHT``. So an agent measured on a few requests
ranks near its class, one measured on hundreds by its own figures (a degraded agent
still shows: its queue counts at once, and its own figures soon outweigh the prior),
and an agent that joins a class already measured is trusted at once at the class's
figures instead of being explored from a hardware guess. An agent alone in its class
reads its own figures only. The prior counts the agent's own figures too (one figure
per class, not one per member), and is only read: what a store folds and keeps is each
agent's own measurement, so the classes never feed back into it.

Each member counts at most ``model_cost.WINDOW`` completions (and samples of a model)
in its class's sums, at its own rate: the class's figure is its members', not that of
the one that served the most.

Measured with ``lb-service simulate`` (default p99 over the oracle's, mean over seeds
1-10) on five uneven fleets from outside the repository at 60% and 85% load: 1.41 ->
1.35 over the ten cells. In a throwaway version that pooled the figures at decision
time, the model costs and the capacity each gave about half of it (1.39 and 1.37
alone), and a prior of unbounded weight (every member's figures pooled in full) did as
well outside but left an agent slowed on purpose too late (``degrading``: 1.13 ->
1.47x) and followed unseen traffic worse (``bypass``: 1.04 -> 1.20x); weighed at most
``PEER_WEIGHT`` it did neither. The README gives the shipped scenarios' figures.

**Exact however it is summed.** A decision must come out the same from the store's
index, which keeps each class's sums up to date as records change, and from a scan,
which sums afresh (``lb_service.sumtree`` explains why). Every member's contribution is
a whole number (its figures in fixed point), so the sums are exact in any order. The
prior is then rounded: its rate and each typical latency to ``PRIOR_STEPS`` (4) values
per doubling, its weights to whole counts. So the index re-ranks a class only when the
rounded prior moves: on a fleet of 1,000 agents in classes of 100 to 200 with requests
spread over them, on about one end in 200 once the classes are measured (one in 30
rounded to 16 steps). A prior is a coarse figure: rounded to 4 or 16 steps the five
fleets above came out the same (1.350 and 1.359).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from lb_service.capacity import TRUST_COMPLETIONS, rounded
from lb_service.model import Agent
from lb_service.model_cost import WINDOW

if TYPE_CHECKING:  # the stores import this module: no import of theirs at run time
    from lb_service.store.base import AgentStats

__all__ = [
    "PEER_WEIGHT",
    "PRIOR_STEPS",
    "Contribution",
    "Figures",
    "PeerIndex",
    "PeerPrior",
    "Peers",
    "contribution",
    "figures",
    "informed_figures",
    "peer_class",
]

#: The most completions (and samples of a model) a class's prior weighs.
PEER_WEIGHT = 16
#: Fixed-point scale of the contributions (exact integer sums).
_FIXED = 1 << 20
#: Values the prior's rate and typical latencies take per doubling (see above).
PRIOR_STEPS = 4
#: A typical latency (a mean log) is rounded to this step.
_LOG_STEP = math.log(2.0) / PRIOR_STEPS


def peer_class(agent: Agent) -> Hashable:
    """What agents must share to be peers: hardware, engine, slots, limit and models."""
    return (
        agent.hardware,
        agent.engine,
        agent.parallel_slots,
        agent.max_connections,
        tuple(sorted(agent.models)),
    )


class Contribution(NamedTuple):
    """One member's figures as the class sums them: whole numbers, so sums are exact.

    A named tuple, not a dataclass: a scan builds one per agent on every decision.
    """

    #: Decayed completions and slot-busy time, in fixed point.
    done: int = 0
    busy: int = 0
    #: Completions, up to what trust needs.
    completions: int = 0
    #: Per model: (model, weight x typical latency in fixed point, weight), the weight
    #: being the samples the moving average rests on (at most ``model_cost.WINDOW``).
    models: tuple[tuple[str, int, int], ...] = ()


_NOTHING = Contribution()
#: tuple.__new__: a Contribution without the named tuple's generated __new__.
_new_contribution = tuple.__new__


def contribution(record: AgentStats) -> Contribution:
    """The member's figures as its class sums them."""
    if not record.completions and not record.model_latency:
        return _NOTHING
    models = []
    for name, mean, samples, _ in record.model_latency:
        weight = min(samples, WINDOW)
        models.append((name, round(mean * _FIXED) * weight, weight))
    # At most WINDOW completions' worth, at the member's rate, as each model's typical
    # latency counts at most WINDOW samples: the class's figure is its members', not
    # that of the one that served the most.
    done = min(record.cap_done, WINDOW)
    busy = record.cap_busy_ms * done / record.cap_done if record.cap_done > 0 else 0.0
    return _new_contribution(
        Contribution,
        (
            round(done * _FIXED),
            round(busy * _FIXED),
            min(record.completions, TRUST_COMPLETIONS),
            tuple(models),
        ),
    )


@dataclass(frozen=True, slots=True)
class PeerPrior:
    """What a class's pooled figures add to each member's (see the module docstring)."""

    #: Completions added, and the slot-busy time they took at the class's rate.
    done: float
    busy_ms: float
    #: The class's completions, up to what trust needs.
    completions: int
    #: Per model, in name order: (model, typical latency, samples added).
    models: tuple[tuple[str, float, int], ...]


class Peers:
    """A class's running sums over its members' contributions (exact: whole numbers)."""

    __slots__ = ("_busy", "_completions", "_done", "_models")

    def __init__(self, contributions: Iterable[Contribution] = ()) -> None:
        """Sum ``contributions``."""
        self._done = 0
        self._busy = 0
        self._completions = 0
        self._models: dict[str, list[int]] = {}
        for each in contributions:
            self.add(each)

    def add(self, each: Contribution, sign: int = 1) -> None:
        """Add one member's contribution (``sign`` -1 takes it away)."""
        self._done += sign * each.done
        self._busy += sign * each.busy
        self._completions += sign * each.completions
        for name, weighted, weight in each.models:
            sums = self._models.setdefault(name, [0, 0])
            sums[0] += sign * weighted
            sums[1] += sign * weight
            if not sums[1]:
                del self._models[name]

    def replace(self, old: Contribution, new: Contribution) -> None:
        """One member's contribution changed from ``old`` to ``new``."""
        self.add(old, -1)
        self.add(new)

    def prior(self) -> PeerPrior | None:
        """The rounded prior the sums give; None while they hold nothing."""
        done = busy_ms = 0.0
        whole = self._done // _FIXED
        if whole > 0 and self._busy > 0:
            weight = min(PEER_WEIGHT, whole)
            done = float(weight)
            busy_ms = weight / rounded(self._done / self._busy, PRIOR_STEPS)
        models = tuple(
            (
                name,
                round(weighted / (weight * _FIXED) / _LOG_STEP) * _LOG_STEP,
                min(PEER_WEIGHT, weight),
            )
            for name, (weighted, weight) in sorted(self._models.items())
            if weight > 0
        )
        if not done and not models:
            return None
        return PeerPrior(done, busy_ms, min(self._completions, TRUST_COMPLETIONS), models)


#: What decisions read of a record's estimates: completions, decayed completions and the
#: slot-busy time they took (``capacity.ranked_rate``), and the model entries
#: (``model_cost.factor_of``).
Figures = tuple[int, float, float, tuple[tuple[str, float, int, float], ...]]


def figures(record: AgentStats, prior: PeerPrior | None) -> Figures:
    """The member's estimates with its class's prior added (its own without one)."""
    if prior is None:
        return record.completions, record.cap_done, record.cap_busy_ms, record.model_latency
    added = prior.models
    latency = []
    matched = 0
    # The agent's own models in its order (model_cost reads the most recent last), then
    # those only its peers have served, which weigh nothing in its mix (share 0).
    for name, mean, samples, share in record.model_latency:
        for peer_name, typical, weight in added:
            if peer_name == name:
                mean = (samples * mean + weight * typical) / (samples + weight)
                samples += weight
                matched += 1
                break
        latency.append((name, mean, samples, share))
    if matched < len(added):
        own = {entry[0] for entry in record.model_latency}
        latency.extend((name, mean, weight, 0.0) for name, mean, weight in added if name not in own)
    return (
        max(record.completions, prior.completions),
        record.cap_done + prior.done,
        record.cap_busy_ms + prior.busy_ms,
        tuple(latency),
    )


def informed_figures(agents: Sequence[Agent], records: Sequence[AgentStats]) -> list[Figures]:
    """Each agent's estimates with its class's prior among ``agents`` added (a scan's way)."""
    keys = [peer_class(agent) for agent in agents]
    classes: dict[Hashable, list[AgentStats]] = {}
    for key, record in zip(keys, records, strict=True):
        classes.setdefault(key, []).append(record)
    priors = {
        key: Peers(contribution(record) for record in members).prior()
        for key, members in classes.items()
        if len(members) > 1
    }
    return [figures(record, priors.get(key)) for key, record in zip(keys, records, strict=True)]


class PeerIndex:
    """The index's way: each class's sums kept up to date as members' records change.

    ``store.pool.Pool`` holds one over its members and reads every member's estimates
    through it, so its decisions equal a scan's (``informed_figures``) exactly: the sums
    are whole numbers, the prior is computed from them the same way.
    """

    def __init__(self, agents: Sequence[Agent], records: Sequence[AgentStats]) -> None:
        """Index ``records``, the members' own, in the members' order."""
        self._keys = [peer_class(agent) for agent in agents]
        self._raw = list(records)
        members: dict[Hashable, list[int]] = {}
        for position, key in enumerate(self._keys):
            members.setdefault(key, []).append(position)
        #: The positions of each class of two or more members, and its sums and prior.
        self._members = {key: found for key, found in members.items() if len(found) > 1}
        # Only members with peers are summed; a class of one reads its own figures.
        self._contributions = [
            contribution(record) if key in self._members else _NOTHING
            for record, key in zip(records, self._keys, strict=True)
        ]
        self._sums = {
            key: Peers(self._contributions[n] for n in found)
            for key, found in self._members.items()
        }
        self._priors = {key: sums.prior() for key, sums in self._sums.items()}
        self._figures = [
            figures(record, self._priors.get(key))
            for record, key in zip(records, self._keys, strict=True)
        ]

    def figures(self) -> list[Figures]:
        """Every member's estimates as decisions read them, in order."""
        return list(self._figures)

    def update(self, position: int, record: AgentStats) -> Iterable[tuple[int, Figures]]:
        """Take in one member's new record; the members whose estimates it moved, and it.

        Usually only that member; every member of its class when the class's rounded
        prior moved. A record whose estimates did not change (a lease opened or closed)
        costs a comparison.
        """
        old = self._raw[position]
        self._raw[position] = record
        if _same_estimates(old, record):
            return ((position, self._figures[position]),)
        key = self._keys[position]
        sums = self._sums.get(key)
        if sums is not None:
            new = contribution(record)
            if new != self._contributions[position]:
                sums.replace(self._contributions[position], new)
                self._contributions[position] = new
                prior = sums.prior()
                if prior != self._priors[key]:
                    self._priors[key] = prior
                    moved = self._members[key]
                    for n in moved:
                        self._figures[n] = figures(self._raw[n], prior)
                    return [(n, self._figures[n]) for n in moved]
        read = self._figures[position] = figures(record, self._priors.get(key))
        return ((position, read),)


def _same_estimates(old: AgentStats, new: AgentStats) -> bool:
    return (
        old.cap_done == new.cap_done
        and old.cap_busy_ms == new.cap_busy_ms
        and old.completions == new.completions
        and old.model_latency == new.model_latency
    )
