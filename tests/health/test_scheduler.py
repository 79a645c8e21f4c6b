"""The probe scheduler with a fake probe and a fake clock: when, how often, how many at once."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from typing import TypedDict, Unpack

import pytest

from lb_service.balancer import LoadBalancer
from lb_service.health import ProbeResult
from lb_service.health.scheduler import ProbeScheduler
from lb_service.model import Agent, AgentHealth, Engine
from lb_service.store.memory import MemoryStore
from tests.factories import FakeClock, agent, balancer


class FakeProbe:
    """Answers every probe as told and records (agent, full) per call."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls: list[tuple[str, bool]] = []
        self.running = 0
        self.most_running = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, agent: Agent, full: bool) -> ProbeResult:
        self.calls.append((agent.id, full))
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            return ProbeResult(self.ok, "" if self.ok else "probe: connection refused", 0.002)
        finally:
            self.running -= 1


def _engine(agent_id: str, engine: Engine = Engine.VLLM) -> Agent:
    return dataclasses.replace(agent(agent_id), engine=engine)


class _Options(TypedDict, total=False):
    """The ProbeScheduler options a test may set."""

    interval_s: float
    timeout_s: float
    concurrency: int
    full_every: int
    tick_s: float


async def _setup(
    clock: FakeClock, probe: FakeProbe, *agents: Agent, **options: Unpack[_Options]
) -> tuple[LoadBalancer, ProbeScheduler]:
    lb = balancer(clock)
    scheduler = ProbeScheduler(lb.health, probe, clock=clock, rng=random.Random(3), **options)
    for each in agents:
        await lb.register(each)
    return lb, scheduler


async def _tick(scheduler: ProbeScheduler) -> None:
    await asyncio.gather(*await scheduler.tick())


async def test_a_new_agent_is_probed_at_once_and_becomes_healthy(clock: FakeClock) -> None:
    """The first tick probes a new engine agent; its one success makes it healthy."""
    probe = FakeProbe()
    lb, scheduler = await _setup(clock, probe, _engine("a"), agent("plain"))

    await _tick(scheduler)

    assert probe.calls == [("a", True)]  # the agent without an engine is not probed
    loads = {load.agent_id: load.health for load in await lb.loads()}
    assert loads == {"a": AgentHealth.HEALTHY, "plain": AgentHealth.HEALTHY}


async def test_each_agent_is_probed_once_per_jittered_interval(clock: FakeClock) -> None:
    """Probes come one interval apart give or take 10%, never twice within 0.9 interval."""
    probe = FakeProbe()
    _, scheduler = await _setup(clock, probe, _engine("a"), interval_s=5.0)
    times = []
    for _ in range(200):  # 40 s in 0.2 s steps
        before = len(probe.calls)
        await _tick(scheduler)
        if len(probe.calls) > before:
            times.append(clock())
        clock.advance(0.2)

    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 7 <= len(times) <= 9
    assert all(4_400 <= gap <= 5_800 for gap in gaps), gaps
    assert len(set(gaps)) > 1  # jittered, not in lockstep


async def test_jitter_spreads_agents_registered_together(clock: FakeClock) -> None:
    """Agents probed together at first no longer arrive in the same tick after a few rounds."""
    probe = FakeProbe()
    fleet = [_engine(f"a{n}") for n in range(20)]
    _, scheduler = await _setup(clock, probe, *fleet, interval_s=1.0, tick_s=0.05)
    ticks_with_probes = 0
    for _ in range(200):  # 10 s in 50 ms steps
        before = len(probe.calls)
        await _tick(scheduler)
        ticks_with_probes += len(probe.calls) > before
        clock.advance(0.05)

    assert ticks_with_probes > 40  # in lockstep it would be 10


@pytest.mark.parametrize("engine", [Engine.OLLAMA, Engine.VLLM, Engine.SGLANG, Engine.HTTP])
async def test_the_full_pass_comes_first_and_every_nth(clock: FakeClock, engine: Engine) -> None:
    """The full pass (/api/tags, /metrics) is the first probe and every full_every-th after."""
    probe = FakeProbe()
    _, scheduler = await _setup(clock, probe, _engine("o", engine), interval_s=1.0, full_every=3)
    for _ in range(7):
        await _tick(scheduler)
        clock.advance(1.2)

    assert [full for _, full in probe.calls] == [True, False, False, True, False, False, True]


