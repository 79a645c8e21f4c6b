"""The event loop: replays a request stream on a virtual clock against one policy.

A balancer policy drives the real ``LoadBalancer`` over a ``MemoryStore``, making exactly
the calls the servicer makes: ``register``, ``select`` (with ``acquire`` for a dispatcher
whose reports are immediate), ``start`` and ``end`` (delivered ``report_delay_ms`` late
for the others) and a periodic ``sweep``. Its clock is the virtual one and its random
source is seeded, so a run is a pure function of the scenario, the seed and the policy.
``LoadBalancer`` methods are coroutines that never suspend over a memory store, so the
whole run is one coroutine on one event loop and costs only the balancer's own work.

The agents. Each has ``slots`` parallel servers and a FIFO queue beyond them; a request's
response time is its wait plus its service time (its size / the agent's speed, times a
``slow`` fault's factor if service starts during one; ``fail_ms`` and failed if service
starts during a ``fail`` fault). With FIFO and the service time known once the request
is assigned, its start is simply the earliest time a slot is free, so an agent needs no
events of its own: assignment computes start and finish at once. Slots are independent
(running more requests at once does not slow each one down), which flatters agents with
many slots; give fewer slots with a higher speed to model batching that does.

What the balancer did. Every ``sweep`` returns the leases it expired; their sum is kept.
Ejections are counted from ``loads()`` read after every sweep and once more at the end of
the run: an agent whose ``ejected_until_ms`` is non-zero and differs from the value last
seen for it was ejected (again) since. An ejection lasts ``ejection_base_s`` (30 s by
default), far longer than a sweep interval, so none falls between two reads.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lb_service.balancer import BalancerConfig, LoadBalancer, silent_logger
from lb_service.errors import AllAgentsBusy, LimitExceeded, NoAgentAvailable, NoAgentsRegistered
from lb_service.requirements import meets
from lb_service.simulate.policies import ORACLE, PolicySpec
from lb_service.simulate.scenario import Fault, Scenario, SimAgent
from lb_service.simulate.workload import Requests
from lb_service.store.memory import MemoryStore

#: The unix time (ms) the virtual clock starts at; fixed so runs repeat exactly.
START_MS = 1_700_000_000_000
#: Called with the share of the run done so far (0 to 1).
Progress = Callable[[float], None]

# Event kinds, in the heap as small ints: tuples of ints compare fastest.
_START, _END, _SWEEP, _SAMPLE, _JOIN, _CRASH = range(6)


class VirtualClock:
    """The balancer's clock: unix ms, moved by the event loop only."""

    def __init__(self, start_ms: int = START_MS) -> None:
        """Start at ``start_ms`` (simulated time 0)."""
        self.start_ms = start_ms
        #: Simulated time since the start, in ms (fractional).
        self.now = 0.0

    def __call__(self) -> int:
        """The current time in whole unix ms, as ``LoadBalancer`` expects it."""
        return self.start_ms + int(self.now)


@dataclass(slots=True)
class EjectionWatch:
    """What happened to an agent after a ``fail`` fault began, under one policy."""

    fault: Fault
    #: Failed ends reported to the balancer from the fault's start until it ejected the
    #: agent (the one that ejected it included), or until the end of the run.
    failures_before_ejection: int = 0
    #: Requests sent to the agent before it was ejected that failed: those sent after the
    #: fault began and those queued before it that only started service after.
    sent_before_ejection: int = 0
    #: Simulated seconds from the fault's start to the ejection; None if never ejected.
    ejected_after_s: float | None = None


@dataclass(slots=True)
class PolicyRun:
    """Everything one policy did, per request and over time; ``metrics`` summarises it."""

    policy: PolicySpec
    config: BalancerConfig | None
    agent_ids: tuple[str, ...]
    #: Per request: the agent's index, or -1 when refused.
    agent: list[int]
    start_ms: list[float]
    finish_ms: list[float]
    failed: list[bool]
    refused: Counter[str] = field(default_factory=Counter)
    #: Load over time: sample times (s) and, per sample, requests in each agent (queued
    #: or in service).
    sample_s: list[float] = field(default_factory=list)
    samples: list[tuple[int, ...]] = field(default_factory=list)
    ejections: list[EjectionWatch] = field(default_factory=list)
    #: Leases the balancer's sweeps expired (the first figure ``sweep()`` returns).
    leases_expired: int = 0
    #: Times an agent was newly ejected, as read after each sweep (module docstring).
    ejection_count: int = 0


