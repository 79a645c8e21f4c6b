"""The benchmark suite, run end to end with tiny sizes so that it cannot rot unnoticed.

Nothing here looks at a timing: ``make bench`` measures, this only proves every part
runs and the report has every table.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import report
from bench.__main__ import SMOKE, measure
from lb_service.model import StrategyName


@pytest.fixture(scope="module")
def run() -> report.Run:
    """One smoke run of every part, shared by the tests below."""
    return measure(SMOKE, "pytest tests/bench")


def test_every_part_measures_something(run: report.Run) -> None:
    """Each part returns figures: decisions by strategy and size, RPCs, batches, streams, memory."""
    assert {(d.agents, d.strategy) for d in run.core.decisions} == {
        (size, strategy) for size in SMOKE.core_sizes for strategy in StrategyName
    }
    assert all(d.us > 0 and d.scan_us > 0 for d in run.core.decisions)
    assert {(m.workload, m.concurrency) for m in run.rpc.unary} == {
        (w, c) for w in ("bare", "floor", "select", "acquire") for c in (1, SMOKE.rpc.concurrency)
    }
    assert [m.decisions_per_rpc for m in run.rpc.batch] == [1, *SMOKE.rpc.batches]
    assert set(run.rpc.streams) == {0, SMOKE.rpc.watchers}
    assert [f.record for f in run.memory] == ["agent", "sticky session", "open lease"]
    assert all(f.bytes_each > 0 for f in run.memory)


def test_report_has_every_table_the_plot_and_the_targets(run: report.Run, tmp_path: Path) -> None:
    """BENCHMARKS.md gets the machine, the targets, all five parts and a PNG plot beside it."""
    markdown, plot = tmp_path / "BENCHMARKS.md", tmp_path / "plot" / "decision-cost.png"
    plot.parent.mkdir()
    report.write(run, markdown, plot)

    text = markdown.read_text()
    for heading in (
        "## Targets",
        "## 1. Core",
        "## 2. RPC",
        "## 3. Batch",
        "## 4. Streams",
        "## 5. Memory",
    ):
        assert heading in text
    for fact in (
        "| CPU |",
        "| cores |",
        "| Python |",
        "| grpcio / protobuf |",
        "pytest tests/bench",
    ):
        assert fact in text
    assert "](plot/decision-cost.png)" in text
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert len(report.targets(run)) == 7  # RPC (2), batch, streams, memory (3); core needs 1,000+
