"""The event loop: the agent model, faults, refusals, delayed reports and the references."""

from __future__ import annotations

import dataclasses
import math

from lb_service.balancer import BalancerConfig
from lb_service.config import OPTIONS
from lb_service.model import StrategyName
from lb_service.simulate.command import simulate
from lb_service.simulate.metrics import summarise
from lb_service.simulate.policies import DEFAULT_POLICIES, PolicySpec
from lb_service.simulate.report import to_json
from lb_service.simulate.workload import generate
from tests.simulate.builders import policy, requests, run, scenario

#: Two one-slot agents, "fast" at speed 1 and "slow" at speed 0.25.
_FAST_SLOW = [
    {"id": "fast", "models": ["m"], "speed": 1.0, "slots": 1},
    {"id": "slow", "models": ["m"], "speed": 0.25, "slots": 1},
]


async def test_oracle_sends_each_request_to_the_earliest_finish() -> None:
    """The oracle queues behind the fast agent until the idle slow one would finish first."""
    sim = scenario(cluster=_FAST_SLOW)
    # Sizes on a speed-1 agent. t=0: fast ends at 1000 (slow 4000). t=10: fast 2000 (slow
    # 4010). t=20, size 100: fast 2100, slow 420 -> slow. t=30, size 300: fast 2300,
    # slow 420 + 1200 = 1620 -> slow.
    out = await run(sim, requests([(0, 1000), (10, 1000), (20, 100), (30, 300)]), "oracle")
    assert out.agent == [0, 0, 1, 1]
    assert out.finish_ms == [1000, 2000, 420, 1620]


async def test_oracle_never_chooses_a_failing_agent_while_another_can_finish() -> None:
    """A failing agent "finishes" in fail_ms, but the oracle prefers any agent that succeeds."""
    sim = scenario(
        cluster=_FAST_SLOW,
        faults=[{"agent": "fast", "kind": "fail", "at_s": 0, "fail_ms": 5}],
    )
    out = await run(sim, requests([(0, 1000), (10, 1000)]), "oracle")
    assert out.agent == [1, 1]
    assert out.failed == [False, False]


async def test_informed_queues_behind_the_fast_agent_whatever_the_size() -> None:
    """Blind to sizes, the informed reference ranks by mean sizes: a small request still queues."""
    sim = scenario(cluster=_FAST_SLOW)
    stream = requests([(0, 1000), (10, 100)])
    # The oracle sees the 100 ms request finish sooner on the idle slow agent (410 vs 1100);
    # the informed one expects a mean-sized request: two means on fast, four on slow.
    assert (await run(sim, stream, "oracle")).agent == [0, 1]
    assert (await run(sim, stream, "informed")).agent == [0, 0]


async def test_informed_spills_to_the_slow_agent_once_the_queue_outweighs_its_speed() -> None:
    """Expected time (k + 1) means on the fast agent against 1 / 0.3 means on the idle slow one."""
    sim = scenario(
        cluster=[
            {"id": "fast", "models": ["m"], "speed": 1.0, "slots": 1},
            {"id": "slow", "models": ["m"], "speed": 0.3, "slots": 1},
        ]
    )
    # Sizes do not matter to it: 1, 2, 3 means on fast beat 3.33 on slow; 4 do not.
    out = await run(sim, requests([(0, 50), (10, 9000), (20, 10), (30, 10)]), "informed")
    assert out.agent == [0, 0, 0, 1]


async def test_informed_counts_every_slot_and_the_agents_mean_size() -> None:
    """With two slots a second request starts at once; a third waits half a mean for one."""
    sim = scenario(
        cluster=[
            {"id": "pair", "models": ["m"], "speed": 1.0, "slots": 2},
            {"id": "slow", "models": ["m"], "speed": 0.6, "slots": 1},
        ]
    )
    # pair: 1, 1, then 1 + 1/2 means (1.5 < 1.67 on slow), then 1 + 2/2 = 2 > 1.67.
    out = await run(sim, requests([(0, 5000), (1, 5000), (2, 5000), (3, 5000)]), "informed")
    assert out.agent == [0, 0, 0, 1]


async def test_informed_never_chooses_a_failing_agent_while_another_can_finish() -> None:
    """Faults are known to the informed reference as to the oracle."""
    sim = scenario(
        cluster=_FAST_SLOW,
        faults=[{"agent": "fast", "kind": "fail", "at_s": 0, "fail_ms": 5}],
    )
    out = await run(sim, requests([(0, 1000), (10, 1000)]), "informed")
    assert out.agent == [1, 1]


