"""The health monitor over a memory store: transitions logged once, counted, seen by watchers."""

from __future__ import annotations

import dataclasses
import math

import pytest
from structlog.testing import capture_logs

from lb_service.balancer import LoadBalancer
from lb_service.errors import AgentNotFound, StoreUnavailable
from lb_service.health import ProbeResult, state
from lb_service.health.state import HEALTHY_RECORD, HealthRecord
from lb_service.model import AgentHealth, Engine, LoadReport, Task
from lb_service.store.base import HealthWrite
from lb_service.store.memory import MemoryStore
from tests.factories import FakeClock, agent, balancer

REFUSED = ProbeResult(False, "probe: connection refused", 0.01)
ANSWERED = ProbeResult(True, "", 0.01)


class Recorder:
    """A health observer that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def health_changed(self, agent_id: str, previous: AgentHealth, health: AgentHealth) -> None:
        self.events.append(("changed", agent_id, previous.value, health.value))

    def probe_finished(self, agent_id: str, result: ProbeResult) -> None:
        self.events.append(("probe", agent_id, result.reason))

    def heartbeat_missed(self, agent_id: str) -> None:
        self.events.append(("missed", agent_id))

    def panic_changed(self, panicking: bool) -> None:
        self.events.append(("panic", str(panicking)))

    def agent_deregistered(self, agent_id: str) -> None:
        self.events.append(("expired", agent_id))


@pytest.fixture
def clock() -> FakeClock:
    """A clock that moves only when told."""
    return FakeClock()


@pytest.fixture
def lb(clock: FakeClock) -> LoadBalancer:
    """A balancer over a memory store whose health monitor probes and reports to a Recorder."""
    made = balancer(clock)
    made.health.observer = Recorder()
    made.health.probing = True
    return made


def _events(lb: LoadBalancer) -> list[tuple[str, ...]]:
    observer = lb.health.observer
    assert isinstance(observer, Recorder)
    return observer.events


async def _health(lb: LoadBalancer, agent_id: str) -> tuple[AgentHealth, str]:
    (load,) = await lb.loads([agent_id])
    return load.health, load.health_reason


async def test_a_registered_engine_agent_waits_for_its_first_probe(lb: LoadBalancer) -> None:
    """While probing, a new engine agent is unhealthy (not probed yet) until a probe answers."""
    await lb.register(dataclasses.replace(agent("a"), engine=Engine.OLLAMA))

    assert await _health(lb, "a") == (AgentHealth.UNHEALTHY, "probe: not probed yet")
    await lb.health.probed("a", ANSWERED)
    assert await _health(lb, "a") == (AgentHealth.HEALTHY, "")


async def test_without_a_prober_engine_agents_stay_healthy(clock: FakeClock) -> None:
    """A server without a prober keeps today's behaviour: an engine agent is healthy, not probed."""
    lb = balancer(clock)
    await lb.register(dataclasses.replace(agent("a"), engine=Engine.VLLM))

    assert await _health(lb, "a") == (AgentHealth.HEALTHY, "")


async def test_each_transition_is_one_log_line_and_one_metric(lb: LoadBalancer) -> None:
    """Three failures after start-up log one agent_health_changed line and count one change."""
    await lb.register(dataclasses.replace(agent("a"), engine=Engine.OLLAMA))
    await lb.health.probed("a", ANSWERED)
    with capture_logs() as logs:
        for _ in range(4):
            await lb.health.probed("a", REFUSED)

    changes = [line for line in logs if line["event"] == "agent_health_changed"]
    assert changes == [
        {
            "event": "agent_health_changed",
            "log_level": "warning",
            "agent_id": "a",
            "health": "unhealthy",
            "previous": "healthy",
            "reason": "probe: connection refused",
        }
    ]
    assert [e for e in _events(lb) if e[0] == "changed"] == [
        ("changed", "a", "unhealthy", "healthy"),
        ("changed", "a", "healthy", "unhealthy"),
    ]
    assert [e for e in _events(lb) if e[0] == "probe"][-1] == ("probe", "a", REFUSED.reason)


