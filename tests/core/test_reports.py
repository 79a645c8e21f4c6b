"""The report rules on their own: what is refused, what is fresh, what counts as load."""

from __future__ import annotations

import math

import pytest

from lb_service.balancer import BalancerConfig
from lb_service.errors import InvalidArgument
from lb_service.model import LoadReport
from lb_service.reports import (
    MAX_LOADED_MODELS,
    MAX_NAMED_METRICS,
    ReceivedReport,
    Saturation,
    check_report,
    fresh,
    resident,
    saturation,
)


@pytest.mark.parametrize(
    ("report", "field"),
    [
        (LoadReport(queued_requests=-1), "report.queued_requests"),
        (LoadReport(running_requests=1_000_001), "report.running_requests"),
        (LoadReport(kv_cache_usage=math.nan), "report.kv_cache_usage"),
        (LoadReport(kv_cache_usage=1.5), "report.kv_cache_usage"),
        (LoadReport(cpu_utilization=-0.1), "report.cpu_utilization"),
        (LoadReport(gpu_utilization=math.inf), "report.gpu_utilization"),
        (LoadReport(loaded_models=("",)), "report.loaded_models"),
        (LoadReport(loaded_models=("m",) * (MAX_LOADED_MODELS + 1)), "report.loaded_models"),
        (
            LoadReport(named_metrics={f"m{n}": 1.0 for n in range(MAX_NAMED_METRICS + 1)}),
            "report.named_metrics",
        ),
        (LoadReport(named_metrics={"x" * 129: 1.0}), "report.named_metrics"),
        (LoadReport(named_metrics={"tokens": math.nan}), "report.named_metrics"),
    ],
)
def test_a_figure_out_of_range_is_refused_naming_its_field(report: LoadReport, field: str) -> None:
    """check_report raises InvalidArgument whose field path names the bad figure."""
    with pytest.raises(InvalidArgument) as raised:
        check_report(report)
    assert raised.value.field == field
    assert field in str(raised.value)


def test_a_report_in_range_passes_unchanged() -> None:
    """Bounds are inclusive: 0 and 1 are fractions, 1,000,000 a count, 64 names a list."""
    report = LoadReport(
        queued_requests=1_000_000,
        running_requests=0,
        kv_cache_usage=1.0,
        cpu_utilization=0.0,
        loaded_models=("m",) * MAX_LOADED_MODELS,
    )
    assert check_report(report) is report


def test_unseen_load_is_what_was_reported_beyond_the_leases_open() -> None:
    """5 reported with 2 leases open is 3 unseen; fewer reported than leased is 0, never less."""
    assert ReceivedReport(LoadReport(queued_requests=3, running_requests=2), 0, 2).unseen == 3
    assert ReceivedReport(LoadReport(running_requests=1), 0, 4).unseen == 0
    assert ReceivedReport(LoadReport(loaded_models=("m",)), 0, 0).unseen == 0


def test_only_reports_younger_than_the_staleness_limit_are_fresh() -> None:
    """A report 1,999 ms old is fresh under 2 s; 2,000 ms old is not; 0 turns reports off."""
    reports = {
        "young": ReceivedReport(LoadReport(), 8_001, 0),
        "old": ReceivedReport(LoadReport(), 8_000, 0),
    }
    assert set(fresh(reports, 10_000, 2_000)) == {"young"}
    assert fresh(reports, 10_000, 0) == {}


def test_saturation_is_the_fuller_of_queue_and_kv_cache() -> None:
    """5 queued is saturated (1.0); 40% KV against 80% is half; an empty report says nothing."""
    limits = Saturation(queue=5, kv_cache=0.8)
    assert saturation(LoadReport(queued_requests=5), limits) == 1.0
    assert saturation(LoadReport(queued_requests=1, kv_cache_usage=0.4), limits) == 0.5
    assert saturation(LoadReport(), limits) == 0.0
    with pytest.raises(ValueError, match="queue"):
        Saturation(queue=0)
    with pytest.raises(ValueError, match="KV-cache"):
        Saturation(kv_cache=0.0)


def test_residency_needs_the_model_listed() -> None:
    """An agent is resident for a model its report lists, never for a task naming none."""
    report = LoadReport(loaded_models=("llama3:8b",))
    assert resident(report, "llama3:8b")
    assert not resident(report, "llama3:70b")
    assert not resident(report, "")


def test_probes_read_reports_only_when_asked_and_when_one_can_be_fresh() -> None:
    """probe_reports needs --probe-load-reports and a probe interval under the staleness limit."""
    assert not BalancerConfig().probe_reports  # off by default
    assert not BalancerConfig(probe_load_reports=True).probe_reports  # 5 s probes, 2 s limit
    assert BalancerConfig(probe_load_reports=True, probe_interval_s=1.0).probe_reports


def test_only_reports_that_can_change_a_decision_are_read() -> None:
    """An idle report with nothing loaded is left out; unseen load, saturation or models are not."""
    limits = Saturation()
    reports = {
        "idle": ReceivedReport(LoadReport(queued_requests=0, running_requests=1), 9_000, 1),
        "unseen": ReceivedReport(LoadReport(running_requests=3), 9_000, 1),
        "full": ReceivedReport(LoadReport(kv_cache_usage=0.9), 9_000, 0),
        "models": ReceivedReport(LoadReport(loaded_models=("m",)), 9_000, 0),
    }
    assert set(fresh(reports, 10_000, 2_000, limits)) == {"unseen", "full", "models"}
    assert set(fresh(reports, 10_000, 2_000, limits, residency=False)) == {"unseen", "full"}
