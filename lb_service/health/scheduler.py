"""The probe scheduler: engine agents probed each interval, heartbeats swept, off the request path.

One asyncio task in the server process keeps a heap of when each engine agent is due
and looks at its top every 1/20 of the probe interval, starting the probes whose time
has come: the work per look is the probes due, not the fleet, and probes leave in a
steady trickle instead of a burst per tick. Each agent's next probe is set one
interval after its last with ±10% jitter, so agents registered together drift apart
instead of arriving in lockstep; a new agent is due at once. Every ``tick_s`` the task
also runs the monitor's heartbeat sweep and checks the whole registry (an agent whose
engine was added or removed); agents registered meanwhile are noticed at the next
look. A probe runs under a semaphore (at most ``concurrency`` at a time) and a timeout
(``probe: timeout after 1.0 s``: the prober's own when it bounds itself, as the
server's does, else one set here), never more than one per agent at a time. Every
agent's first probe and every ``full_every``-th after are ``full=True``: the costlier
pass (Ollama's ``/api/tags``, vLLM's and SGLang's ``/metrics``); the others ask only
whether it is up. The models an Ollama agent reports fill an agent registered without
any.

Before probing, the scheduler claims the agent's probe in the store for 90% of an
interval (``Store.claim_probe``): replicas sharing a store probe each agent about once
per interval between them, and a dead replica's claims lapse, so its agents are
probed by the others within an interval (a replica that lost a claim tries again
once the claim must have lapsed). The probe itself is injected
(``ProbeFunction``): the scheduler knows nothing of HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import structlog

from lb_service.errors import StoreUnavailable
from lb_service.health.monitor import HealthMonitor, HealthStore, is_probed
from lb_service.health.result import ProbeResult
from lb_service.model import Agent

#: Probes one agent: ``full`` asks for the less frequent pass (Ollama's ``/api/tags``).
ProbeFunction = Callable[[Agent, bool], Awaitable[ProbeResult]]


class Prober(Protocol):
    """What a probe factory builds (``lb_service.health.probes.Prober``): probes, then closes.

    It ends every probe within the timeout it was built with, a probe that ran out of
    time being a failed result that says so: the server sets no timer of its own.
    """

    async def probe(self, agent: Agent, *, full: bool) -> ProbeResult:
        """Probe one agent once, within the prober's timeout; never raises."""
        ...

    async def aclose(self) -> None:
        """Release its connections."""
        ...


#: Builds the prober the server uses, given the probe timeout in seconds (which it keeps).
ProbeFactory = Callable[[float], Prober]

#: Share of the interval a due time moves either way, so probes do not stay in step.
JITTER = 0.1
#: Share of the interval a probe claim holds: it lapses before the claimant is due again.
CLAIM_SHARE = 0.9
#: Looks at the due heap per probe interval: a probe leaves at most 1/20 interval late.
LOOKS_PER_INTERVAL = 20

log: structlog.typing.FilteringBoundLogger = structlog.get_logger(__name__)


def _system_clock() -> int:
    return time.time_ns() // 1_000_000


def _probed(agent: Agent | None) -> bool:
    return agent is not None and is_probed(agent)


