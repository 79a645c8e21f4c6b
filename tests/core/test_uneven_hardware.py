"""Uneven hardware: weighed loads, capacity draws, bounded stickiness, bounded exploration."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from lb_service.balancer import LoadBalancer
from lb_service.model import Agent, Compute, StrategyName, Task
from tests.factories import BASE_RULES, FakeClock, agent, balancer

LEAST = StrategyName.LEAST_CONNECTIONS


def gpu(
    agent_id: str, vram_gb: float = 24.0, *, parallel_slots: int = 0, max_connections: int = 0
) -> Agent:
    """A GPU agent (four slots guessed unless parallel_slots or max_connections say otherwise)."""
    return agent(
        agent_id,
        vram_gb=vram_gb,
        gpu="nvidia",
        parallel_slots=parallel_slots,
        max_connections=max_connections,
    )


async def teach(lb: LoadBalancer, clock: FakeClock, agent_id: str, count: int, ms: int) -> None:
    """Run ``count`` requests of ``ms`` each, one after the other, so the agent is measured."""
    for _ in range(count):
        request_id = await lb.start(agent_id)
        clock.advance(ms / 1000)
        await lb.end(agent_id, ms, request_id=request_id)


async def test_a_request_on_a_cpu_host_weighs_more_than_three_on_a_gpu() -> None:
    """Full scan by relative load: a 4-slot GPU holding 3 requests beats an idle CPU host."""
    lb = balancer()
    await lb.register(gpu("gpu"))
    await lb.register(agent("cpu"))
    for _ in range(3):
        await lb.start("gpu")
    assert (await lb.select()).agent.id == "gpu"


async def test_declared_parallel_slots_weigh_the_load() -> None:
    """Of two equal GPUs, the one declared with 8 slots takes a request while it holds one more.

    With its slots guessed (4, as the other's) its fifth request would queue: 6/4 > 5/4.
    """
    lb = balancer()
    await lb.register(gpu("guessed"))
    await lb.register(gpu("declared", parallel_slots=8))
    for name, count in (("guessed", 4), ("declared", 5)):
        for _ in range(count):
            await lb.start(name)
    assert (await lb.select()).agent.id == "declared"
    await lb.register(gpu("declared"))  # the declaration withdrawn: the guess again
    assert (await lb.select()).agent.id == "guessed"


async def test_two_choices_are_drawn_in_proportion_to_capacity() -> None:
    """With one GPU among nine CPU hosts, P2C compares the GPU in nearly every pick."""
    lb = balancer(config=replace(BASE_RULES, choice_count=2))
    await lb.register(gpu("gpu"))
    for n in range(9):
        await lb.register(agent(f"cpu-{n}"))
    picks = Counter([(await lb.select()).agent.id for _ in range(400)])
    # Uniform draws would compare the GPU in a fifth of the picks only.
    assert picks["gpu"] > 0.9 * 400


async def test_learned_capacity_replaces_the_hardware_guess() -> None:
    """A GPU measured slower than a CPU host loses to it once both are trusted."""
    clock = FakeClock()
    lb = balancer(clock)
    await lb.register(gpu("gpu", parallel_slots=4))
    await lb.register(agent("cpu"))
    await teach(lb, clock, "gpu", 3, 10_000)  # 10 s per request on each of 4 slots
    await teach(lb, clock, "cpu", 3, 1_000)  # 1 s per request on its one slot
    loads = {load.agent_id: load.capacity_rps for load in await lb.loads()}
    assert loads == {"gpu": 0.4, "cpu": 1.0}
    assert (await lb.select()).agent.id == "cpu"


async def test_sticky_session_spills_over_past_its_bound_and_keeps_its_binding() -> None:
    """A session's agent answers while within 2x its share, then spills over, then answers again."""
    lb = balancer(config=replace(BASE_RULES, balance_factor=2.0))
    for agent_id in ("a", "b", "c", "d"):
        await lb.register(agent(agent_id))
    bound = (await lb.select(session_id="chat")).agent.id
    others = [i for i in ("a", "b", "c", "d") if i != bound]
    # Four equal agents: with the new request n + 1 are open, a share of (n + 1) / 4,
    # so the bound agent may hold ceil((n + 1) / 2) of them.
    request = await lb.start(bound)
    await lb.start(others[0])
    again = await lb.select(session_id="chat")  # 2 on it of 3: within ceil(1.5)
    assert (again.agent.id, again.sticky) == (bound, True)
    await lb.start(bound)
    spilled = await lb.select(session_id="chat")  # 3 on it of 4: over ceil(2)
    assert spilled.agent.id != bound
    assert not spilled.sticky
    await lb.end(bound, 10, request_id=request)
    back = await lb.select(session_id="chat")
    assert (back.agent.id, back.sticky) == (bound, True)  # the binding stayed


async def test_a_session_spills_from_a_queued_slow_agent_within_its_load_bound() -> None:
    """Within its load share but queued at over 3x a big host's time, the session spills over.

    A one-slot host measured at 10 s a request, a session bound to it, and an 8-slot
    host at 1 s holding 30 requests. With one request open on the slow host its share
    of the 32 open still allows another (ceil(3 x 32 x 0.1 / 8.1) = 2), but that
    request would wait for the slot and take twice 10 s there, against 2.5 s on the
    big host. Once the slow host's slot is free it answers the session again.
    """
    clock = FakeClock()
    lb = balancer(clock)
    await lb.register(agent("slow", parallel_slots=1))
    await teach(lb, clock, "slow", 3, 10_000)
    first = await lb.select(session_id="chat", acquire=True)  # the only agent: bound to it
    await lb.end("slow", 10_000, request_id=first.request_id)
    await lb.register(gpu("big", parallel_slots=8))
    await teach(lb, clock, "big", 3, 1_000)
    for _ in range(30):
        await lb.start("big")
    queued = await lb.start("slow")

    spilled = await lb.select(session_id="chat")
    assert (spilled.agent.id, spilled.sticky) == ("big", False)
    await lb.end("slow", 10_000, request_id=queued)
    back = await lb.select(session_id="chat")
    assert (back.agent.id, back.sticky) == ("slow", True)  # the binding stayed


async def test_untrusted_agent_is_explored_one_request_at_a_time() -> None:
    """A new agent holds one request until the measured one is 3x its guess, then its two slots."""
    clock = FakeClock()
    lb = balancer(clock)
    await lb.register(gpu("old", parallel_slots=1))
    await teach(lb, clock, "old", 3, 1000)
    # Guessed at sqrt(12 / 24) of old's speed a slot: 1.41x old's service time.
    await lb.register(gpu("new", vram_gb=12, parallel_slots=2))
    picks = [(await lb.select(acquire=True)).agent.id for _ in range(7)]
    # On old a request takes 1x, 2x, 3x...: 5x is the first over 3 x 1.41x.
    assert picks == ["new", "old", "old", "old", "old", "new", "old"]


async def test_a_released_agent_never_takes_more_than_its_guessed_slots() -> None:
    """A new 80 GB GPU guessed far faster than two measured CPU hosts takes four requests only."""
    clock = FakeClock()
    lb = balancer(clock)
    await lb.register(agent("cpu-1"))
    await lb.register(agent("cpu-2"))
    await teach(lb, clock, "cpu-1", 3, 1000)
    await teach(lb, clock, "cpu-2", 3, 1000)
    await lb.register(gpu("new", vram_gb=80))  # four slots guessed
    picks = [(await lb.select(acquire=True)).agent.id for _ in range(6)]
    assert picks == ["new"] * 4 + ["cpu-1", "cpu-2"]


async def test_latency_based_measures_a_new_agent_without_sending_it_everything() -> None:
    """Unmeasured agents go first, but only one request each while measured ones are not slow."""
    clock = FakeClock()
    lb = balancer(clock, replace(BASE_RULES, peak_ewma=True))
    await lb.set_strategy(StrategyName.LATENCY_BASED)
    await lb.register(gpu("known"))
    await teach(lb, clock, "known", 3, 500)
    await lb.register(agent("cold"))
    picks = Counter([(await lb.select(acquire=True)).agent.id for _ in range(10)])
    assert picks == {"cold": 1, "known": 9}


async def test_capability_match_sends_no_gpu_task_to_a_cpu_host_for_its_small_vram() -> None:
    """A task without a VRAM need goes by relative load, not to the CPU host with 0 GB."""
    lb = balancer()
    await lb.set_strategy(StrategyName.CAPABILITY_MATCH)
    await lb.register(agent("cpu"))
    await lb.register(gpu("gpu"))
    assert (await lb.select()).agent.id == "gpu"


async def test_capability_match_fills_the_smallest_fit_up_to_its_bound_then_the_next() -> None:
    """A 16 GB task goes to the 24 GB card until it holds twice its share, then to the 80 GB one."""
    lb = balancer(config=replace(BASE_RULES, balance_factor=2.0))
    await lb.set_strategy(StrategyName.CAPABILITY_MATCH)
    await lb.register(gpu("big", vram_gb=96, max_connections=4))  # guessed 8, 2x the small
    await lb.register(gpu("small", vram_gb=24))  # guessed 4
    task = Task(min_vram_gb=16, compute=Compute.GPU)
    picks = [(await lb.select(task, acquire=True)).agent.id for _ in range(6)]
    # The small card's share of the n + 1 open requests is a third; it may hold twice
    # that, rounded up: 1 of 1, 2 of 2, not 3 of 3, 3 of 4, 4 of 5, not 5 of 6.
    assert picks == ["small", "small", "big", "small", "small", "big"]