class _AgentState:
    """One agent's slots, in-system requests and faults during a run."""

    __slots__ = ("fails", "finishes", "free_at", "registered", "sim", "slows")

    def __init__(self, sim: SimAgent, faults: Sequence[Fault]) -> None:
        self.sim = sim
        # When each slot next becomes free (a heap): a request starts at the earliest.
        self.free_at = [0.0] * sim.slots
        # Finish times of the requests queued or in service (a heap), for in-system counts.
        self.finishes: list[float] = []
        mine = [f for f in faults if f.agent_id == sim.agent.id]
        self.slows = [(f.at_s * 1000, f.until_s * 1000, f.factor) for f in mine if f.kind == "slow"]
        self.fails = [
            (f.at_s * 1000, f.until_s * 1000, f.fail_ms) for f in mine if f.kind == "fail"
        ]
        self.registered = not any(f.kind == "join" for f in mine)

    def service(self, base_ms: float, start: float) -> tuple[float, bool]:
        """The service time of a request of this size starting at ``start``, and if it fails."""
        for at, until, fail_ms in self.fails:
            if at <= start < until:
                return fail_ms, True
        service = base_ms / self.sim.speed
        for at, until, factor in self.slows:
            if at <= start < until:
                service *= factor
        return service, False

    def in_system(self, now: float) -> int:
        """Requests queued or in service at ``now``."""
        finishes = self.finishes
        while finishes and finishes[0] <= now:
            heapq.heappop(finishes)
        return len(finishes)

    def has_room(self, now: float) -> bool:
        limit = self.sim.agent.max_connections
        return limit == 0 or self.in_system(now) < limit


async def run_policy(
    scenario: Scenario,
    requests: Requests,
    policy: PolicySpec,
    seed: int,
    progress: Progress | None = None,
) -> PolicyRun:
    """Replay ``requests`` against ``policy`` and return what happened to each of them."""
    return await _Run(scenario, requests, policy, seed, progress).run()