class ProbeScheduler:
    """Probes the store's engine agents on a jittered interval and sweeps heartbeats."""

    def __init__(
        self,
        monitor: HealthMonitor,
        probe: ProbeFunction | None,
        *,
        interval_s: float = 5.0,
        timeout_s: float = 1.0,
        concurrency: int = 64,
        full_every: int = 12,
        tick_s: float = 1.0,
        self_bounded: bool = False,
        clock: Callable[[], int] = _system_clock,
        rng: random.Random | None = None,
    ) -> None:
        """Probe with ``probe`` (None: heartbeats only); ``clock`` returns unix ms.

        ``self_bounded``: ``probe`` ends within ``timeout_s`` by itself and says so in its
        result (the server's ``health.probes.Prober`` does), so no second timer is set
        per probe; otherwise each probe runs under ``asyncio.timeout``.

        Sets ``monitor.probing``: with a probe, new engine agents wait for their first
        probe before they take picks; without, they are not probed and stay healthy.
        """
        self._store: HealthStore = monitor.store
        self._monitor = monitor
        self._probe = probe
        self._interval_ms = interval_s * 1000
        self._timeout_s = timeout_s
        self._self_bounded = self_bounded
        self._semaphore = asyncio.Semaphore(concurrency)
        self._full_every = max(full_every, 1)
        # The registry check (an engine added to an agent) comes at least once an interval.
        self._tick_s = min(tick_s, interval_s) if probe is not None else tick_s
        # Between ticks the due heap is looked at this often (only while probing).
        self._look_s = interval_s / LOOKS_PER_INTERVAL if probe is not None else self._tick_s
        self._clock = clock
        self._rng = rng or random.Random()
        #: When each probed agent is next due (unix ms): the truth the heap is checked by.
        self._due: dict[str, float] = {}
        #: (due, agent id), one entry per ``_due`` entry plus stale ones skipped when popped.
        self._heap: list[tuple[float, str]] = []
        self._probes_made: dict[str, int] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        monitor.probing = probe is not None

    # Lifecycle.
    def start(self) -> None:
        """Run ``tick`` every ``tick_s`` in a background task until ``stop``."""
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="lb-health-probes")

    async def stop(self) -> None:
        """Stop ticking and cancel the probes in flight; return when all have ended."""
        tasks = [*self._running.values(), *([self._task] if self._task else [])]
        self._task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._running.clear()

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                if loop.time() >= next_tick:
                    next_tick = loop.time() + self._tick_s
                    await self.tick()
                else:
                    await self.look()
            except StoreUnavailable as error:
                # The server's store check reports the outage; probing resumes with it.
                log.warning("health_tick_failed", error=str(error))
            await asyncio.sleep(self._look_s)

    # One pass.
    async def tick(self) -> list[asyncio.Task[None]]:
        """Sweep heartbeats, check the whole registry, start every due probe; return those."""
        agents = await self._store.agents()
        await self._monitor.sweep(agents)
        if self._probe is None:
            return []
        now = self._clock()
        for gone in [i for i in self._due if not _probed(agents.get(i))]:
            self._forget(gone)
        for agent_id, agent in agents.items():
            if agent_id not in self._due and is_probed(agent):
                self._schedule(agent_id, now)  # new, or given an engine: at once
        return await self._start_due(agents, now)

    async def look(self) -> list[asyncio.Task[None]]:
        """Between ticks: schedule agents new since the last look, start the due probes."""
        if self._probe is None:
            return []
        agents = await self._store.agents()
        now = self._clock()
        # A set difference in C: cheap at 20 looks an interval, even for a large fleet.
        for agent_id in agents.keys() - self._due.keys():
            if is_probed(agents[agent_id]):
                self._schedule(agent_id, now)
        return await self._start_due(agents, now)

    def _schedule(self, agent_id: str, due: float) -> None:
        self._due[agent_id] = due
        heapq.heappush(self._heap, (due, agent_id))

    def _forget(self, agent_id: str) -> None:
        # Its heap entry is left behind and skipped when it comes up.
        del self._due[agent_id]
        self._probes_made.pop(agent_id, None)

    async def _start_due(self, agents: Mapping[str, Agent], now: int) -> list[asyncio.Task[None]]:
        started = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, agent_id = heapq.heappop(heap)
            if self._due.get(agent_id) != due:
                continue  # stale: rescheduled or forgotten since
            agent = agents.get(agent_id)
            if agent is None or not is_probed(agent):
                self._forget(agent_id)
                continue
            if agent_id in self._running:  # still probing: look again soon
                self._schedule(agent_id, now + self._look_s * 1000)
                continue
            interval = self._interval_ms
            self._schedule(agent_id, now + interval * (1 + self._rng.uniform(-JITTER, JITTER)))
            hold = int(interval * CLAIM_SHARE)
            if not await self._store.claim_probe(agent_id, now, hold):
                # Another replica probes it this interval. Its claim, taken at the latest
                # now, has lapsed one hold from now: try again then, so the agent of a
                # replica that died is probed within an interval.
                self._schedule(agent_id, now + hold * (1 + self._rng.uniform(0, JITTER)))
                continue
            task = asyncio.create_task(self._probe_one(agent))
            self._running[agent_id] = task
            task.add_done_callback(self._finished(agent_id))
            started.append(task)
        return started

    def _finished(self, agent_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(_: asyncio.Task[None]) -> None:
            self._running.pop(agent_id, None)

        return forget

    async def _probe_one(self, agent: Agent) -> None:
        """Probe one agent within the timeout and hand the result to the monitor."""
        made = self._probes_made.get(agent.id, 0)
        self._probes_made[agent.id] = made + 1
        full = made % self._full_every == 0
        assert self._probe is not None  # only scheduled with a probe
        async with self._semaphore:
            result = await self._bounded(agent, full)
        try:
            await self._monitor.probed(agent.id, result)
            if result.ok and result.models and not agent.models:
                await self._monitor.models_found(agent, result.models)
        except StoreUnavailable as error:
            log.warning("probe_result_lost", agent_id=agent.id, error=str(error))

    async def _bounded(self, agent: Agent, full: bool) -> ProbeResult:
        """The probe's result; a timeout or an error the probe let through is a failure."""
        assert self._probe is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            if self._self_bounded:
                # A timer per probe costs as much as a tenth of the probe: one is enough.
                return await self._probe(agent, full)
            async with asyncio.timeout(self._timeout_s):
                return await self._probe(agent, full)
        except TimeoutError:
            return ProbeResult(
                False, f"probe: timeout after {self._timeout_s:g} s", loop.time() - started
            )
        except Exception as error:
            log.error("probe_crashed", agent_id=agent.id, error=repr(error))
            return ProbeResult(False, f"probe: {type(error).__name__}", loop.time() - started)
