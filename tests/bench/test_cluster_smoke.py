"""``make bench-cluster`` end to end at tiny sizes, so the harness cannot rot unnoticed.

Nothing here looks at a timing: it only proves every setup runs and is reported.
"""

from __future__ import annotations

from bench import cluster


def test_cluster_bench_measures_memory_and_redis_replicas_and_reports_ratios(
    redis_url: str,
) -> None:
    """A smoke run measures the memory baseline and one Redis replica, with a ratio row each."""
    run = cluster.measure(cluster.SMOKE, "pytest tests/bench", redis_url)

    assert [r.setup for r in run.results] == ["memory", "redis x1"]
    assert all(r.decisions_per_s > 0 for r in run.results)
    text = cluster.markdown(run)
    assert "| memory | 1 |" in text
    assert "| redis x1 | 1 |" in text
    assert "1.00x" in text  # the baseline against itself
    # The growth table: both stores on one replica, at both fleet sizes.
    assert sorted((r.setup, agents) for agents, r in run.growth) == [
        ("memory", 2), ("memory", 4), ("redis x1", 2), ("redis x1", 4),
    ]  # fmt: skip
    assert "| redis x1 | 4 |" in text
    assert "- redis x1: 4 agents take" in text