async def test_a_slow_fault_scales_service_from_its_start() -> None:
    """Requests starting service on the agent at or after T take `factor` times longer."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 0.5, "slots": 1}],
        faults=[{"agent": "a", "kind": "slow", "at_s": 1, "factor": 3, "until_s": 2}],
    )
    out = await run(sim, requests([(0, 100), (900, 100), (1500, 100), (2500, 100)]), "round-robin")
    services = [f - s for s, f in zip(out.start_ms, out.finish_ms, strict=True)]
    # 100 ms at speed 0.5 is 200 ms; starts at 0 and 900 are before T, 1500 is within
    # [1, 2) s, 2500 is after the fault ended.
    assert services == [200, 200, 600, 200]


async def test_a_queue_forms_beyond_the_slots() -> None:
    """A one-slot agent serves in arrival order: the second request waits for the first."""
    sim = scenario(cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1}])
    out = await run(sim, requests([(0, 500), (100, 500)]), "round-robin")
    assert out.start_ms == [0, 500]
    assert out.finish_ms == [500, 1000]


async def test_a_crash_fails_requests_in_flight_and_queued() -> None:
    """A fail fault fails what the agent is serving and has queued, fail_ms after T."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1}],
        faults=[{"agent": "a", "kind": "fail", "at_s": 1, "fail_ms": 10}],
        balancer={"ejection_consecutive_failures": 0},
    )
    out = await run(sim, requests([(0, 5000), (100, 5000), (2000, 5000)]), "round-robin")
    assert out.failed == [True, True, True]
    # In service at T: ends at T + 10. Queued: starts then, ends 10 ms later. New: 10 ms.
    assert out.finish_ms == [1010, 1020, 2010]


async def test_a_failing_agent_may_finish_what_it_had() -> None:
    """With in_flight: finish, requests started before T complete; later ones fail fast."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1}],
        faults=[{"agent": "a", "kind": "fail", "at_s": 1, "fail_ms": 10, "in_flight": "finish"}],
        balancer={"ejection_consecutive_failures": 0},
    )
    out = await run(sim, requests([(0, 5000), (100, 5000)]), "round-robin")
    assert out.failed == [False, True]
    assert out.finish_ms == [5000, 5010]


async def test_refusals_are_counted_by_reason() -> None:
    """Picks the balancer refuses (no eligible agent, all busy) are counted, not placed."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1, "max_connections": 1}],
        workload={
            "rate_per_s": 1,
            "mix": [{"model": "m", "share": 1}, {"model": "m", "share": 1, "compute": "gpu"}],
        },
    )
    stream = requests([(0, 1000), (10, 1000), (20, 1000), (2000, 1000)], kind=[0, 0, 1, 0])
    for name in ("round-robin", "oracle"):
        out = await run(sim, stream, name)
        assert out.agent == [0, -1, -1, 0], name
        assert dict(out.refused) == {"all_busy": 1, "no_eligible": 1}, name
        assert summarise(sim, out, stream.arrival_ms).refused == 2


async def test_late_reports_make_a_full_scan_herd_without_pending_picks() -> None:
    """Reports 200 ms late and no pending picks: least-connections sends two picks to one agent.

    Request 0 goes to a-1 (a tie, rotated). At 300 ms its start has been reported, so a-1
    counts 1 and a-2 counts 0. Requests at 300 and 350 ms: reported at once, the second
    sees a-2 busy too and the tie rotates back to a-1; reported late, both see a-2 idle.
    With pending picks (the default) the late pick at 300 ms counts on a-2 at once.
    """
    options = {"choice_count": 0, "pick_hold_s": 0}
    full_scan = PolicySpec("lc", StrategyName.LEAST_CONNECTIONS, options=options)
    held = PolicySpec("held", StrategyName.LEAST_CONNECTIONS, options={"choice_count": 0})
    arrivals = [(0, 10_000), (300, 10_000), (350, 10_000)]
    prompt = scenario(workload={"rate_per_s": 1, "mix": [{"model": "m", "share": 1}]})
    late = scenario(
        workload={
            "rate_per_s": 1,
            "mix": [{"model": "m", "share": 1}],
            "dispatchers": [{"report_delay_ms": 200}],
        }
    )
    assert (await run(prompt, requests(arrivals), full_scan)).agent == [0, 1, 0]
    assert (await run(late, requests(arrivals), full_scan)).agent == [0, 1, 1]
    assert (await run(late, requests(arrivals), held)).agent == [0, 1, 0]


