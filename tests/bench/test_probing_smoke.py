"""``make bench-probing`` end to end at tiny sizes, so the harness cannot rot unnoticed.

Nothing here looks at a timing: it only proves both phases run, the server really
probed in one and not in the other, and the report has its figures.
"""

from __future__ import annotations

from bench import probing


def test_probing_bench_measures_both_phases_and_reports_the_ratio() -> None:
    """A smoke run probes (and then stops probing) the emulated agents and reports both."""
    run = probing.measure(probing.SMOKE, "pytest tests/bench")

    assert [r.phase for r in run.rounds] == [probing.PROBED, probing.PLAIN]
    assert all(r.selects_per_s > 0 for r in run.rounds)
    probes_while_probing = run.idle[probing.PROBED].probes
    assert probes_while_probing is not None
    assert probes_while_probing > 0
    assert run.idle[probing.PLAIN].probes == 0
    text = probing.markdown(run)
    assert "| server CPU, share of one core" in text
    assert "Throughput while probing: **" in text
