"""The strategy registry: one instance per StrategyName, keyed by its own name."""

from __future__ import annotations

import pytest

from lb_service.model import StrategyName
from lb_service.strategies import (
    STRATEGIES,
    CapabilityMatch,
    LatencyBased,
    LeastConnections,
    RoundRobin,
    Weighted,
)


def test_registry_has_exactly_the_five_strategy_names() -> None:
    """STRATEGIES is keyed by exactly the five StrategyName members, no more, no fewer."""
    assert len(STRATEGIES) == 5
    assert set(STRATEGIES) == set(StrategyName)


@pytest.mark.parametrize("name", list(StrategyName))
def test_each_instance_name_matches_its_key(name: StrategyName) -> None:
    """The strategy stored under a name reports that same name."""
    assert STRATEGIES[name].name is name


@pytest.mark.parametrize(
    ("value", "cls"),
    [
        ("round-robin", RoundRobin),
        ("least-connections", LeastConnections),
        ("weighted", Weighted),
        ("latency-based", LatencyBased),
        ("capability-match", CapabilityMatch),
    ],
)
def test_user_spelling_maps_to_its_rule(value: str, cls: type) -> None:
    """The name users write in flags and config selects the matching strategy class."""
    assert type(STRATEGIES[StrategyName(value)]) is cls


def test_registry_is_read_only() -> None:
    """The shared registry cannot be modified at runtime."""
    with pytest.raises(TypeError):
        STRATEGIES[StrategyName.WEIGHTED] = RoundRobin()  # type: ignore[index]  # assigning must raise: the point