async def test_outlier_ejection_is_watched_until_it_happens() -> None:
    """The failed requests a failing agent took before the balancer ejected it are counted."""
    sim = scenario(
        faults=[{"agent": "a-1", "kind": "fail", "at_s": 0, "fail_ms": 5}],
        balancer={"ejection_consecutive_failures": 3, "ejection_base_s": 60},
    )
    stream = requests([(t * 100.0, 50) for t in range(40)])
    out = await run(sim, stream, "round-robin")
    (watch,) = out.ejections
    assert watch.failures_before_ejection == 3
    assert watch.sent_before_ejection == 3
    assert watch.ejected_after_s is not None
    ejected_at = watch.ejected_after_s * 1000
    # After the ejection (lasting 60 s) nothing more goes to a-1.
    assert all(a == 1 for a, t in zip(out.agent, stream.arrival_ms, strict=True) if t > ejected_at)


async def test_sticky_sessions_reach_the_balancer() -> None:
    """Requests of one session stay on one agent under round-robin (the binding wins)."""
    sim = scenario()
    stream = requests([(t * 10.0, 5) for t in range(6)], session=["s"] * 6)
    assert len(set((await run(sim, stream, "round-robin")).agent)) == 1
    plain = requests([(t * 10.0, 5) for t in range(6)])
    assert len(set((await run(sim, plain, "round-robin")).agent)) == 2


async def test_an_agent_that_joins_late_takes_no_request_before() -> None:
    """A join fault registers the agent at its time: no picks before, some after."""
    sim = scenario(faults=[{"agent": "a-2", "kind": "join", "at_s": 1}])
    stream = requests([(t * 100.0, 10) for t in range(20)])
    for name in ("round-robin", "random", "oracle"):
        out = await run(sim, stream, name)
        before = {a for a, t in zip(out.agent, stream.arrival_ms, strict=True) if t < 1000}
        after = {a for a, t in zip(out.agent, stream.arrival_ms, strict=True) if t >= 1000}
        assert before == {0}, name
        assert 1 in after, name


async def test_load_is_sampled_over_time() -> None:
    """Samples record each agent's queued plus in-service requests at regular times."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1}],
        sample_interval_s=1,
        duration_s=3,
    )
    out = await run(sim, requests([(500, 10_000), (600, 10_000)]), "round-robin")
    assert out.sample_s == [0, 1, 2, 3]
    assert out.samples == [(0,), (2,), (2,), (2,)]


def test_same_seed_gives_identical_json_and_another_seed_does_not() -> None:
    """A run is a function of scenario, seed and policies: the JSON repeats byte for byte."""
    sim = scenario(
        workload={
            "utilisation": 0.8,
            "mix": [{"model": "m", "share": 1}],
            "sessions": {"share": 0.3, "pool": 5},
            "dispatchers": [{"count": 2, "report_delay_ms": 50}],
        },
        policies=["weighted", "least-connections", "random", "oracle"],
        targets=[{"kind": "p99-vs-oracle", "threshold": 1.3}],
    )
    policies = sim.policies or ()
    first, _ = simulate(sim, policies, seed=5)
    second, _ = simulate(sim, policies, seed=5)
    other, _ = simulate(sim, policies, seed=6)
    assert to_json(first) == to_json(second)
    assert to_json(first) != to_json(other)


def test_generated_arrivals_follow_the_rate_and_bursts() -> None:
    """Arrivals are Poisson at the scenario's rate, times the factor during a burst."""
    sim = scenario(
        duration_s=400,
        workload={
            "rate_per_s": 50,
            "mix": [{"model": "m", "share": 1}],
            "bursts": [{"at_s": 100, "duration_s": 100, "factor": 3}],
        },
    )
    stream = generate(sim, seed=3, duration_s=400)
    in_burst = sum(1 for t in stream.arrival_ms if 100_000 <= t < 200_000)
    outside = len(stream) - in_burst
    # 15,000 expected outside (300 s x 50/s) and inside (100 s x 150/s); 5% of slack is
    # many standard deviations.
    assert math.isclose(outside, 15_000, rel_tol=0.05)
    assert math.isclose(in_burst, 15_000, rel_tol=0.05)
    assert stream.arrival_ms == sorted(stream.arrival_ms)


def test_a_session_keeps_one_request_type() -> None:
    """Every request of a session has the model that session was drawn with."""
    sim = scenario(
        models={
            "m": {"service_ms": {"median": 100, "p99": 400}},
            "n": {"service_ms": {"median": 100, "p99": 400}},
        },
        cluster=[{"id": "a", "models": ["m", "n"]}],
        workload={
            "rate_per_s": 20,
            "mix": [{"model": "m", "share": 1}, {"model": "n", "share": 1}],
            "sessions": {"share": 1, "pool": 4},
        },
    )
    stream = generate(sim, seed=1, duration_s=10)
    kinds: dict[str, set[int]] = {}
    for session, kind in zip(stream.session, stream.kind, strict=True):
        kinds.setdefault(session, set()).add(kind)
    assert len(kinds) == 4
    assert all(len(k) == 1 for k in kinds.values())


