"""Same decisions: a balancer over the Redis store decides exactly as over the memory store.

Every rule is written once, in Python; the Redis store's scripts keep only bookkeeping
and one generic comparison. So one seeded sequence of registrations, selections (with
and without acquire, with sessions), late starts of picks made without acquire (some
within their hold, pending until then, some after it), request ends (successes and
failures, with and without a request id) and sweeps (leases expiring), driven through
two balancers with the same clock and the same seeded random source, one over each
store, must pick the same agents and leave the same loads (GetLoads), records (pending
picks too) and counters after every step, on an uneven fleet (CPU-only hosts and GPUs
of different VRAM), under each load-ranked strategy with the default options (two
choices, peak-EWMA, picks without acquire held for 1 s).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.capacity import TRUST_COMPLETIONS
from lb_service.errors import LoadBalancerError
from lb_service.model import Agent, Compute, StrategyName, Task
from lb_service.store.memory import MemoryStore
from lb_service.store.redis import RedisStore
from lb_service.store.roles import Store
from tests.factories import FakeClock, agent
from tests.store.conftest import EPOCH, drop_keys

SMALL = Task(model="llama3:8b")
LARGE = Task(model="llama3:70b")
TASKS = (SMALL, SMALL, SMALL, LARGE, Task(compute=Compute.GPU), Task(min_vram_gb=20.0))

#: The fleet: CPU-only hosts (two of them peers) and GPUs of 8, 24 and 80 GB, with and
#: without a limit, with slot counts declared (parallel_slots) and guessed. Each has its
#: typical latency, and "cpu-flaky" fails most requests (it is ejected).
FLEET: dict[str, tuple[Agent, float, float]] = {
    "cpu-1": (agent("cpu-1", parallel_slots=2), 4_000.0, 0.05),
    # cpu-1's twin (a peer: the same machine), slower: each reads the other's figures.
    "cpu-2": (agent("cpu-2", parallel_slots=2), 6_000.0, 0.05),
    "cpu-flaky": (agent("cpu-flaky"), 3_000.0, 0.85),
    "gpu-8": (agent("gpu-8", vram_gb=8.0, gpu="RTX 3070", parallel_slots=1), 900.0, 0.05),
    "gpu-24": (
        agent(
            "gpu-24",
            vram_gb=24.0,
            gpu="RTX 4090",
            models=("llama3:8b", "llama3:70b"),
            max_connections=3,
        ),
        400.0,
        0.02,
    ),
    "gpu-80": (
        agent("gpu-80", vram_gb=80.0, gpu="A100", models=("llama3:8b", "llama3:70b")),
        250.0,
        0.02,
    ),
}
#: Registered later in the run, so a newcomer is explored among trusted agents.
LATE = "gpu-24b"
LATE_AGENT = agent("gpu-24b", vram_gb=24.0, gpu="RTX 4090", models=("llama3:8b", "llama3:70b"))


@dataclass(frozen=True)
class Started:
    """A late start's answer: the agent, its pending picks just before, the lease's id."""

    agent_id: str
    pending: int
    request_id: str


@dataclass
class Run:
    """A balancer over one store, with the clock it runs on and its open leases."""

    store: Store
    config: BalancerConfig
    seed: int
    clock: FakeClock = field(default_factory=FakeClock)
    leases: list[tuple[str, str]] = field(default_factory=list)
    #: Agents picked without acquire whose start is not reported yet, oldest first.
    picks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lb = LoadBalancer(
            self.store, self.config, clock=self.clock, rng=random.Random(self.seed)
        )

    async def select(self, task: Task, session_id: str, acquire: bool) -> object:
        """Select; the answer is the agent, stickiness and lease, or the refusal's kind."""
        try:
            chosen = await self.lb.select(task, session_id=session_id, acquire=acquire)
        except LoadBalancerError as refusal:
            return type(refusal).__name__
        if chosen.request_id:
            self.leases.append((chosen.agent.id, chosen.request_id))
        else:
            self.picks.append(chosen.agent.id)
        return (chosen.agent.id, chosen.sticky, chosen.request_id)

    async def start(self, index: int) -> Started:
        """Report the start of a pick made earlier (the ``index``-th still unreported)."""
        agent_id = self.picks.pop(index)
        pending = (await self.store.stats())[agent_id].pending
        request_id = await self.lb.start(agent_id)
        self.leases.append((agent_id, request_id))
        return Started(agent_id, pending, request_id)

    async def state(self) -> tuple[object, ...]:
        """Everything to compare after a step: loads, records, counters, sessions, leases."""
        statistics = await self.lb.statistics()
        return (
            await self.lb.loads(),
            dict(await self.store.stats()),
            replace(statistics, selections_by_agent=dict(statistics.selections_by_agent)),
            await self.lb.session_count(),
            dict(await self.store.leases()),
            dict((await self.store.pick_state("")).ejections),
        )