async def test_a_transition_wakes_watchers(lb: LoadBalancer) -> None:
    """A change of health moves the store version, so WatchLoads sends an update."""
    store = lb._store
    await lb.register(dataclasses.replace(agent("a"), engine=Engine.OLLAMA))
    before = store.version()

    await lb.health.probed("a", ANSWERED)

    assert store.version() != before


async def test_heartbeat_of_an_unknown_agent_says_to_register_again(lb: LoadBalancer) -> None:
    """A heartbeat for an agent that is not registered is AgentNotFound telling it to register."""
    with pytest.raises(AgentNotFound, match="register it again"):
        await lb.health.heartbeat("ghost")
    assert await lb.health.store.health() == {}


async def test_missed_heartbeat_then_expiry(lb: LoadBalancer, clock: FakeClock) -> None:
    """Silent past its TTL an agent is unhealthy; past TTL plus agent-expiry it is deregistered."""
    await lb.register(dataclasses.replace(agent("hb"), heartbeat_ttl_ms=30_000))
    clock.advance(31.5)
    agents = await lb.health.store.agents()
    with capture_logs() as logs:
        assert await lb.health.sweep(agents) == []

    assert await _health(lb, "hb") == (AgentHealth.UNHEALTHY, "heartbeat missed for 31 s")
    assert [line["reason"] for line in logs] == ["heartbeat missed for 31 s"]
    assert ("missed", "hb") in _events(lb)

    await lb.health.heartbeat("hb")
    assert await _health(lb, "hb") == (AgentHealth.HEALTHY, "")

    clock.advance(30 + 300 + 1)  # the TTL, the default agent expiry, and a moment
    with capture_logs() as logs:
        assert await lb.health.sweep(await lb.health.store.agents()) == ["hb"]
    assert "hb" not in await lb.health.store.agents()
    assert logs[-1] == {
        "event": "agent_expired",
        "log_level": "warning",
        "agent_id": "hb",
        "reason": "no heartbeat for 331 s",
    }
    with pytest.raises(AgentNotFound):
        await lb.health.heartbeat("hb")


async def test_drain_answers_open_leases_and_undrain_returns_it(lb: LoadBalancer) -> None:
    """DrainAgent reports the agent's open leases; undrain makes it healthy again."""
    await lb.register(agent("a"))
    await lb.start("a")
    await lb.start("a")

    assert await lb.health.drain("a") == 2
    assert await _health(lb, "a") == (AgentHealth.DRAINING, "drained by admin")
    assert await lb.health.drain("a", undrain=True) == 2
    assert await _health(lb, "a") == (AgentHealth.HEALTHY, "")


async def test_drain_of_an_unknown_agent_changes_nothing(lb: LoadBalancer) -> None:
    """Draining an id that is not registered is AgentNotFound and writes no record."""
    with pytest.raises(AgentNotFound, match="only registered agents"):
        await lb.health.drain("ghost")
    assert await lb.health.store.health() == {}


async def test_deregistering_forgets_health(lb: LoadBalancer) -> None:
    """A drained agent removed and registered again starts afresh, not draining."""
    await lb.register(agent("a"))
    await lb.health.drain("a")
    await lb.deregister("a")
    await lb.register(agent("a"))

    assert await _health(lb, "a") == (AgentHealth.HEALTHY, "")


async def test_the_sweep_gives_engine_agents_registered_before_probing_a_verdict(
    clock: FakeClock,
) -> None:
    """Agents restored before the prober ran become 'not probed yet' at its first sweep."""
    store = MemoryStore(epoch="test")
    await balancer(clock, store=store).register(dataclasses.replace(agent("a"), engine=Engine.HTTP))
    lb = balancer(clock, store=store)
    lb.health.probing = True

    await lb.health.sweep(await store.agents())

    assert await _health(lb, "a") == (AgentHealth.UNHEALTHY, "probe: not probed yet")


