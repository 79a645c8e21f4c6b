"""The event loop: replays a request stream on a virtual clock against one policy.

Events (request starts and ends delivered to the balancer, sweeps, load samples, joins
and crashes) wait in one heap ordered by time, then by the order they were scheduled;
arrivals come from the request stream in between. Assigning a request to an agent
computes its start and finish at once (``agents``), so agents add no events of their
own beyond the end each request's assignment schedules.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Sequence

from lb_service.balancer import LoadBalancer, silent_logger
from lb_service.errors import AllAgentsBusy, LimitExceeded, NoAgentAvailable, NoAgentsRegistered
from lb_service.model import LoadReport
from lb_service.requirements import meets
from lb_service.simulate.engine import ejections
from lb_service.simulate.engine.agents import AgentState
from lb_service.simulate.engine.references import reference_pick
from lb_service.simulate.engine.results import EjectionWatch, PolicyRun
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.scenario import Fault, Scenario
from lb_service.simulate.workload import Requests, mean_size_ms
from lb_service.store.memory import MemoryStore

#: The unix time (ms) the virtual clock starts at; fixed so runs repeat exactly.
START_MS = 1_700_000_000_000
#: Called with the share of the run done so far (0 to 1).
Progress = Callable[[float], None]

# Event kinds, in the heap as small ints: tuples of ints compare fastest.
_START, _END, _SWEEP, _SAMPLE, _JOIN, _CRASH, _REPORT, _REPORT_IN = range(8)


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
        self.agents = [
            AgentState(a, scenario.faults, mean_size_ms(scenario, a.agent)) for a in scenario.agents
        ]
        self.index = {a.agent.id: n for n, a in enumerate(scenario.agents)}
        self.tasks = [t.task for t in scenario.workload.mix]
        self.models = [t.task.model for t in scenario.workload.mix]
        # Each kind's mean size: all the informed reference knows of a request's size.
        self.expected_ms = [scenario.service[t.task.model].mean_ms for t in scenario.workload.mix]
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
        # Ejection is watched for balancer policies that eject.
        self.watches = ejections.watches(scenario.faults, self.index, self.config)
        self.out.ejections = list(self.watches.values())
        # Per agent id, the ejected_until_ms last read for it while ejected.
        self.ejected_until: dict[str, int] = {}
        self.eligible: list[list[int]] = []
        self._refresh_eligible()
        # Load reports taken and not yet delivered (scenario.reports.delay_ms), by number.
        self.reports_in_transit: dict[int, list[tuple[str, LoadReport]]] = {}
        self.report_rounds = 0

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
            if scenario.reports is not None:
                self._push(0.0, _REPORT, 0)
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
            if balancer is not None and not self.requests.bypassed(item):
                agent_id = self.out.agent_ids[agent]
                latency = self.out.finish_ms[item] - self.requests.arrival_ms[item]
                await balancer.end(
                    agent_id, latency, request_id=self.request_ids[item], failed=failed
                )
                watch = self.watches.get(agent)
                if failed and watch is not None and watch.ejected_after_s is None:
                    await ejections.note_failure(balancer, agent_id, watch, time)
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
        elif kind == _REPORT:
            await self._report(time)
        elif kind == _REPORT_IN:
            await self._deliver(self.reports_in_transit.pop(item))
        elif kind == _JOIN:
            state = self.agents[item]
            state.registered = True
            if balancer is not None:
                await balancer.register(state.sim.agent)
            self._refresh_eligible()

    def _crash(self, fault: Fault, now: float) -> None:
        """Fail, ``fail_ms`` from now, every request the agent is serving or has queued.

        The agent replays its queue (``AgentState.crash``); the ends of the requests it
        moved are rescheduled here (the old ones will be skipped).
        """
        agent = self.index[fault.agent_id]
        out = self.out
        live = [i for i in self.assigned[agent] if out.finish_ms[i] > now]
        serving = [(i, out.start_ms[i]) for i in live if out.start_ms[i] <= now]
        queued = [i for i in live if out.start_ms[i] > now]
        watch = self.watches.get(agent)
        for i, start, finish in self.agents[agent].crash(serving, queued, now, fault.fail_ms):
            self._reschedule(i, start, finish, watch)

    def _reschedule(self, i: int, start: float, finish: float, watch: EjectionWatch | None) -> None:
        out = self.out
        if not out.failed[i] and watch is not None and watch.ejected_after_s is None:
            watch.sent_before_ejection += 1
        out.start_ms[i], out.finish_ms[i], out.failed[i] = start, finish, True
        self._push(finish + self._delay(i), _END, i)

    async def _report(self, now: float) -> None:
        """Every registered agent reports its queued and running requests as of ``now``.

        Delivered ``reports.delay_ms`` later (at once when 0); the next round is taken
        ``reports.interval_ms`` later.
        """
        spec = self.scenario.reports
        assert spec is not None
        taken = []
        for state in self.agents:
            if state.registered:
                held = state.in_system(now)
                slots = state.sim.slots
                report = LoadReport(
                    queued_requests=max(0, held - slots),
                    running_requests=min(held, slots),
                    loaded_models=tuple(state.loaded),
                )
                taken.append((state.sim.agent.id, report))
        if spec.delay_ms > 0:
            self.report_rounds += 1
            self.reports_in_transit[self.report_rounds] = taken
            self._push(now + spec.delay_ms, _REPORT_IN, self.report_rounds)
        else:
            await self._deliver(taken)
        following = now + spec.interval_ms
        if following < self.end_ms:
            self._push(following, _REPORT, 0)

    async def _deliver(self, reports: list[tuple[str, LoadReport]]) -> None:
        """Hand the balancer each agent's report, as a heartbeat carrying it."""
        assert self.balancer is not None
        for agent_id, report in reports:
            await self.balancer.health.heartbeat(agent_id, report)

    def _delay(self, i: int) -> float:
        if self.balancer is None or self.requests.bypassed(i):
            return 0.0
        return self.delays[self.requests.dispatcher[i]]

    def _sample_interval_ms(self) -> float:
        # 200 samples over the run unless the scenario says otherwise.
        interval = self.scenario.sample_interval_s or self.scenario.duration_s / 200
        return interval * 1000

    async def _count_ejections(self) -> None:
        """Count the agents newly ejected since the last read (``ejections.new_ejections``)."""
        assert self.balancer is not None
        self.out.ejection_count += await ejections.new_ejections(self.balancer, self.ejected_until)

    async def _arrive(self, i: int, now: float) -> None:
        kind = self.requests.kind[i]
        if self.requests.bypassed(i):
            # Sent straight to its agent: no policy chooses it, and the balancer never hears of it.
            self._assign(i, self.requests.bypass[i], now, 0.0)
            return
        if self.balancer is None:
            choice = reference_pick(
                self.policy.reference,
                self.rng,
                self.agents,
                self.eligible[kind],
                self.requests.base_ms[i],
                now,
                self.expected_ms[kind],
                self.models[kind],
            )
            if isinstance(choice, str):
                self.out.refused[choice] += 1
                return
            self._assign(i, choice, now, 0.0)
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
        model = self.models[self.requests.kind[i]]
        finish = start + state.load_wait(model) + service
        state.use(model)
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