class _Run:
    """The state of one policy's run; ``run`` is the event loop."""

    def __init__(
        self,
        scenario: Scenario,
        requests: Requests,
        policy: PolicySpec,
        seed: int,
        progress: Progress | None,
    ) -> None:
        self.scenario = scenario
        self.requests = requests
        self.policy = policy
        self.end_ms = scenario.duration_s * 1000
        self.progress = progress
        self.clock = VirtualClock()
        # Seeded by the policy's name too, so each policy's choices are its own but the
        # same on every run (a str seed is hashed with SHA-512, not the salted hash()).
        self.rng = random.Random(f"{seed}:{policy.name}")
        self.agents = [_AgentState(a, scenario.faults) for a in scenario.agents]
        self.index = {a.agent.id: n for n, a in enumerate(scenario.agents)}
        self.tasks = [t.task for t in scenario.workload.mix]
        self.delays = [d.report_delay_ms for d in scenario.workload.dispatchers]
        self.config = policy.config(scenario.balancer) if policy.reference is None else None
        self.balancer = (
            # Silent: a simulated fleet's ejections and expiries are in the report; as log
            # lines they would only bury it.
            LoadBalancer(
                MemoryStore(epoch="sim"),
                self.config,
                clock=self.clock,
                rng=self.rng,
                logger=silent_logger(),
            )
            if self.config is not None
            else None
        )
        n = len(requests)
        self.out = PolicyRun(
            policy,
            self.config,
            tuple(a.agent.id for a in scenario.agents),
            agent=[-1] * n,
            start_ms=[math.nan] * n,
            finish_ms=[math.nan] * n,
            failed=[False] * n,
        )
        self.request_ids = [""] * n
        # Whether each request's end was delivered: a crash reschedules ends earlier, and
        # the end first scheduled is then skipped when its time comes.
        self.ended = bytearray(n)
        # Per agent, the requests sent to it in order: a crash finds its in-flight ones here.
        self.assigned: list[list[int]] = [[] for _ in scenario.agents]
        self.events: list[tuple[float, int, int, int]] = []
        self.sequence = 0
        # Ejection is watched for balancer policies that eject (scenario validation allows
        # one fail fault per agent, so an agent index names its fault).
        ejects = self.config is not None and self.config.ejection_consecutive_failures > 0
        self.watches = (
            {self.index[f.agent_id]: EjectionWatch(f) for f in scenario.faults if f.kind == "fail"}
            if ejects
            else {}
        )
        self.out.ejections = list(self.watches.values())
        # Per agent id, the ejected_until_ms last read for it while ejected.
        self.ejected_until: dict[str, int] = {}
        self.eligible: list[list[int]] = []
        self._refresh_eligible()

    def _push(self, time: float, kind: int, item: int) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, self.sequence, kind, item))

    def _refresh_eligible(self) -> None:
        self.eligible = [
            [n for n, a in enumerate(self.agents) if a.registered and meets(a.sim.agent, task)]
            for task in self.tasks
        ]

    async def run(self) -> PolicyRun:
        scenario = self.scenario
        if self.balancer is not None:
            assert self.policy.strategy is not None
            await self.balancer.set_strategy(self.policy.strategy)
            for state in self.agents:
                if state.registered:
                    await self.balancer.register(state.sim.agent)
        for n, fault in enumerate(scenario.faults):
            if fault.kind == "join":
                self._push(fault.at_s * 1000, _JOIN, self.index[fault.agent_id])
            elif fault.kind == "fail" and fault.in_flight == "fail":
                self._push(fault.at_s * 1000, _CRASH, n)
        self._push(0.0, _SAMPLE, 0)
        if self.balancer is not None:
            self._push(scenario.sweep_interval_s * 1000, _SWEEP, 0)
        arrivals = self.requests.arrival_ms
        total = len(arrivals)
        step = max(1, total // 100)
        events = self.events
        for i, arrival in enumerate(arrivals):
            while events and events[0][0] <= arrival:
                await self._event(*heapq.heappop(events))
            self.clock.now = arrival
            await self._arrive(i, arrival)
            if self.progress is not None and i % step == 0:
                self.progress(i / total)
        # Drain: the requests still queued finish, and their ends reach the balancer.
        while events:
            await self._event(*heapq.heappop(events))
        if self.balancer is not None:
            # An ejection after the last sweep (during the drain) is counted too.
            await self._count_ejections()
        if self.progress is not None:
            self.progress(1.0)
        return self.out

    async def _event(self, time: float, _: int, kind: int, item: int) -> None:
        self.clock.now = time
        balancer = self.balancer
        if kind == _END:
            if self.ended[item]:
                return
            self.ended[item] = 1
            agent = self.out.agent[item]
            failed = self.out.failed[item]
            if balancer is not None:
                agent_id = self.out.agent_ids[agent]
                latency = self.out.finish_ms[item] - self.requests.arrival_ms[item]
                await balancer.end(
                    agent_id, latency, request_id=self.request_ids[item], failed=failed
                )
                watch = self.watches.get(agent)
                if failed and watch is not None and watch.ejected_after_s is None:
                    await self._check_ejection(agent_id, watch, time)
        elif kind == _START:
            assert balancer is not None
            self.request_ids[item] = await balancer.start(self.out.agent_ids[self.out.agent[item]])
        elif kind == _SWEEP:
            assert balancer is not None
            expired, _ = await balancer.sweep()
            self.out.leases_expired += expired
            await self._count_ejections()
            following = time + self.scenario.sweep_interval_s * 1000
            if following < self.end_ms:
                self._push(following, _SWEEP, 0)
        elif kind == _SAMPLE:
            self.out.sample_s.append(time / 1000)
            self.out.samples.append(tuple(a.in_system(time) for a in self.agents))
            following = time + self._sample_interval_ms()
            if following <= self.end_ms:
                self._push(following, _SAMPLE, 0)
        elif kind == _CRASH:
            self._crash(self.scenario.faults[item], time)
        elif kind == _JOIN:
            state = self.agents[item]
            state.registered = True
            if balancer is not None:
                await balancer.register(state.sim.agent)
            self._refresh_eligible()

    def _crash(self, fault: Fault, now: float) -> None:
        """Fail, ``fail_ms`` from now, every request the agent is serving or has queued.

        The queue is replayed in FIFO order on the freed slots, each request now failing
        after ``fail_ms``; their ends are rescheduled (the old ones will be skipped).
        """
        agent = self.index[fault.agent_id]
        state = self.agents[agent]
        out = self.out
        live = [i for i in self.assigned[agent] if out.finish_ms[i] > now]
        serving = [i for i in live if out.start_ms[i] <= now]
        queued = [i for i in live if out.start_ms[i] > now]
        slots = [now] * (state.sim.slots - len(serving))
        watch = self.watches.get(agent)
        for i in serving:
            slots.append(self._reschedule(i, out.start_ms[i], now + fault.fail_ms, watch))
        heapq.heapify(slots)
        for i in queued:
            start = slots[0]
            heapq.heapreplace(slots, self._reschedule(i, start, start + fault.fail_ms, watch))
        state.free_at = slots
        state.finishes = [out.finish_ms[i] for i in live]
        heapq.heapify(state.finishes)

    def _reschedule(
        self, i: int, start: float, finish: float, watch: EjectionWatch | None
    ) -> float:
        out = self.out
        if not out.failed[i] and watch is not None and watch.ejected_after_s is None:
            watch.sent_before_ejection += 1
        out.start_ms[i], out.finish_ms[i], out.failed[i] = start, finish, True
        self._push(finish + self._delay(i), _END, i)
        return finish

    def _delay(self, i: int) -> float:
        if self.balancer is None:
            return 0.0
        return self.delays[self.requests.dispatcher[i]]

    def _sample_interval_ms(self) -> float:
        # 200 samples over the run unless the scenario says otherwise.
        interval = self.scenario.sample_interval_s or self.scenario.duration_s / 200
        return interval * 1000

    async def _count_ejections(self) -> None:
        """Count the agents whose ejected_until_ms is new and non-zero since the last read."""
        assert self.balancer is not None
        seen = self.ejected_until
        for load in await self.balancer.loads():
            until = load.ejected_until_ms
            if until and seen.get(load.agent_id) != until:
                seen[load.agent_id] = until
                self.out.ejection_count += 1

    async def _check_ejection(self, agent_id: str, watch: EjectionWatch, now: float) -> None:
        assert self.balancer is not None
        watch.failures_before_ejection += 1
        (load,) = await self.balancer.loads([agent_id])
        if load.ejected:
            watch.ejected_after_s = (now - watch.fault.at_s * 1000) / 1000

    async def _arrive(self, i: int, now: float) -> None:
        kind = self.requests.kind[i]
        if self.balancer is None:
            agent = self._reference_pick(i, kind, now)
            if agent < 0:
                return
            self._assign(i, agent, now, 0.0)
            return
        delay = self.delays[self.requests.dispatcher[i]]
        try:
            selection = await self.balancer.select(
                self.tasks[kind], session_id=self.requests.session[i], acquire=delay == 0
            )
        except NoAgentAvailable as refusal:
            self.out.refused[_reason(refusal)] += 1
            return
        except LimitExceeded:
            # Only max_leases/max_sessions can raise it; the defaults are far above any
            # shipped scenario, but a huge backlog should be counted, not crash the run.
            self.out.refused["limit"] += 1
            return
        agent = self.index[selection.agent.id]
        if delay == 0:
            self.request_ids[i] = selection.request_id
        else:
            self._push(now + delay, _START, i)
        self._assign(i, agent, now, delay)

    def _assign(self, i: int, agent: int, now: float, delay: float) -> None:
        state = self.agents[agent]
        free_at = state.free_at
        start = free_at[0] if free_at[0] > now else now
        service, failed = state.service(self.requests.base_ms[i], start)
        finish = start + service
        heapq.heapreplace(free_at, finish)
        heapq.heappush(state.finishes, finish)
        out = self.out
        out.agent[i] = agent
        out.start_ms[i] = start
        out.finish_ms[i] = finish
        out.failed[i] = failed
        self.assigned[agent].append(i)
        if failed:
            watch = self.watches.get(agent)
            if watch is not None and watch.ejected_after_s is None:
                watch.sent_before_ejection += 1
        self._push(finish + delay, _END, i)

    def _reference_pick(self, i: int, kind: int, now: float) -> int:
        """The random or oracle policy's agent for request ``i``, or -1 (refused)."""
        eligible = self.eligible[kind]
        if not eligible:
            self.out.refused[
                "no_agents" if not any(a.registered for a in self.agents) else "no_eligible"
            ] += 1
            return -1
        free = [n for n in eligible if self.agents[n].has_room(now)]
        if not free:
            self.out.refused["all_busy"] += 1
            return -1
        if self.policy.reference != ORACLE:
            return free[self.rng.randrange(len(free))]
        base = self.requests.base_ms[i]
        best: list[int] = []
        best_key = (True, math.inf)
        for n in free:
            state = self.agents[n]
            start = max(now, state.free_at[0])
            service, fails = state.service(base, start)
            # A failing agent never finishes the request: prefer any that will, however late.
            key = (fails, start + service)
            if key < best_key:
                best, best_key = [n], key
            elif key == best_key:
                best.append(n)
        # Equal finishes (identical idle agents) are drawn at random, so the oracle does
        # not pile work on the first agent listed.
        return best[0] if len(best) == 1 else best[self.rng.randrange(len(best))]


def _reason(refusal: NoAgentAvailable) -> str:
    if isinstance(refusal, NoAgentsRegistered):
        return "no_agents"
    if isinstance(refusal, AllAgentsBusy):
        return "all_busy"
    return "no_eligible"


async def run_all(
    scenario: Scenario,
    requests: Requests,
    policies: Sequence[PolicySpec],
    seed: int,
    progress: Callable[[int, PolicySpec, float], None] | None = None,
) -> list[PolicyRun]:
    """Run every policy over the same requests, one after another on this event loop."""
    runs = []
    for n, policy in enumerate(policies):
        report: Progress | None = None
        if progress is not None:
            report = _bind(progress, n, policy)
        runs.append(await run_policy(scenario, requests, policy, seed, report))
    return runs


def _bind(
    progress: Callable[[int, PolicySpec, float], None], n: int, policy: PolicySpec
) -> Progress:
    def report(done: float) -> None:
        progress(n, policy, done)

    return report
