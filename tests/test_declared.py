"""Applying a config file's registry: what a reload logs, and what it says it cannot apply."""

from __future__ import annotations

from pathlib import Path

import structlog
from structlog.testing import capture_logs

from lb_service import config as cfg
from lb_service.declared import apply_declared, restart_needed, warn_restart_needed
from lb_service.model import StrategyName
from tests.factories import FakeClock, agent, balancer


def _file(tmp_path: Path, text: str, name: str = "lb.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


async def test_a_reload_names_the_ids_it_added_removed_and_changed() -> None:
    """reload_applied lists ids; the removed agent's own line says the config caused it."""
    lb = balancer(FakeClock())
    before = cfg.Declared(agents=(agent("a"), agent("b")), weights={"a": 2.0, "b": 3.0})
    await apply_declared(lb, before)
    after = cfg.Declared(agents=(agent("a", host="moved"), agent("c")), weights={"a": 5.0})
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        await apply_declared(lb, after, before)
    (applied,) = [e for e in logs if e["event"] == "reload_applied"]
    assert applied["agents_added"] == ["c"]
    assert applied["agents_removed"] == ["b"]
    assert applied["agents_changed"] == ["a"]
    assert applied["weights_changed"] == ["a"]
    assert applied["weights_reset"] == []
    (removed,) = [e for e in logs if e["event"] == "agent_deregistered"]
    assert (removed["agent_id"], removed["cause"]) == ("b", "config")
    registered = {e["agent_id"] for e in logs if e["event"] == "agent_registered"}
    assert registered == {"a", "c"}


async def test_a_reload_that_overrides_a_strategy_set_over_the_api_says_so() -> None:
    """A strategy changed over the API since the last apply is replaced with a warning."""
    lb = balancer(FakeClock())
    declared = cfg.Declared(agents=(agent("a"),), strategy=StrategyName.WEIGHTED)
    await apply_declared(lb, declared)
    await lb.set_strategy(StrategyName.ROUND_ROBIN)  # what SetStrategy does
    reloaded = cfg.Declared(agents=(agent("a"),), strategy=StrategyName.LATENCY_BASED)
    with capture_logs() as logs:
        await apply_declared(lb, reloaded, declared)
    (warning,) = [e for e in logs if e["event"] == "reload_replaces_strategy"]
    assert warning["replaced"] == "round-robin"
    assert warning["strategy"] == "latency-based"
    assert (await lb.statistics()).strategy is StrategyName.LATENCY_BASED


async def test_a_reload_that_keeps_the_files_strategy_does_not_warn() -> None:
    """When the running strategy is the one the file set, a reload changes it silently."""
    lb = balancer(FakeClock())
    declared = cfg.Declared(strategy=StrategyName.WEIGHTED)
    await apply_declared(lb, declared)
    with capture_logs() as logs:
        await apply_declared(lb, cfg.Declared(strategy=StrategyName.ROUND_ROBIN), declared)
    assert not [e for e in logs if e["event"] == "reload_replaces_strategy"]
    (applied,) = [e for e in logs if e["event"] == "reload_applied"]
    assert applied["strategy"] == "round-robin"


def test_options_only_a_restart_applies_are_named(tmp_path: Path) -> None:
    """A changed listen or limit is named; the strategy and flag-set options are not."""
    path = _file(tmp_path, "listen: 127.0.0.1:7000\nmax_agents: 10\nsession_ttl_s: 60\n")
    running = cfg.load({"session_ttl_s": 60.0}, environ={}, config_path=path)
    edited = cfg.read_file(
        _file(
            tmp_path,
            "listen: 127.0.0.1:7001\nmax_agents: 10\nsession_ttl_s: 5\nstrategy: weighted\n",
            "edited.yaml",
        )
    )
    assert restart_needed(running, edited) == ["listen"]
    # Dropping a key the file set means its default, which differs here.
    assert restart_needed(running, {"listen": "127.0.0.1:7000"}) == ["max_agents"]
    assert restart_needed(running, cfg.read_file(path)) == []


def test_the_warning_names_the_key_and_both_values(tmp_path: Path) -> None:
    """Each option a reload cannot apply is one warning with its key, running and file values."""
    running = cfg.load({}, environ={}, config_path=_file(tmp_path, "max_leases: 50\n"))
    with capture_logs() as logs:
        assert warn_restart_needed(running, {"max_leases": 80}) == ["max_leases"]
    assert logs == [
        {
            "event": "reload_needs_restart",
            "key": "max_leases",
            "running": 50,
            "file": 80,
            "log_level": "warning",
        }
    ]
