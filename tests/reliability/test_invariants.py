"""Invariants of the core under random use: a Hypothesis state machine over the balancer.

The machine keeps its own model of what must be true (open leases, issued request ids,
session bindings, counters), drives the real balancer with random sequences of every
operation, checks each answer against the model, and after every step checks the
invariants: no negative count, active == open leases per agent, statistics add up,
and every limit holds. Time is a fake clock, randomness a seeded generator.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.capacity import (
    EXPLORE_LIMIT,
    UNTRUSTED_CREDIT,
    hardware_capacity,
    ranked_capacity,
    ranked_slots,
    resolve,
)
from lb_service.errors import (
    AgentNotFound,
    AllAgentsBusy,
    AllAgentsDraining,
    InvalidArgument,
    LeaseNotFound,
    LimitExceeded,
    NoAgentsRegistered,
    NoEligibleAgent,
)
from lb_service.model import Agent, Compute, Hardware, Selection, StrategyName, Task
from lb_service.model_cost import service_factor
from lb_service.requirements import meets
from lb_service.store.base import AgentStats
from lb_service.store.memory import MemoryStore
from lb_service.strategies.base import Candidate, expected_time_rank
from tests.factories import FakeClock

_T = TypeVar("_T")

CONFIG = BalancerConfig(
    # The model below predicts the base rules exactly: full scan (by capacity-weighed
    # load), moving-average latency, no ejection. The power of two choices, peak-EWMA
    # and ejection have their own tests (tests/core/test_decision_quality.py and
    # tests/store/test_feedback.py).
    choice_count=0,
    peak_ewma=False,
    ejection_consecutive_failures=0,
    # The model counts leases; pending picks (picks without acquire counted until their
    # start) have their own tests (tests/core/test_pending_picks.py, the store contract).
    pick_hold_s=0,
    # Leases outlive idle sessions here, so a lease can outlast its agent's idle history.
    session_ttl_s=30,
    request_timeout_s=60,
    # Small limits, so random use reaches every one of them.
    max_candidates=4,
    max_agents=5,
    max_sessions=4,
    max_leases=6,
)
TTL_MS = int(CONFIG.session_ttl_s * 1000)
TIMEOUT_MS = int(CONFIG.request_timeout_s * 1000)
EPOCH = "inv"

#: Registered ids and candidate-only ids overlap ("a0"), as they may in real use.
AGENT_IDS = ("a0", "a1", "a2", "a3", "a4", "a5")
CANDIDATE_IDS = ("a0", "c0", "c1", "c2", "c3")
MODELS = ("m1", "m2", "m3")
SESSIONS = ("", "s0", "s1", "s2", "s3", "s4", "s5")


def _agent(ids: Sequence[str]) -> st.SearchStrategy[Agent]:
    return st.builds(
        Agent,
        id=st.sampled_from(ids),
        host=st.just("h.local"),
        port=st.just(11434),
        models=st.sampled_from([MODELS, MODELS, ("m1",), ("m2", "m3"), ()]),
        hardware=st.builds(
            Hardware,
            gpu=st.sampled_from(["", "", "A100"]),
            vram_gb=st.sampled_from([0.0, 8.0, 24.0, 80.0]),
        ),
        max_connections=st.integers(0, 3),
    )


#: Mostly permissive, so that picks succeed often enough to reach capacity and limits.
TASKS = st.builds(
    Task,
    model=st.sampled_from(("", "", "", *MODELS)),
    min_vram_gb=st.sampled_from([0.0, 0.0, 0.0, 16.0, 40.0]),
    compute=st.sampled_from([Compute.ANY, Compute.ANY, Compute.ANY, Compute.CPU, Compute.GPU]),
)
#: None: use the registry; a list (possibly oversized or with a repeated id): candidates.
CANDIDATES = st.none() | st.lists(_agent(CANDIDATE_IDS), max_size=5)


@dataclass
class _Lease:
    agent_id: str
    started_ms: int


class BalancerMachine(RuleBasedStateMachine):
    """Random sequences of every balancer operation, checked against a model after each step."""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock()
        self.store = MemoryStore(epoch=EPOCH)
        self.lb = LoadBalancer(self.store, CONFIG, clock=self.clock, rng=random.Random(1))
        # The model.
        self.registry: dict[str, Agent] = {}
        self.weights: dict[str, float] = {}
        self.leases: dict[str, _Lease] = {}  # open leases, in start order
        self.issued: list[str] = []
        self.bindings: dict[str, tuple[str, int]] = {}
        self.selections = 0
        self.failed_selections = 0
        self.drained: set[str] = set()  # agents drained and not undrained (by id)

    def teardown(self) -> None:
        self.loop.close()

    def run(self, call: Coroutine[Any, Any, _T]) -> _T:
        return self.loop.run_until_complete(call)

    # Reads of the real system.
    def active(self) -> dict[str, int]:
        return {agent_id: s.active for agent_id, s in self.run(self.store.stats()).items()}

    def relative_loads(self, free: Sequence[Agent], model: str) -> dict[str, float]:
        """A new request's expected time on the agents a full scan compares.

        Its own service time, the model's cost on the agent (``model_cost``) times the
        agent's mean service time ``slots / capacity``, plus the wait for a slot,
        ``max(0, open + 1 - slots) / capacity``. Capacities are learned where trusted
        and scaled hardware guesses elsewhere; untrusted agents already holding a
        request are left out while a trusted one has room (bounded exploration), unless
        the shortest time without them is over ``balance_factor`` x the shortest with
        those that have a guessed slot free, by their guesses without the exploration
        credit, which then come back.
        """
        stats = self.run(self.store.stats())
        records = [stats.get(a.id, AgentStats()) for a in free]
        learned = [ranked_capacity(record) for record in records]
        capacities = resolve([hardware_capacity(a) for a in free], learned)
        trusted = [figure is not None for figure in learned]
        loads = {}
        held = set()
        queued = set()
        for a, record, capacity, sure in zip(free, records, capacities, trusted, strict=True):
            open_now = self.open_count(a.id)
            # In the strategies' own linear form, so equal times compare equal.
            factor = service_factor(record, model)
            # The slots the rank counts: declared, else learned once trusted, else
            # the hardware guess (capacity.ranked_slots).
            slots = ranked_slots(a, record, sure)
            candidate = Candidate(
                a, open_now, None, 1.0, capacity, service_factor=factor, slots=slots
            )
            loads[a.id] = expected_time_rank(candidate).at(open_now)[1]
            if not sure and any(trusted) and not all(trusted):
                if open_now >= EXPLORE_LIMIT:
                    held.add(a.id)
                if open_now >= max(EXPLORE_LIMIT, slots):
                    queued.add(a.id)
        kept = {i: load for i, load in loads.items() if i not in held}
        released = {i: load for i, load in loads.items() if i not in queued}
        if held and min(kept.values()) > CONFIG.balance_factor * UNTRUSTED_CREDIT * min(
            released.values()
        ):
            return released
        return kept

    def known(self, agent_id: str) -> bool:
        return agent_id in self.registry or agent_id in self.run(self.store.stats())

    def observable(self) -> tuple[object, ...]:
        """Everything a client could see, to prove a refused call changed nothing."""
        stats = self.run(self.lb.statistics())
        return (
            self.run(self.lb.agents()),
            dict(self.run(self.store.stats())),
            dict(self.run(self.store.weights())),
            dict(self.run(self.store.leases())),
            self.run(self.store.session_count()),
            stats.strategy,
            stats.total_selections,
            stats.total_requests,
            dict(stats.selections_by_agent),
        )

    def open_count(self, agent_id: str) -> int:
        return sum(1 for lease in self.leases.values() if lease.agent_id == agent_id)

    # Registry, weights and strategy.
    @initialize(agents=st.lists(_agent(AGENT_IDS), max_size=4, unique_by=lambda a: a.id))
    def fleet(self, agents: list[Agent]) -> None:
        """Start with a few registered agents, so picks have something to choose from."""
        for agent in agents:
            self.register(agent)

    @rule(agent=_agent(AGENT_IDS))
    def register(self, agent: Agent) -> None:
        """Register or re-register; one agent past max_agents is refused and changes nothing."""
        before = self.observable()
        if agent.id not in self.registry and len(self.registry) >= CONFIG.max_agents:
            event("register: limit")
            with pytest.raises(LimitExceeded, match="max_agents"):
                self.run(self.lb.register(agent))
            assert self.observable() == before
            return
        self.run(self.lb.register(agent))
        self.registry[agent.id] = agent

    @rule(agent_id=st.sampled_from(AGENT_IDS))
    def deregister(self, agent_id: str) -> None:
        """Deregister; an unknown id is NOT_FOUND. The weight override goes with the agent."""
        if agent_id not in self.registry:
            with pytest.raises(AgentNotFound):
                self.run(self.lb.deregister(agent_id))
            return
        self.run(self.lb.deregister(agent_id))
        del self.registry[agent_id]
        self.weights.pop(agent_id, None)
        self.drained.discard(agent_id)  # its health goes with it

    @rule(agent_id=st.sampled_from(AGENT_IDS), undrain=st.booleans())
    def drain(self, agent_id: str, undrain: bool) -> None:
        """Drain or undrain; an unknown id is NOT_FOUND and changes nothing."""
        if agent_id not in self.registry:
            before = self.observable()
            with pytest.raises(AgentNotFound):
                self.run(self.lb.health.drain(agent_id, undrain=undrain))
            assert self.observable() == before
            return
        active = self.run(self.lb.health.drain(agent_id, undrain=undrain))
        assert active == self.open_count(agent_id)
        if undrain:
            self.drained.discard(agent_id)
        else:
            self.drained.add(agent_id)

    @rule(
        weights=st.dictionaries(
            st.sampled_from(AGENT_IDS), st.sampled_from([0.0, 0.5, 1.0, 3.0]), max_size=3
        )
    )
    def update_weights(self, weights: dict[str, float]) -> None:
        """Weights apply all or nothing: one unknown id changes none of them."""
        before = self.observable()
        if set(weights) - set(self.registry):
            with pytest.raises(AgentNotFound):
                self.run(self.lb.update_weights(weights))
            assert self.observable() == before
            return
        effective = self.run(self.lb.update_weights(weights))
        self.weights.update(weights)
        assert effective == {i: self.weight(a) for i, a in self.registry.items()}

    @rule(strategy=st.sampled_from(StrategyName))
    def set_strategy(self, strategy: StrategyName) -> None:
        """Every strategy can be switched to at any time."""
        self.run(self.lb.set_strategy(strategy))

    def weight(self, agent: Agent) -> float:
        return self.weights.get(agent.id, agent.default_weight)

    # Selection.
    @rule(
        task=TASKS,
        session_id=st.sampled_from(SESSIONS),
        candidates=CANDIDATES,
        acquire=st.booleans(),
    )
    def select(
        self, task: Task, session_id: str, candidates: list[Agent] | None, acquire: bool
    ) -> None:
        """A pick is refused for exactly the documented reasons, and otherwise obeys the rules."""
        before = self.observable()
        ids = [c.id for c in candidates or ()]
        if len(ids) > CONFIG.max_candidates or len(set(ids)) != len(ids):
            with pytest.raises(InvalidArgument):
                self.run(self.lb.select(task, session_id, candidates or (), acquire))
            assert self.observable() == before
            return
        now = self.clock()
        pool = candidates or list(self.registry.values())
        meeting = [a for a in pool if meets(a, task)]
        # Health goes by id: a drained agent never takes a pick, as a candidate either.
        matching = [a for a in meeting if a.id not in self.drained]
        weights = self.run(self.store.weights())

        def has_room(agent: Agent) -> bool:
            limit = agent.max_connections
            return limit == 0 or self.open_count(agent.id) < limit

        binding = self.bindings.get(session_id) if session_id else None
        bound = None
        if binding is not None and now - binding[1] < TTL_MS:
            bound = next((a for a in matching if a.id == binding[0]), None)
        free = [a for a in matching if has_room(a)]
        strategy = self.run(self.store.strategy())
        try:
            picked = self.run(self.lb.select(task, session_id, candidates or (), acquire))
        except NoAgentsRegistered:
            event("select: no agents")
            assert not pool
            self.failed_selections += 1
            return
        except AllAgentsDraining:
            event("select: all draining")
            assert meeting
            assert not matching
            self.failed_selections += 1
            return
        except NoEligibleAgent:
            event("select: no eligible agent")
            # Nothing meets the task, or weighted has only zero weights to choose from.
            assert not matching or (
                strategy is StrategyName.WEIGHTED
                and not (bound is not None and has_room(bound))
                and all(weights.get(a.id, a.default_weight) == 0 for a in free)
            )
            self.failed_selections += 1
            return
        except AllAgentsBusy:
            event("select: all busy")
            assert matching
            assert not free
            self.failed_selections += 1
            return
        except LimitExceeded:
            refused = True
        else:
            refused = False
        new_binding = bool(session_id) and bound is None and session_id not in self.bindings
        at_limit = (acquire and len(self.leases) >= CONFIG.max_leases) or (
            new_binding and len(self.bindings) >= CONFIG.max_sessions
        )
        assert refused == at_limit
        if refused:
            event("select: limit")
            assert self.observable() == before
            return
        event(f"select: {'sticky' if picked.sticky else 'picked'}, candidates: {bool(candidates)}")
        self.check_pick(picked, pool, task, has_room, bound)
        if strategy is StrategyName.LEAST_CONNECTIONS and not picked.sticky:
            loads = self.relative_loads(free, task.model)
            assert loads[picked.agent.id] == min(loads.values())
        if strategy is StrategyName.WEIGHTED and not picked.sticky:
            assert weights.get(picked.agent.id, picked.agent.default_weight) > 0
        # The model's bookkeeping, as the README describes it.
        self.selections += 1
        # Sticky refreshes the binding, no live binding binds anew; otherwise the bound
        # agent was over its bound or full and the request spilled over: the binding
        # stays as it was, used now if the strategy still chose the bound agent (over its
        # bound, it can still be the shortest expected time).
        spilled_onto_it = bound is not None and picked.agent.id == bound.id
        if session_id and (picked.sticky or bound is None or spilled_onto_it):
            self.bindings[session_id] = (picked.agent.id, now)
        if acquire:
            assert picked.request_id
            self.open(picked.request_id, picked.agent.id, now)
        else:
            assert picked.request_id == ""

    @rule(task=TASKS, session_id=st.sampled_from(SESSIONS[1:]))
    def acquire_in_session(self, task: Task, session_id: str) -> None:
        """The dispatcher's usual call: a registry pick in a session, with acquire."""
        self.select(task, session_id, None, acquire=True)

    def check_pick(
        self,
        picked: Selection,
        pool: Sequence[Agent],
        task: Task,
        has_room: Any,
        bound: Agent | None,
    ) -> None:
        """The picked agent is from the pool, eligible, under capacity; a live binding wins."""
        assert picked.agent in pool
        assert picked.agent.id not in self.drained, "picked a draining agent"
        assert meets(picked.agent, task)
        assert has_room(picked.agent), "picked an agent at max_connections"
        # A live binding answers unless its agent is over the load bound (then the
        # request spills over and the binding stays): never another agent as sticky.
        if picked.sticky:
            assert bound is not None
            assert has_room(bound)
            assert picked.agent.id == bound.id

    # Requests and leases.
    @rule(agent_id=st.sampled_from(AGENT_IDS + CANDIDATE_IDS))
    def start(self, agent_id: str) -> None:
        """A start opens a lease on a known agent, within max_leases; otherwise nothing changes."""
        before = self.observable()
        if not self.known(agent_id):
            with pytest.raises(AgentNotFound):
                self.run(self.lb.start(agent_id))
        elif len(self.leases) >= CONFIG.max_leases:
            event("start: limit")
            with pytest.raises(LimitExceeded, match="max_leases"):
                self.run(self.lb.start(agent_id))
        else:
            self.open(self.run(self.lb.start(agent_id)), agent_id, self.clock())
            return
        assert self.observable() == before

    def open(self, request_id: str, agent_id: str, now: int) -> None:
        assert request_id not in self.issued, "a request id was issued twice"
        self.issued.append(request_id)
        self.leases[request_id] = _Lease(agent_id, now)

    @rule(
        data=st.data(),
        latency=st.sampled_from([0.0, 12.5, 900.0]),
        failed=st.booleans(),
        agent_hint=st.sampled_from(["", "own", "other"]),
    )
    def end_by_request_id(
        self, data: st.DataObject, latency: float, failed: bool, agent_hint: str
    ) -> None:
        """Ending by request id closes an open lease once; repeats and late ends change nothing."""
        choices = [*self.issued, f"{EPOCH}-999999", "other-1", "garbage"]
        request_id = data.draw(st.sampled_from(choices))
        lease = self.leases.get(request_id)
        own = lease.agent_id if lease else "a0"
        agent_id = {"": "", "own": own, "other": "c3" if own != "c3" else "c2"}[agent_hint]
        before = self.observable()
        call = self.lb.end(agent_id, latency, request_id, failed)
        if request_id not in self.issued:
            with pytest.raises(LeaseNotFound):
                self.run(call)
        elif lease is not None and agent_hint == "other":
            with pytest.raises(InvalidArgument):
                self.run(call)
        elif lease is None:  # issued, then ended or expired: an idempotent no-op
            event("end: repeated or late")
            self.run(call)
        else:
            self.run(call)
            del self.leases[request_id]
            return
        assert self.observable() == before

    @rule(agent_id=st.sampled_from(AGENT_IDS + CANDIDATE_IDS), latency=st.just(40.0))
    def end_by_agent(self, agent_id: str, latency: float) -> None:
        """Ending without a request id closes the agent's oldest lease, or records latency only."""
        if not self.known(agent_id):
            with pytest.raises(AgentNotFound):
                self.run(self.lb.end(agent_id, latency))
            return
        self.run(self.lb.end(agent_id, latency))
        oldest = next((r for r, lease in self.leases.items() if lease.agent_id == agent_id), None)
        if oldest is not None:
            del self.leases[oldest]

    # Time.
    @rule(
        seconds=st.sampled_from([0.5, 5.0, CONFIG.session_ttl_s + 1, CONFIG.request_timeout_s + 1])
    )
    def advance(self, seconds: float) -> None:
        """Time moves on, past the request timeout or the session TTL at times."""
        self.clock.advance(seconds)

    @rule()
    def sweep(self) -> None:
        """The sweep expires exactly the overdue leases and the idle sessions."""
        now = self.clock()
        overdue = [r for r, lease in self.leases.items() if lease.started_ms < now - TIMEOUT_MS]
        idle = [s for s, (_, used) in self.bindings.items() if used < now - TTL_MS]
        assert self.run(self.lb.sweep()) == (len(overdue), len(idle))
        event(f"sweep: expired leases {bool(overdue)}, sessions {bool(idle)}")
        if any(lease.agent_id not in self.registry for lease in self.leases.values()):
            event("sweep: a lease on an unregistered id")
        for request_id in overdue:
            del self.leases[request_id]
        for session_id in idle:
            del self.bindings[session_id]
        # Unregistered ids without leases keep their history only while used recently.
        stats = self.run(self.store.stats())
        forgettable = [i for i in stats if i not in self.registry and not self.open_count(i)]
        assert len(forgettable) <= CONFIG.max_agents

    @precondition(lambda self: bool(self.leases))
    @rule()
    def everything_ends(self) -> None:
        """Ending every open lease brings every active count back to zero."""
        for request_id, lease in list(self.leases.items()):
            self.run(self.lb.end(lease.agent_id, 1.0, request_id))
            del self.leases[request_id]
        assert set(self.active().values()) <= {0}

    # Invariants, checked after every step.
    @invariant()
    def no_count_is_negative(self) -> None:
        """No active count is ever negative."""
        assert all(count >= 0 for count in self.active().values())

    @invariant()
    def active_equals_open_leases(self) -> None:
        """Each agent's active count is its number of open leases; the leases are the model's."""
        leases = self.run(self.store.leases())
        assert list(leases) == list(self.leases)
        active = self.active()
        per_agent: dict[str, int] = {}
        for lease in leases.values():
            per_agent[lease.agent_id] = per_agent.get(lease.agent_id, 0) + 1
        assert {i: n for i, n in active.items() if n} == per_agent

    @invariant()
    def statistics_add_up(self) -> None:
        """Selections by agent sum to total selections; totals match what was done."""
        stats = self.run(self.lb.statistics())
        assert sum(stats.selections_by_agent.values()) == stats.total_selections
        assert (stats.total_selections, stats.failed_selections) == (
            self.selections,
            self.failed_selections,
        )
        assert stats.total_requests == len(self.issued)
        assert stats.active_connections == len(self.leases)

    @invariant()
    def sessions_and_limits_hold(self) -> None:
        """Bindings (agent, last use) are the model's; registry, sessions, leases within limits."""
        assert self.run(self.store.session_count()) == len(self.bindings)
        for session_id in SESSIONS[1:]:
            binding = self.run(self.store.pick_state(session_id)).binding
            actual = (binding.agent_id, binding.last_used_ms) if binding else None
            assert actual == self.bindings.get(session_id), session_id
        assert len(self.run(self.lb.agents())) <= CONFIG.max_agents
        assert len(self.bindings) <= CONFIG.max_sessions
        assert len(self.leases) <= CONFIG.max_leases

    @invariant()
    def registry_is_the_models(self) -> None:
        """The registry holds exactly the registered agents, in registration order."""
        assert [a.id for a in self.run(self.lb.agents())] == list(self.registry)
        weights: Mapping[str, float] = self.run(self.store.weights())
        assert dict(weights) == self.weights


TestBalancerInvariants = BalancerMachine.TestCase
TestBalancerInvariants.__doc__ = "Every invariant holds after every step of random balancer use."