async def step(runs: list[Run], rng: random.Random, number: int) -> list[object]:
    """One seeded step, applied to every run alike; returns each run's answer."""
    roll = rng.random()
    advance_ms = rng.choice([0, 1, 5, 40, 250, 1_500])
    for run in runs:
        run.clock.now_ms += advance_ms
    if number == 150:
        for run in runs:
            await run.lb.register(LATE_AGENT)  # answers nothing; a refusal raises
        return [None] * len(runs)
    if number == 300:
        for run in runs:
            await run.lb.deregister("gpu-8")
        return [None] * len(runs)
    if roll < 0.03:
        # A burst: the GPUs fill up and the slow hosts get their share.
        return [[await run.select(SMALL, "", True) for _ in range(10)] for run in runs]
    if roll < 0.42:
        task = rng.choice(TASKS)
        session_id = f"session-{rng.randrange(6)}" if rng.random() < 0.4 else ""
        acquire = rng.random() < 0.8
        return [await run.select(task, session_id, acquire) for run in runs]
    if roll < 0.48:
        # A start reported late for a pick made without acquire (pending until its hold ends).
        if not runs[0].picks:
            return [None] * len(runs)
        index = rng.randrange(len(runs[0].picks))
        return [await run.start(index) for run in runs]
    if roll < 0.85:
        leases = runs[0].leases
        if not leases:
            return [None, None]
        index = rng.randrange(len(leases))
        agent_id = leases[index][0]
        _, typical, failure_rate = FLEET.get(agent_id, (LATE_AGENT, 500.0, 0.02))
        latency = round(typical * rng.uniform(0.5, 2.0), 3)
        failed = rng.random() < failure_rate
        by_id = rng.random() < 0.85
        answers: list[object] = []
        for run in runs:
            held_agent, request_id = run.leases.pop(index)
            await run.lb.end(held_agent, latency, request_id if by_id else "", failed=failed)
            if not by_id:
                # The agent's oldest lease closed instead: forget that one, keep this one.
                open_ids = await run.store.leases()
                run.leases.append((held_agent, request_id))
                run.leases = [entry for entry in run.leases if entry[1] in open_ids]
            answers.append(None)
        return answers
    if roll < 0.92:
        # A failure reported without a lease (a dispatcher's own time-out, say).
        agent_id = rng.choice(["cpu-flaky", "cpu-flaky", "cpu-1", "gpu-80"])
        for run in runs:
            await run.lb.end(agent_id, 5_000.0, failed=True)
        return [None] * len(runs)
    # A sweep, sometimes late enough that the oldest leases expire.
    late_ms = rng.choice([0, 0, int(runs[0].config.request_timeout_s * 1000) // 2])
    answers = []
    for run in runs:
        run.clock.now_ms += late_ms
        answers.append(await run.lb.sweep())
        open_ids = await run.store.leases()
        run.leases = [entry for entry in run.leases if entry[1] in open_ids]
    return answers


@pytest.fixture
async def redis_store(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisStore]:
    """A Redis store of this test's own prefix."""
    store = RedisStore(redis_url, prefix=redis_prefix, epoch=EPOCH)
    yield store
    await store.close()
    await drop_keys(redis_url, redis_prefix)


@pytest.mark.parametrize("seed", [3, 9])
@pytest.mark.parametrize(
    "strategy",
    [StrategyName.LEAST_CONNECTIONS, StrategyName.LATENCY_BASED, StrategyName.CAPABILITY_MATCH],
)
async def test_same_sequence_same_decisions(
    redis_store: RedisStore, strategy: StrategyName, seed: int
) -> None:
    """Every pick, refusal, load, record and counter agrees after every step."""
    # The defaults (each strategy's own choice count: least-connections every agent,
    # latency-based two; peak-EWMA), with a request timeout short enough to expire.
    config = BalancerConfig(request_timeout_s=20.0)
    assert config.choice_count is None
    runs = [Run(MemoryStore(epoch=EPOCH), config, seed), Run(redis_store, config, seed)]
    for run in runs:
        await run.lb.set_strategy(strategy)
        for registered, _, _ in FLEET.values():
            await run.lb.register(registered)
    rng = random.Random(seed)
    picked: set[str] = set()
    expired = ejected = sticky = confirmed = late = 0
    for number in range(450):
        answers = await step(runs, rng, number)
        assert answers[1] == answers[0], f"step {number}"
        memory, shared = [await run.state() for run in runs]
        assert shared == memory, f"step {number}"
        for answer in answers[0] if isinstance(answers[0], list) else [answers[0]]:
            if isinstance(answer, tuple) and isinstance(answer[0], str):
                picked.add(answer[0])
                sticky += answer[1]
            if isinstance(answer, tuple) and isinstance(answer[0], int):
                expired += answer[0]
            if isinstance(answer, Started):
                confirmed += answer.pending > 0  # a start within a pending pick's hold
                late += answer.pending == 0  # a start after its hold ended
        ejected += bool(memory[-1])
    # The run met what it is meant to: GPUs of every size picked, learned capacities,
    # sticky sessions, expired leases, ejections, and starts both within a pick's hold
    # (confirming it) and after it.
    stats = await runs[0].store.stats()
    assert {"gpu-8", "gpu-24", "gpu-80", LATE} <= picked
    assert sum(s.completions >= TRUST_COMPLETIONS for s in stats.values()) >= 3
    assert sticky > 0
    assert expired > 0
    assert ejected > 0
    assert confirmed > 0
    assert late > 0


#: Model names as users write them: spaces, separators and percent signs included.
EMBED = "nomic embed,v1.5"
CHAT = "llama3.2:3b; chat 100%"
#: Two agents with different model mixes (model, latency ms, requests): "cpu" answers
#: mostly embeddings fast, so its average request is short, yet a chat request takes it
#: seconds; "gpu" serves chat fast and embeddings slowly (another model holds its memory).
MIXES: dict[str, tuple[tuple[str, float, int], ...]] = {
    "cpu": ((EMBED, 80.0, 12), (CHAT, 1_500.0, 3)),
    "gpu": ((CHAT, 400.0, 12), (EMBED, 600.0, 3)),
}
CORES = {"cpu": 4, "gpu": 16}


@pytest.mark.parametrize(
    "strategy",
    [StrategyName.LEAST_CONNECTIONS, StrategyName.LATENCY_BASED, StrategyName.CAPABILITY_MATCH],
)
async def test_model_costs_decide_alike(
    redis_store: RedisStore, redis_url: str, redis_prefix: str, strategy: StrategyName
) -> None:
    """Agents learn each model's cost from ends alike in both stores, and picks per model agree.

    Leases carry their model (started with one, or picked for a task's model), ends fold
    into the lease's model (by request id, and the agent's oldest lease without one),
    some reported through a second replica that did not open the lease. Then the task's
    model decides: chat goes to "gpu", embeddings to "cpu" (a request naming no model
    goes by the agents' usual mixes). If the Redis store lost a lease's model, its
    figures and these picks would differ.
    """
    config = BalancerConfig()
    runs = [Run(MemoryStore(epoch=EPOCH), config, 5), Run(redis_store, config, 5)]
    other = RedisStore(redis_url, prefix=redis_prefix, epoch=EPOCH)
    # Another replica over the same prefix: it did not open the leases it ends.
    reporters = [runs[0].lb, LoadBalancer(other, config, clock=runs[1].clock)]
    try:
        for run in runs:
            await run.lb.set_strategy(strategy)
            for agent_id in MIXES:
                # Two slots: both requests _serve starts at once find one free, so both teach.
                # Different machines (cores), so neither reads the other as a peer.
                await run.lb.register(
                    agent(
                        agent_id, models=(EMBED, CHAT), parallel_slots=2, cpu_cores=CORES[agent_id]
                    )
                )
        for number in range(12):
            for agent_id, mix in MIXES.items():
                due = [(model, latency) for model, latency, count in mix if number < count]
                await _serve(runs, reporters, agent_id, due, by_id=number % 3 != 2)
                await _same_state(runs, f"round {number}")
        picked: dict[str, set[str]] = {}
        for number in range(6):
            for model in (CHAT, EMBED, ""):
                answers = [await run.select(Task(model=model), "", True) for run in runs]
                assert answers[1] == answers[0], f"pick {number} of {model!r}"
                await _same_state(runs, f"pick {number} of {model!r}")
                pick = answers[0]
                assert isinstance(pick, tuple), f"pick {number} of {model!r} refused: {pick}"
                agent_id = str(pick[0])
                picked.setdefault(model, set()).add(agent_id)
                latency = {m: ms for m, ms, _ in MIXES[agent_id]}.get(model, 100.0)
                for run, reporter in zip(runs, reporters, strict=True):
                    run.clock.now_ms += 5
                    held, request_id = run.leases.pop()
                    await (reporter if number % 2 else run.lb).end(held, latency, request_id)
                await _same_state(runs, f"end {number} of {model!r}")
        # The model decided: one fleet, one load, a different agent per model.
        assert (picked[CHAT], picked[EMBED]) == ({"gpu"}, {"cpu"})
    finally:
        await other.close()


async def _serve(
    runs: list[Run],
    reporters: list[LoadBalancer],
    agent_id: str,
    due: list[tuple[str, float]],
    *,
    by_id: bool,
) -> None:
    """Start a request per (model, latency) on the agent, then end them in turn, oldest first."""
    for run, reporter in zip(runs, reporters, strict=True):
        held = [await run.lb.start(agent_id, model) for model, _ in due]
        for n, ((_, latency), request_id) in enumerate(zip(due, held, strict=True)):
            run.clock.now_ms += round(latency)
            # Every other end through the other replica; the oldest lease when not by id.
            lb = reporter if n % 2 else run.lb
            await lb.end(agent_id, latency, request_id if by_id else "")


async def _same_state(runs: list[Run], where: str) -> None:
    """Both runs hold the same loads, records, counters, sessions, leases and ejections."""
    memory, shared = [await run.state() for run in runs]
    assert shared == memory, where
