"""Peers: agents of one class read each other's figures as a prior (lb_service.peers)."""

from __future__ import annotations

import math
import random

from lb_service.capacity import TRUST_COMPLETIONS, learned_capacity, ranked_rate
from lb_service.model_cost import factor_of
from lb_service.peers import (
    PEER_WEIGHT,
    Peers,
    contribution,
    figures,
    informed_figures,
    peer_class,
)
from lb_service.store.base import AgentStats
from tests.factories import agent

CHAT, EMBED = "llama3:8b", "nomic-embed-text"


def measured(
    completions: int, rate_per_s: float, models: dict[str, tuple[float, int]] | None = None
) -> AgentStats:
    """A record of ``completions`` at ``rate_per_s``; ``models``: name -> (typical ms, samples)."""
    done = float(completions)
    return AgentStats(
        completions=completions,
        cap_done=done,
        cap_busy_ms=1000.0 * done / rate_per_s,
        model_latency=tuple(
            (name, math.log(ms), samples, 1.0) for name, (ms, samples) in (models or {}).items()
        ),
    )


def capacity(read: tuple[int, float, float, object]) -> float | None:
    """The learned capacity (uncredited) the figures give."""
    completions, done, busy, _ = read
    return learned_capacity(AgentStats(completions=completions, cap_done=done, cap_busy_ms=busy))


def test_an_agent_alone_in_its_class_reads_its_own_figures() -> None:
    """Different hardware or models make different classes, and a class of one adds nothing."""
    cpu, gpu = agent("cpu"), agent("gpu", vram_gb=24.0, gpu="RTX 4090")
    other_models = agent("cpu-embed", models=(EMBED,))
    records = [measured(3, 0.1), measured(200, 2.0), measured(50, 1.0)]

    read = informed_figures([cpu, gpu, other_models], records)

    assert len({peer_class(cpu), peer_class(gpu), peer_class(other_models)}) == 3
    assert read == [figures(record, None) for record in records]


def test_a_member_measured_on_a_few_requests_reads_near_its_class() -> None:
    """Three unlucky samples (a tenth of its twins' rate) read as a third to a half of it."""
    fleet = [agent(f"cpu-{n}") for n in range(4)]
    records = [measured(300, 1.0), measured(300, 1.0), measured(300, 1.0), measured(3, 0.1)]

    read = informed_figures(fleet, records)

    unlucky = capacity(read[3])
    assert unlucky is not None
    assert 0.3 < unlucky < 0.5
    assert capacity(figures(records[3], None)) == 0.1


def test_a_member_measured_on_hundreds_keeps_its_own_figure() -> None:
    """An agent slower than its twins (degraded) reads within a few per cent of its own rate."""
    fleet = [agent(f"cpu-{n}") for n in range(4)]
    records = [measured(400, 1.0), measured(400, 1.0), measured(400, 1.0), measured(400, 0.5)]

    slow = capacity(informed_figures(fleet, records)[3])

    assert slow is not None
    assert 0.5 <= slow < 0.52


def test_an_agent_joining_a_measured_class_is_trusted_at_its_rate() -> None:
    """With no completion of its own, a new member ranks by the class's figure, not a guess."""
    fleet = [agent("gpu-1", vram_gb=24.0, gpu="A10"), agent("gpu-2", vram_gb=24.0, gpu="A10")]
    records = [measured(100, 2.0), AgentStats()]

    read = informed_figures(fleet, records)

    assert ranked_rate(*read[1][:3]) is not None  # trusted
    new = capacity(read[1])
    assert new is not None
    assert 2.0 / 1.2 < new < 2.0 * 1.2  # the class rate, rounded
    assert ranked_rate(*figures(records[1], None)[:3]) is None  # alone it would not be


def test_the_prior_weighs_at_most_peer_weight_completions() -> None:
    """However much the class has served, its prior adds PEER_WEIGHT completions and no more."""
    prior = Peers(contribution(measured(500, 1.0)) for _ in range(10)).prior()

    assert prior is not None
    assert prior.done == PEER_WEIGHT
    assert all(weight == PEER_WEIGHT for _, _, weight in prior.models)


def test_a_model_its_peers_priced_is_priced_on_an_agent_that_rarely_serves_it() -> None:
    """A model an agent saw three times (at 5x its cost) costs near what its twins learned."""
    fleet = [agent(f"a10-{n}", vram_gb=24.0, gpu="A10", models=(CHAT, EMBED)) for n in range(3)]
    twin = measured(300, 1.0, {CHAT: (1_000.0, 200), EMBED: (100.0, 200)})
    unlucky = measured(300, 1.0, {CHAT: (1_000.0, 200), EMBED: (500.0, 3)})

    read = informed_figures(fleet, [twin, twin, unlucky])

    own = factor_of(unlucky.model_latency, EMBED)
    pooled = factor_of(read[2][3], EMBED)
    assert pooled < own / 2
    assert pooled < 1.6 * factor_of(read[0][3], EMBED)


def test_a_model_only_its_peers_served_weighs_nothing_in_its_mix() -> None:
    """Peers' models join an agent's entries with share 0: its factor for them is theirs."""
    fleet = [agent(f"a10-{n}", vram_gb=24.0, gpu="A10", models=(CHAT, EMBED)) for n in range(2)]
    both = measured(300, 1.0, {CHAT: (1_000.0, 200), EMBED: (100.0, 200)})
    chat_only = measured(300, 1.0, {CHAT: (1_000.0, 200)})

    read = informed_figures(fleet, [both, chat_only])

    entries = {name: (samples, share) for name, _, samples, share in read[1][3]}
    assert entries[EMBED] == (PEER_WEIGHT, 0.0)
    # The chat-only agent's mix is still all chat: an embedding is a fraction of it.
    assert factor_of(read[1][3], EMBED) < 0.2
    assert factor_of(read[1][3], CHAT) == 1.0


def test_sums_kept_up_to_date_equal_sums_taken_afresh() -> None:
    """Adding and replacing contributions in any order gives the prior a fresh sum gives."""
    rng = random.Random(5)
    records = [
        measured(
            rng.randint(0, 600),
            rng.uniform(0.05, 8.0),
            {CHAT: (rng.lognormvariate(7, 1), rng.randint(1, 90))},
        )
        for _ in range(40)
    ]
    kept = Peers(contribution(record) for record in records)
    for _ in range(300):
        n = rng.randrange(len(records))
        new = measured(rng.randint(1, 600), rng.uniform(0.05, 8.0))
        kept.replace(contribution(records[n]), contribution(new))
        records[n] = new
        shuffled = records[:]
        rng.shuffle(shuffled)
        assert kept.prior() == Peers(contribution(record) for record in shuffled).prior()


def test_a_prior_adds_to_the_estimates_and_makes_a_class_member_trusted() -> None:
    """figures() adds PEER_WEIGHT completions at the class's rate; its trust is the class's."""
    record = AgentStats(completions=1, cap_done=1.0, cap_busy_ms=500.0)
    prior = Peers([contribution(measured(100, 1.0))] * 2).prior()
    assert prior is not None

    completions, done, busy, _ = figures(record, prior)

    assert completions == TRUST_COMPLETIONS
    assert done == record.cap_done + PEER_WEIGHT
    # At the class's rate, 1 completion a second, rounded to PRIOR_STEPS per doubling.
    added = busy - record.cap_busy_ms
    assert PEER_WEIGHT * 1000.0 / 2**0.125 <= added <= PEER_WEIGHT * 1000.0 * 2**0.125
    assert figures(record, None) == (1, 1.0, 500.0, ())
