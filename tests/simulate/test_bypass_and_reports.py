"""Traffic around the balancer, and agents' load reports, in the simulator."""

from __future__ import annotations

import re

import pytest

from lb_service.model import StrategyName
from lb_service.simulate.document import ScenarioError
from lb_service.simulate.policies import PolicySpec
from lb_service.simulate.workload import generate
from tests.simulate.builders import requests, run, scenario

_TWO = [
    {"id": "a", "models": ["m"], "speed": 1.0, "slots": 1},
    {"id": "b", "models": ["m"], "speed": 1.0, "slots": 1},
]
#: Full-scan least-connections, reading reports (the default staleness of 2 s).
_READS = PolicySpec(
    "reads", StrategyName.LEAST_CONNECTIONS, options={"choice_count": 0, "pick_hold_s": 0}
)
#: The same, ignoring every report.
_IGNORES = PolicySpec(
    "ignores",
    StrategyName.LEAST_CONNECTIONS,
    options={"choice_count": 0, "pick_hold_s": 0, "report_staleness_s": 0},
)


async def test_a_bypassed_request_goes_to_its_agent_unseen_by_the_balancer() -> None:
    """Two requests bypass to a; the balancer never hears of them and sends its own to a too."""
    sim = scenario(cluster=_TWO)
    stream = requests([(0, 5000), (1, 5000), (2, 100)], bypass=[0, 0, -1])

    out = await run(sim, stream, _IGNORES)

    # Without reports a looks idle (no lease) and wins the tie by registration order.
    assert out.agent == [0, 0, 0]
    assert out.finish_ms[2] == 10_100  # queued behind both bypassed requests


async def test_reports_show_the_balancer_what_bypassed_it() -> None:
    """With a report every 100 ms, the balancer sees a's two bypassed requests and picks b."""
    sim = scenario(cluster=_TWO, reports={"interval_ms": 100})
    stream = requests([(0, 5000), (1, 5000), (150, 100)], bypass=[0, 0, -1])

    assert (await run(sim, stream, _READS)).agent == [0, 0, 1]
    assert (await run(sim, stream, _IGNORES)).agent == [0, 0, 0]


async def test_a_late_report_is_read_only_once_it_arrives() -> None:
    """Reports taken at 0 and 100 ms reach the balancer 300 ms later: at 150 ms it knows nothing."""
    sim = scenario(cluster=_TWO, reports={"interval_ms": 100, "delay_ms": 300})
    early = requests([(0, 5000), (1, 5000), (150, 100)], bypass=[0, 0, -1])
    late = requests([(0, 5000), (1, 5000), (450, 100)], bypass=[0, 0, -1])

    assert (await run(sim, early, _READS)).agent == [0, 0, 0]
    assert (await run(sim, late, _READS)).agent == [0, 0, 1]


def test_the_stream_is_the_same_with_and_without_bypass() -> None:
    """Bypass draws from a random source of its own: arrivals, types and sizes do not move."""
    plain = scenario(workload={"rate_per_s": 20, "mix": [{"model": "m", "share": 1}]})
    around = scenario(
        workload={
            "rate_per_s": 20,
            "mix": [{"model": "m", "share": 1}],
            "bypass": {"share": 0.3, "agents": ["a-2"]},
        }
    )
    one, two = generate(plain, 7, 10), generate(around, 7, 10)

    assert (one.arrival_ms, one.base_ms) == (two.arrival_ms, two.base_ms)
    assert one.bypass == []
    assert set(two.bypass) == {-1, 1}
    assert 0.2 < sum(1 for b in two.bypass if b >= 0) / len(two) < 0.4


@pytest.mark.parametrize(
    ("bypass", "path"),
    [
        ({"share": 0.3, "agents": ["nobody"]}, "workload.bypass.agents[0]"),
        ({"share": 1.5}, "workload.bypass.share"),
        ({"share": 0.3, "to": ["a"]}, "workload.bypass"),
    ],
)
def test_a_bad_bypass_section_names_its_field(bypass: dict[str, object], path: str) -> None:
    """An unknown agent, a share over 1 or an unknown key is a ScenarioError at its path."""
    with pytest.raises(ScenarioError, match=re.escape(path)):
        scenario(workload={"rate_per_s": 5, "mix": [{"model": "m", "share": 1}], "bypass": bypass})


def test_a_report_interval_under_10_ms_is_refused() -> None:
    """reports.interval_ms below 10 would flood the run with events: a ScenarioError."""
    with pytest.raises(ScenarioError, match=re.escape("reports.interval_ms")):
        scenario(reports={"interval_ms": 1})


def test_bypass_windows_limit_it_to_their_time() -> None:
    """With during: [{at_s: 2, duration_s: 3}], only arrivals in [2 s, 5 s) may bypass."""
    around = scenario(
        workload={
            "rate_per_s": 50,
            "mix": [{"model": "m", "share": 1}],
            "bypass": {"share": 1.0, "agents": ["a-1"], "during": [{"at_s": 2, "duration_s": 3}]},
        }
    )
    stream = generate(around, 3, 10)

    inside = [b for t, b in zip(stream.arrival_ms, stream.bypass, strict=True) if 2000 <= t < 5000]
    outside = [
        b for t, b in zip(stream.arrival_ms, stream.bypass, strict=True) if not 2000 <= t < 5000
    ]
    assert set(inside) == {0}  # every arrival in the window bypasses (share 1.0) ...
    assert set(outside) == {-1}  # ... and none outside it