class Racing(MemoryStore):
    """A memory store where another writer changes the record just before each of our writes."""

    def __init__(self, races: int) -> None:
        super().__init__(epoch="test")
        self.races = races

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        if self.races:
            self.races -= 1
            current = await self.health_of(agent_id)
            # The other writer: a heartbeat through another replica.
            await super().put_health(
                agent_id, state.heartbeat(current or HEALTHY_RECORD, 1 + self.races), current
            )
        return await super().put_health(agent_id, record, expected)


async def test_a_write_that_lost_a_race_is_read_again_and_keeps_both_changes(
    clock: FakeClock,
) -> None:
    """A conflicting write is retried over the new record: the drain and the heartbeat both stay."""
    store = Racing(races=2)
    lb = balancer(clock, store=store)
    await lb.register(agent("a"))

    await lb.health.drain("a")

    record = await store.health_of("a")
    assert record is not None
    assert (record.drained, record.heartbeat_at_ms) == (True, 1)


async def test_a_write_that_always_loses_gives_up_as_unavailable(clock: FakeClock) -> None:
    """Under endless contention a change gives up with StoreUnavailable (retry), not a loop."""
    store = Racing(races=100)
    lb = balancer(clock, store=store)
    await lb.register(agent("a"))

    with pytest.raises(StoreUnavailable, match="kept changing"):
        await lb.health.drain("a")


async def test_models_that_would_make_the_agent_invalid_are_ignored(lb: LoadBalancer) -> None:
    """A probe listing an empty model name leaves the registration as it was, with a warning."""
    registered = dataclasses.replace(agent("o", models=()), engine=Engine.OLLAMA)
    await lb.register(registered)

    with capture_logs() as logs:
        await lb.health.models_found(registered, ("llama3:8b", ""))

    assert (await lb.health.store.agents())["o"].models == ()
    assert [line["event"] for line in logs] == ["agent_models_ignored"]


async def test_panic_memory_stays_bounded(lb: LoadBalancer) -> None:
    """Ever new task shapes do not grow the panic memory past its bound; live panics are kept."""
    for n in range(1100):
        lb.health.decided(Task(model=f"m{n}"), n == 0)

    assert lb.health.panicking
    assert len(lb.health._panics) <= 1024


class CountingWrites(MemoryStore):
    """A memory store that counts health writes."""

    def __init__(self) -> None:
        super().__init__(epoch="test")
        self.health_writes = 0

    async def put_health(
        self, agent_id: str, record: HealthRecord, expected: HealthRecord | None
    ) -> HealthWrite:
        self.health_writes += 1
        return await super().put_health(agent_id, record, expected)


@pytest.mark.parametrize("result", [ANSWERED, REFUSED])
async def test_a_steady_agent_s_probes_write_nothing(clock: FakeClock, result: ProbeResult) -> None:
    """Once an agent's counters reach their threshold, the same answer again is not written."""
    store = CountingWrites()
    lb = balancer(clock, store=store)
    lb.health.probing = True
    await lb.register(dataclasses.replace(agent("a"), engine=Engine.VLLM))
    for _ in range(3):  # up to the thresholds (healthy 2, unhealthy 3)
        await lb.health.probed("a", result)
    writes = store.health_writes

    for _ in range(20):
        await lb.health.probed("a", result)

    assert store.health_writes == writes


async def test_a_probe_report_is_kept_and_a_bad_one_dropped_with_one_log_line(
    lb: LoadBalancer,
) -> None:
    """A probe's report is kept; one with a NaN is dropped with one log line, the last kept."""
    await lb.register(agent("a"))
    good = LoadReport(queued_requests=1, running_requests=2)
    await lb.health.probed("a", ProbeResult(True, report=good))
    with capture_logs() as logs:
        await lb.health.probed("a", ProbeResult(True, report=LoadReport(kv_cache_usage=math.nan)))

    (load,) = await lb.loads(["a"])
    assert load.report == good
    ignored = [line for line in logs if line["event"] == "load_report_ignored"]
    assert len(ignored) == 1
    assert ignored[0]["agent_id"] == "a"
    assert "report.kv_cache_usage" in ignored[0]["reason"]