async def test_sweeps_count_the_leases_they_expire() -> None:
    """A request outliving request_timeout_s has its lease expired by a sweep, and counted."""
    sim = scenario(
        cluster=[{"id": "a", "models": ["m"], "speed": 1.0, "slots": 1}],
        balancer={"request_timeout_s": 1},
    )
    out = await run(sim, requests([(0, 5000), (100, 200)]), "round-robin")
    # The first runs 5 s; the second waits behind it, so its lease (opened at 100 ms) is
    # overdue too by the sweep at 2 s.
    assert out.leases_expired == 2
    assert (await run(sim, requests([(0, 500)]), "round-robin")).leases_expired == 0


async def test_ejections_are_counted_each_time_they_happen() -> None:
    """An agent ejected, back after its ejection, then ejected again counts twice."""
    sim = scenario(
        faults=[{"agent": "a-1", "kind": "fail", "at_s": 0, "fail_ms": 5}],
        balancer={"ejection_consecutive_failures": 3, "ejection_base_s": 2},
    )
    stream = requests([(t * 100.0, 50) for t in range(40)])
    out = await run(sim, stream, "round-robin")
    # Ejected within the first second for 2 s, back by 3 s, ejected again for 4 s.
    assert out.ejection_count == 2
    lasting = scenario(
        faults=[{"agent": "a-1", "kind": "fail", "at_s": 0, "fail_ms": 5}],
        balancer={"ejection_consecutive_failures": 3, "ejection_base_s": 60},
    )
    assert (await run(lasting, stream, "round-robin")).ejection_count == 1
    assert (await run(lasting, stream, "oracle")).ejection_count == 0


async def test_an_ejection_after_the_last_sweep_is_counted_at_the_end() -> None:
    """Failures ending during the drain, after the last sweep, still count their ejection.

    The only sweep runs at 5 s; a-1's failures take 8 s, so it is ejected at 8 s.
    """
    sim = scenario(
        duration_s=1,
        sweep_interval_s=5,
        cluster=[{"id": "a", "count": 2, "models": ["m"], "speed": 1.0, "slots": 4}],
        faults=[{"agent": "a-1", "kind": "fail", "at_s": 0, "fail_ms": 8000}],
        balancer={"ejection_consecutive_failures": 2},
    )
    out = await run(sim, requests([(0, 10), (10, 10), (20, 10), (30, 10)]), "round-robin")
    assert out.ejection_count == 1


async def test_affinity_is_measured_for_the_balancer_and_the_references() -> None:
    """Sticky sessions keep every session request on its agent; random keeps about half."""
    sim = scenario(duration_s=100, workload={"rate_per_s": 1, "mix": [{"model": "m", "share": 1}]})
    stream = requests([(t * 100.0, 10) for t in range(400)], session=["s", "t"] * 200)
    sticky = summarise(
        sim, await run(sim, stream, "round-robin"), stream.arrival_ms, stream.session
    )
    assert (sticky.affinity_kept, sticky.affinity_requests) == (1.0, 398)
    loose = summarise(sim, await run(sim, stream, "random"), stream.arrival_ms, stream.session)
    assert 0.35 < loose.affinity_kept < 0.65


def test_default_policy_runs_what_serve_runs_with_no_options() -> None:
    """`default` comes first and runs serve's default strategy with BalancerConfig() alone."""
    (strategy,) = [o.default for o in OPTIONS if o.key == "strategy"]
    spec = DEFAULT_POLICIES[0]
    assert (spec.name, spec.strategy) == ("default", strategy)
    assert spec.config({"sticky_sessions": False, "choice_count": 0}) == BalancerConfig()
    assert spec.describe() == f"{strategy.value} (lb-service serve defaults)"
    # The other policies still take the scenario's options.
    assert policy("round-robin").config({"sticky_sessions": False}).sticky_sessions is False


def test_serve_option_defaults_match_the_balancer_config() -> None:
    """Every balancer option of `lb-service serve` defaults to BalancerConfig's value."""
    defaults = {f.name: f.default for f in dataclasses.fields(BalancerConfig)}
    shared = [o for o in OPTIONS if o.key in defaults]
    assert shared
    for option in shared:
        assert option.default == defaults[option.key], option.key


async def test_default_policy_ignores_the_scenario_balancer_section() -> None:
    """The scenario's balancer options reach other policies but not `default`."""
    sim = scenario(balancer={"sticky_sessions": False, "choice_count": 0})
    stream = requests([(0, 10)])
    assert (await run(sim, stream, "default")).config == BalancerConfig()
    assert (await run(sim, stream, "least-connections-full")).config == BalancerConfig(
        sticky_sessions=False, choice_count=0
    )