async def test_probes_are_bounded_by_the_semaphore(clock: FakeClock) -> None:
    """No more than ``concurrency`` probes run at once, whatever the fleet."""
    probe = FakeProbe()
    probe.gate = asyncio.Event()
    fleet = [_engine(f"a{n}") for n in range(10)]
    _, scheduler = await _setup(clock, probe, *fleet, concurrency=3)

    started = await scheduler.tick()
    for _ in range(5):
        await asyncio.sleep(0)
    assert probe.running == 3
    probe.gate.set()
    await asyncio.gather(*started)

    assert probe.most_running == 3
    assert len(probe.calls) == 10


async def test_a_probe_that_never_answers_fails_with_a_timeout(clock: FakeClock) -> None:
    """A hung probe is cut at the timeout and counted as a failure naming it."""
    probe = FakeProbe()
    probe.gate = asyncio.Event()  # never set: the probe hangs
    lb, scheduler = await _setup(clock, probe, _engine("a"), timeout_s=0.01)

    await _tick(scheduler)

    (load,) = await lb.loads(["a"])
    assert (load.health, load.health_reason) == (
        AgentHealth.UNHEALTHY,
        "probe: timeout after 0.01 s",
    )


async def test_a_self_bounded_probe_is_not_timed_a_second_time(clock: FakeClock) -> None:
    """A probe that bounds itself keeps its own answer even past the scheduler's timeout."""

    async def slow(agent: Agent, full: bool) -> ProbeResult:
        await asyncio.sleep(0.05)  # past timeout_s: it is the probe's to bound, not ours
        return ProbeResult(False, "probe: timeout after 0.5 s")

    lb = balancer(clock)
    scheduler = ProbeScheduler(lb.health, slow, clock=clock, timeout_s=0.01, self_bounded=True)
    await lb.register(_engine("a"))

    await _tick(scheduler)

    (load,) = await lb.loads(["a"])
    assert load.health_reason == "probe: timeout after 0.5 s"


async def test_a_probe_that_raises_is_a_failure_not_a_crash(clock: FakeClock) -> None:
    """An exception a probe lets through becomes a failed probe; probing goes on."""

    async def broken(agent: Agent, full: bool) -> ProbeResult:
        raise ValueError("garbage answer")

    lb = balancer(clock)
    scheduler = ProbeScheduler(lb.health, broken, clock=clock)
    await lb.register(_engine("a"))

    await asyncio.gather(*await scheduler.tick())

    (load,) = await lb.loads(["a"])
    assert load.health_reason == "probe: ValueError"


async def test_two_replicas_sharing_a_store_probe_each_agent_once(clock: FakeClock) -> None:
    """With one store, the claim lets only one of two schedulers probe an agent per interval."""
    store = MemoryStore(epoch="test")
    probes = [FakeProbe(), FakeProbe()]
    schedulers = []
    for n, probe in enumerate(probes):
        lb = balancer(clock, store=store, seed=n)
        schedulers.append(ProbeScheduler(lb.health, probe, clock=clock, interval_s=5.0))
    await lb.register(_engine("a"))

    for _ in range(50):  # 10 s
        for scheduler in schedulers:
            await _tick(scheduler)
        clock.advance(0.2)

    total = len(probes[0].calls) + len(probes[1].calls)
    assert 2 <= total <= 3  # once per interval between them, not once per replica


async def test_heartbeats_are_swept_even_without_a_prober(clock: FakeClock) -> None:
    """A scheduler with no probe still marks a silent heartbeat agent unhealthy."""
    lb = balancer(clock)
    scheduler = ProbeScheduler(lb.health, None, clock=clock)
    await lb.register(dataclasses.replace(agent("hb"), heartbeat_ttl_ms=2_000))

    clock.advance(3)
    assert await scheduler.tick() == []

    (load,) = await lb.loads(["hb"])
    assert (load.health, load.health_reason) == (AgentHealth.UNHEALTHY, "heartbeat missed for 3 s")


async def test_stop_cancels_probes_in_flight(clock: FakeClock) -> None:
    """Stopping the scheduler ends its task and the probes still waiting for an answer."""
    probe = FakeProbe()
    probe.gate = asyncio.Event()
    _, scheduler = await _setup(clock, probe, _engine("a"), tick_s=0.01)
    scheduler.start()
    for _ in range(100):  # hand the loop to the scheduler's task until it probes
        if probe.calls:
            break
        await asyncio.sleep(0)
    assert probe.calls

    await scheduler.stop()

    assert probe.running == 0


