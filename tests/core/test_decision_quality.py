"""Power of two choices, peak-EWMA, outlier ejection and slow start, through the balancer."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from lb_service.balancer import BalancerConfig, LoadBalancer
from lb_service.decision.pipeline import DecisionInputs
from lb_service.model import StrategyName
from lb_service.strategies import STRATEGIES
from tests.factories import BASE_RULES, FakeClock, agent, balancer

LEAST = StrategyName.LEAST_CONNECTIONS
LATENCY = StrategyName.LATENCY_BASED


async def fleet(lb: LoadBalancer, *ids: str) -> None:
    """Register equal agents."""
    for agent_id in ids:
        await lb.register(agent(agent_id))


async def load(lb: LoadBalancer, agent_id: str, requests: int) -> None:
    """Open ``requests`` leases on the agent."""
    for _ in range(requests):
        await lb.start(agent_id)


async def picks(lb: LoadBalancer, count: int) -> Counter[str]:
    """How often each agent is picked in ``count`` selections that report no load."""
    return Counter([(await lb.select()).agent.id for _ in range(count)])


async def test_p2c_keeps_the_better_of_two_and_never_the_worst() -> None:
    """With loads 0/5/9, two-choice picks never take the busiest, and the idlest wins its pairs."""
    lb = balancer(config=replace(BASE_RULES, choice_count=2))
    await fleet(lb, "a", "b", "c")
    await load(lb, "b", 5)
    await load(lb, "c", 9)
    counts = await picks(lb, 300)
    assert counts["c"] == 0
    # "a" is in two of the three possible pairs and wins both; "b" wins only (b, c).
    assert 150 < counts["a"] < 250
    assert counts["b"] == 300 - counts["a"]


async def test_full_scan_always_takes_the_least_loaded() -> None:
    """choice_count 0 compares every agent, so the idlest is picked every time."""
    lb = balancer(config=replace(BASE_RULES, choice_count=0))
    await fleet(lb, "a", "b", "c")
    await load(lb, "b", 5)
    await load(lb, "c", 9)
    assert await picks(lb, 50) == {"a": 50}


async def test_p2c_samples_only_agents_with_room() -> None:
    """An agent at max_connections is never one of the two compared."""
    lb = balancer(config=replace(BASE_RULES, choice_count=2))
    await lb.register(agent("full", max_connections=1))
    await fleet(lb, "a", "b", "c")
    await load(lb, "full", 1)
    assert "full" not in await picks(lb, 100)


async def test_p2c_spreads_equal_agents_at_random() -> None:
    """Equal idle agents each get a share of two-choice picks, drawn from the seeded source."""
    lb = balancer(config=replace(BASE_RULES, choice_count=2))
    await fleet(lb, "a", "b", "c", "d")
    counts = await picks(lb, 400)
    assert set(counts) == {"a", "b", "c", "d"}
    assert min(counts.values()) > 60


def _inputs(choice_count: int | None) -> DecisionInputs:
    """Decision inputs with nothing in them but ``choice_count``."""
    return DecisionInputs((), {}, {}, {}, LEAST, 0, 0, random.Random(0), choice_count, False, 2.0)


async def test_least_connections_compares_every_agent_by_default() -> None:
    """Out of the box least-connections ranks every agent, so the idlest takes every pick.

    Without pending picks (``pick_hold_s=0``), so the loads stay as set up.
    """
    lb = balancer(config=BalancerConfig(pick_hold_s=0))
    await fleet(lb, "a", "b", "c", "d")
    await load(lb, "b", 3)
    await load(lb, "c", 3)
    await load(lb, "d", 3)
    assert await picks(lb, 50) == {"a": 50}


def test_latency_based_draws_two_by_default_and_the_option_overrides_both() -> None:
    """Left to the strategies, latency-based draws 2 and least-connections all; set, it rules."""
    lc, lat = STRATEGIES[StrategyName.LEAST_CONNECTIONS], STRATEGIES[StrategyName.LATENCY_BASED]
    assert BalancerConfig().choice_count is None
    assert (lc.default_choice_count, lat.default_choice_count) == (0, 2)
    assert _inputs(None).choice_count_for(lat) == 2
    assert _inputs(3).choice_count_for(lc) == 3


def peak(clock: FakeClock, **options: object) -> LoadBalancer:
    """Latency-based with peak-EWMA over a full scan (exact picks)."""
    config = replace(BASE_RULES, peak_ewma=True, ejection_consecutive_failures=0, **options)  # type: ignore[arg-type]  # options of any field; BalancerConfig checks them
    return balancer(clock, config)


async def test_peak_ewma_leaves_a_slowed_agent_at_once_and_returns_as_rivals_fill() -> None:
    """A slow sample moves picks off an agent at once; a busier rival sends them back."""
    clock = FakeClock()
    lb = peak(clock)
    await fleet(lb, "a", "b")
    await lb.set_strategy(LATENCY)
    await lb.end("a", 100.0)
    await lb.end("b", 150.0)
    assert (await lb.select()).agent.id == "a"
    await lb.end("a", 2_000.0)  # "a" slows down: the plain average would still be 630 ms
    assert (await lb.select()).agent.id == "b"
    await load(lb, "b", 13)  # 150 ms x 14 > 2000 ms x 1
    assert (await lb.select()).agent.id == "a"


async def test_peak_ewma_recovers_as_fast_samples_arrive() -> None:
    """Fast samples after a slow one bring the agent back over the decay time."""
    clock = FakeClock()
    lb = peak(clock)
    decay_s = BASE_RULES.ewma_decay_s  # each step below keeps 1/e of the estimate
    await fleet(lb, "a", "b")
    await lb.set_strategy(LATENCY)
    await lb.end("b", 150.0)
    await lb.end("a", 2_000.0)
    assert (await lb.select()).agent.id == "b"
    for _ in range(3):
        clock.advance(decay_s)
        await lb.end("a", 100.0)  # 2000 → ~800 → ~340 → ~170
        await lb.end("b", 150.0)
    assert (await lb.select()).agent.id == "b"
    clock.advance(decay_s)
    await lb.end("a", 100.0)  # ~125 < 150
    assert (await lb.select()).agent.id == "a"


async def test_peak_ewma_weighs_the_estimate_by_queued_work() -> None:
    """A fast agent with three requests open costs more than a 2x slower idle one."""
    lb = peak(FakeClock())
    await fleet(lb, "fast", "slow")
    await lb.set_strategy(LATENCY)
    await lb.end("fast", 100.0)
    await lb.end("slow", 200.0)
    await load(lb, "fast", 3)  # cost 100 x 4 = 400 > 200 x 1
    assert (await lb.select()).agent.id == "slow"


async def test_plain_average_ignores_queued_work() -> None:
    """With peak_ewma off, latency-based ranks by the moving average alone."""
    lb = balancer(config=replace(BASE_RULES, peak_ewma=False))
    await fleet(lb, "fast", "slow")
    await lb.set_strategy(LATENCY)
    await lb.end("fast", 100.0)
    await lb.end("slow", 200.0)
    await load(lb, "fast", 3)
    assert (await lb.select()).agent.id == "fast"


async def test_a_failing_agent_is_ejected_reported_and_back_after_its_time() -> None:
    """Five failures eject an agent: no picks, GetLoads says until when; at 30 s it returns."""
    clock = FakeClock()
    lb = balancer(clock, replace(BASE_RULES, ejection_consecutive_failures=5))
    await fleet(lb, "a", "b", "c", "d")
    for _ in range(5):
        await lb.end("a", 3.0, failed=True)
    assert "a" not in await picks(lb, 40)
    (load_a,) = await lb.loads(["a"])
    assert load_a.ejected
    assert load_a.ejected_until_ms == clock.now_ms + 30_000

    version = lb._store.version()
    clock.advance(30)
    await lb.sweep()
    assert lb._store.version() != version  # watchers hear that it came back
    (load_a,) = await lb.loads(["a"])
    assert not load_a.ejected
    assert load_a.ejected_until_ms == 0
    assert "a" in await picks(lb, 40)


async def test_all_eligible_agents_ejected_fails_open() -> None:
    """When ejection has taken out every eligible agent, picks go to them rather than nowhere."""
    lb = balancer(config=replace(BASE_RULES, ejection_max_share=1.0))
    await fleet(lb, "a", "b")
    for agent_id in ("a", "b"):
        for _ in range(5):
            await lb.end(agent_id, 3.0, failed=True)
    assert all(load.ejected for load in await lb.loads())
    assert set(await picks(lb, 20)) == {"a", "b"}


async def test_a_sticky_session_spills_over_while_its_agent_is_ejected() -> None:
    """A session bound to an ejected agent is served elsewhere and keeps its binding."""
    clock = FakeClock()
    lb = balancer(clock)
    await fleet(lb, "a", "b", "c")
    bound = (await lb.select(session_id="chat")).agent.id
    for _ in range(5):
        await lb.end(bound, 3.0, failed=True)
    spill = await lb.select(session_id="chat")
    assert spill.agent.id != bound
    assert not spill.sticky
    clock.advance(31)
    back = await lb.select(session_id="chat")
    assert back.agent.id == bound
    assert back.sticky


async def test_expired_leases_are_failed_requests_but_never_eject() -> None:
    """Lateness is not failure: expiries are failed requests, feed no estimate, eject nobody."""
    clock = FakeClock()
    lb = balancer(clock, replace(BASE_RULES, request_timeout_s=10))
    await fleet(lb, "a", "b", "c")
    await load(lb, "a", 5)
    clock.advance(11)
    assert await lb.sweep() == (5, 0)
    (load_a,) = await lb.loads(["a"])
    assert not load_a.ejected
    assert (load_a.failed_requests, load_a.active_connections) == (5, 0)
    assert load_a.avg_latency_ms == 0.0  # no sample: nobody reported how long it took


async def test_slow_start_gives_a_new_agent_a_growing_share() -> None:
    """A mid-run joiner takes about min_share of its turns at first and all of them later."""
    clock = FakeClock()
    config = replace(BASE_RULES, slow_start_window_s=60, slow_start_min_share=0.1)
    lb = balancer(clock, config)
    await lb.set_strategy(StrategyName.ROUND_ROBIN)
    await fleet(lb, "old")
    clock.advance(120)  # "old" is warm
    await fleet(lb, "new")
    early = await picks(lb, 400)
    assert 0 < early["new"] < 400 * 0.5 * 0.25  # ~5% (half the turns x 0.1), well under 10%
    clock.advance(60)
    late = await picks(lb, 400)
    assert late["new"] == 200  # round-robin's full half once the window is over


async def test_slow_start_is_off_by_default() -> None:
    """Without a window a newly joined agent takes its full round-robin share at once."""
    clock = FakeClock()
    lb = balancer(clock)
    await lb.set_strategy(StrategyName.ROUND_ROBIN)
    await fleet(lb, "old")
    clock.advance(120)
    await fleet(lb, "new")
    assert (await picks(lb, 100))["new"] == 50


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"choice_count": -1}, r"choice_count must be None \(each strategy's own\) or a whole"),
        ({"ewma_decay_s": 0}, "ewma_decay_s must be a finite number > 0"),
        ({"failure_penalty_ms": -1}, "failure_penalty_ms must be a finite number >= 0"),
        ({"ejection_max_share": 0}, r"ejection_max_share must be in \(0, 1\]"),
        ({"slow_start_window_s": float("inf")}, "slow_start_window_s must be a finite number"),
        ({"ejection_consecutive_failures": True}, "ejection_consecutive_failures must be a whole"),
    ],
)
def test_config_refuses_unusable_decision_options(options: dict[str, object], message: str) -> None:
    """BalancerConfig names the option and the rule it breaks."""
    with pytest.raises(ValueError, match=message):
        BalancerConfig(**options)  # type: ignore[arg-type]  # ill-typed on purpose: the check under test
