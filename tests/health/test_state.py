"""The health state machine's pure rules: start-up, thresholds, heartbeats, expiry, drain."""

from __future__ import annotations

from functools import reduce

import pytest

from lb_service.health import state
from lb_service.health.state import HEALTHY_RECORD, NOT_PROBED_YET, HealthRecord, Thresholds
from lb_service.model import AgentHealth

ENVOY = Thresholds(healthy=2, unhealthy=3)
REFUSED = "probe: connection refused"


def _probes(record: HealthRecord, answers: str) -> HealthRecord:
    """``answers``: one letter per probe, ``o`` answered, ``x`` refused."""
    return reduce(lambda r, a: state.probed(r, a == "o", "" if a == "o" else REFUSED, ENVOY),
                  answers, record)  # fmt: skip


def _new_engine_agent() -> HealthRecord:
    return state.registered(None, probed=True, heartbeat_ttl_ms=0, now_ms=0)


def test_an_agent_nothing_watches_is_healthy() -> None:
    """No engine, no heartbeat TTL, no drain: healthy with no reason, as before health existed."""
    record = state.registered(None, probed=False, heartbeat_ttl_ms=0, now_ms=5)

    assert record == HEALTHY_RECORD
    assert (record.health, record.reason) == (AgentHealth.HEALTHY, "")


def test_a_new_engine_agent_is_unhealthy_until_probed() -> None:
    """A probed agent starts unhealthy, saying it was not probed yet (Envoy's start-up rule)."""
    record = _new_engine_agent()

    assert (record.health, record.reason) == (AgentHealth.UNHEALTHY, NOT_PROBED_YET)


def test_one_success_at_start_up_makes_it_healthy() -> None:
    """The first successful probe alone makes a new agent healthy, whatever the threshold."""
    assert _probes(_new_engine_agent(), "o").health is AgentHealth.HEALTHY


def test_failures_at_start_up_keep_it_out_with_the_latest_reason() -> None:
    """A new agent whose probes fail stays unhealthy, the reason now what the probe found."""
    record = _probes(_new_engine_agent(), "x")

    assert (record.health, record.reason) == (AgentHealth.UNHEALTHY, REFUSED)
    assert _probes(record, "xo").health is AgentHealth.HEALTHY  # then one success will do


@pytest.mark.parametrize(
    ("answers", "health"),
    [
        ("oxx", AgentHealth.HEALTHY),  # two failures: below the unhealthy threshold
        ("oxxx", AgentHealth.UNHEALTHY),  # three in a row take it out
        ("oxxoxx", AgentHealth.HEALTHY),  # a success in between starts the count again
        ("oxxxo", AgentHealth.UNHEALTHY),  # once out, one success is not enough
        ("oxxxoo", AgentHealth.HEALTHY),  # two in a row bring it back
        ("oxxxoxo", AgentHealth.UNHEALTHY),  # ... in a row
    ],
)
def test_thresholds_after_start_up(answers: str, health: AgentHealth) -> None:
    """After start-up, unhealthy-threshold failures in a row go out, healthy-threshold come back."""
    assert _probes(_new_engine_agent(), answers).health is health


def test_heartbeat_missed_past_the_ttl_says_for_how_long() -> None:
    """Silent longer than its TTL, a heartbeat agent is unhealthy, naming the silence in seconds."""
    alive = state.registered(None, probed=False, heartbeat_ttl_ms=30_000, now_ms=1_000)

    assert state.silence(alive, 30_000, 31_000) == alive  # exactly the TTL: still fine
    missed = state.silence(alive, 30_000, 32_500)
    assert (missed.health, missed.reason) == (AgentHealth.UNHEALTHY, "heartbeat missed for 31 s")
    assert state.silence(missed, 30_000, 90_000) == missed  # the reason is set once
    assert state.heartbeat(missed, 95_000).health is AgentHealth.HEALTHY


def test_expiry_counts_from_the_end_of_the_ttl() -> None:
    """An agent is expired only once silent for its TTL plus the expiry; no TTL never expires."""
    alive = state.registered(None, probed=False, heartbeat_ttl_ms=10_000, now_ms=0)

    assert not state.expired(alive, 10_000, 60_000, 70_000)
    assert state.expired(alive, 10_000, 60_000, 70_001)
    assert not state.expired(alive, 0, 60_000, 10**9)


def test_drain_wins_over_everything_until_undone() -> None:
    """A drained agent is DRAINING (drained by admin) even if unhealthy; undrain restores it."""
    out = _probes(_new_engine_agent(), "x")
    drained = state.drained(out, True)

    assert (drained.health, drained.reason) == (AgentHealth.DRAINING, "drained by admin")
    assert state.drained(drained, False) == out


def test_a_heartbeat_miss_is_named_before_a_probe_failure() -> None:
    """With both a missed heartbeat and failed probes, the reason names the heartbeat."""
    record = state.registered(None, probed=True, heartbeat_ttl_ms=1_000, now_ms=0)
    record = state.silence(_probes(record, "x"), 1_000, 5_000)

    assert record.reason == "heartbeat missed for 5 s"


def test_registering_again_is_proof_of_life_and_forgets_a_removed_engine() -> None:
    """A re-registration refreshes the heartbeat; without an engine the probe verdict is dropped."""
    missed = state.silence(
        state.registered(None, probed=True, heartbeat_ttl_ms=1_000, now_ms=0), 1_000, 9_000
    )
    again = state.registered(missed, probed=False, heartbeat_ttl_ms=1_000, now_ms=9_000)

    assert (again.health, again.heartbeat_at_ms, again.probe_ok) == (
        AgentHealth.HEALTHY,
        9_000,
        None,
    )


def test_thresholds_must_be_at_least_one() -> None:
    """A threshold of 0 would flip an agent on nothing; it is refused."""
    with pytest.raises(ValueError, match=">= 1"):
        Thresholds(healthy=0)


@pytest.mark.parametrize("answers", ["oo", "oxxx"])
def test_a_steady_agent_s_next_probe_changes_nothing(answers: str) -> None:
    """Counters stop at their thresholds: the same answer again gives back an equal record.

    (So the monitor writes nothing for the steady majority of probes.)
    """
    steady = _probes(_new_engine_agent(), answers)
    same = answers[-1] * 5

    assert _probes(steady, same) == steady


def test_saturated_counters_still_count_a_change_of_answer_from_zero() -> None:
    """After many successes, unhealthy-threshold failures in a row are still what takes it out."""
    long_up = _probes(_new_engine_agent(), "o" * 50)

    assert _probes(long_up, "xx").health is AgentHealth.HEALTHY
    assert _probes(long_up, "xxx").health is AgentHealth.UNHEALTHY