async def test_models_an_agent_reports_fill_a_registration_without_any(clock: FakeClock) -> None:
    """An Ollama agent registered with no models gets the ones its full probe lists."""

    async def tags(agent: Agent, full: bool) -> ProbeResult:
        return ProbeResult(True, models=("llama3:8b", "qwen2:7b") if full else None)

    lb = balancer(clock)
    scheduler = ProbeScheduler(lb.health, tags, clock=clock)
    await lb.register(dataclasses.replace(agent("o", models=()), engine=Engine.OLLAMA))
    await lb.register(dataclasses.replace(agent("declared"), engine=Engine.OLLAMA))

    await asyncio.gather(*await scheduler.tick())

    registry = await lb.health.store.agents()
    assert registry["o"].models == ("llama3:8b", "qwen2:7b")
    assert registry["declared"].models == ("llama3:8b",)  # a declared list is kept as is


async def test_a_deregistered_agent_is_no_longer_probed(clock: FakeClock) -> None:
    """Once an agent leaves the registry the scheduler forgets it; back again, it is new."""
    probe = FakeProbe()
    lb, scheduler = await _setup(clock, probe, _engine("a"), interval_s=5.0)
    await _tick(scheduler)
    await lb.deregister("a")
    clock.advance(6)
    await _tick(scheduler)
    assert probe.calls == [("a", True)]

    await lb.register(_engine("a"))
    await _tick(scheduler)  # at once, as a new agent

    assert probe.calls == [("a", True), ("a", True)]  # a first probe again: the full pass


async def test_a_dead_replicas_claims_lapse_and_another_probes(clock: FakeClock) -> None:
    """When the replica that held an agent's probe stops, another probes it within an interval."""
    store = MemoryStore(epoch="test")
    first, second = FakeProbe(), FakeProbe()
    lb = balancer(clock, store=store)
    dying = ProbeScheduler(lb.health, first, clock=clock, interval_s=5.0)
    await lb.register(_engine("a"))
    await _tick(dying)  # claims and probes "a"; then its process dies
    survivor = ProbeScheduler(
        balancer(clock, store=store, seed=2).health, second, clock=clock, interval_s=5.0
    )

    died_at = clock()
    for _ in range(100):  # 20 s at most
        await _tick(survivor)
        if second.calls:
            break
        clock.advance(0.2)

    assert first.calls == [("a", True)]
    assert second.calls == [("a", True)]  # the survivor's first probe of it
    assert clock() - died_at <= 5_000  # one interval


async def _look(scheduler: ProbeScheduler) -> int:
    """One look at the due heap; how many probes it started (run to the end)."""
    started = await scheduler.look()
    await asyncio.gather(*started)
    return len(started)


async def test_an_agent_registered_between_ticks_is_probed_at_the_next_look(
    clock: FakeClock,
) -> None:
    """A look (1/20 interval) notices a new engine agent without waiting for the next tick."""
    probe = FakeProbe()
    lb, scheduler = await _setup(clock, probe, interval_s=1.0)
    await _tick(scheduler)
    await lb.register(_engine("late"))

    assert await _look(scheduler) == 1
    assert probe.calls == [("late", True)]


async def test_looks_start_probes_in_a_trickle_not_in_bursts(clock: FakeClock) -> None:
    """Once the jitter has spread them, each look starts a small share of the fleet's probes."""
    probe = FakeProbe()
    fleet = [_engine(f"a{n}") for n in range(100)]
    _, scheduler = await _setup(clock, probe, *fleet, interval_s=1.0)
    await _tick(scheduler)  # the start-up round: every agent at once
    per_look = []
    for _ in range(200):  # 10 s of looks at 1/20 interval
        clock.advance(0.05)
        per_look.append(await _look(scheduler))

    assert 900 <= sum(per_look) <= 1100  # about one probe per agent per interval
    assert max(per_look[60:]) <= 30  # a burst would be the whole fleet in one look


async def test_an_engine_removed_or_added_by_registering_again(clock: FakeClock) -> None:
    """Registered again without an engine an agent is no longer probed; with one, it is again."""
    probe = FakeProbe()
    lb, scheduler = await _setup(clock, probe, _engine("a"), interval_s=1.0)
    await _tick(scheduler)
    await lb.register(agent("a"))
    for _ in range(40):
        clock.advance(0.05)
        await _tick(scheduler)
    assert probe.calls == [("a", True)]

    await lb.register(_engine("a"))
    await _tick(scheduler)

    assert probe.calls == [("a", True), ("a", True)]
